# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
# torch goes in first, alone but for uv (no dependencies): any other request lets pip pick a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= notebooks,dev,ray
BIN := $(VENV)/bin
STAMP := $(VENV)/.sdrag-installed

.PHONY: install demo test test-floors lint clean-tiny

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The rest goes in with uv, which keeps the torch already there and installs the same releases pip picks, in
# parallel (pip's way is the fallback where uv cannot reach an index). Bytecode is compiled at install, as pip
# does: where PYTHONDONTWRITEBYTECODE is set (CI), every import would otherwise compile its sources again.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install "$(TORCH_SPEC)" uv
	$(BIN)/uv pip install --python $(BIN)/python --compile-bytecode -e ".[$(EXTRAS)]" || \
		$(BIN)/python -m pip install -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

# The main job: the style-library notebook, then the sweep notebook on experiments/specs/demo.yaml, both
# headless through papermill. PRESET=sd15 switches to real weights (online once, or cached).
PRESET ?= tiny
RUN_NAME ?= $(if $(filter tiny,$(PRESET)),demo,demo-$(PRESET))
NB_OUT := experiments/notebooks

demo: $(STAMP)
	mkdir -p $(NB_OUT)
	$(BIN)/papermill --cwd . -k python3 --log-level WARNING notebooks/01_style_library.ipynb \
		$(NB_OUT)/01_style_library.ipynb -p preset $(PRESET) -p library_dir experiments/library-$(PRESET)
	$(BIN)/papermill --cwd . -k python3 --log-level WARNING notebooks/04_sweep.ipynb $(NB_OUT)/04_sweep.ipynb \
		-p preset $(PRESET) -p spec_path experiments/specs/demo.yaml -p run_name $(RUN_NAME)
	@$(BIN)/python -c "import pathlib; p = pathlib.Path('experiments/runs/$(RUN_NAME)/report.html'); \
		assert p.is_file(), p; print('report:', p.resolve())"

# The floor job: the oldest releases pyproject allows shadow the venv's (PYTHONPATH comes first) while the
# loading, hub and setup tests run again, so every floor stays a version that works. tokenizers is not ours to
# pin: 0.22.1 is the oldest that installs beside huggingface_hub 1.27. Nor is kernels: transformers 5.0 imports
# it where it is installed and builds its kernel table in a way kernels 0.17 and later refuse (newer transformers
# need 0.19); 0.13.0 is the newest that loads with transformers 5.0 and no other new dependency. Of the local-hub
# tests it runs the two that go through diffusers' and huggingface_hub's own download and loading paths (a first
# run with its offline and fp16 reruns, fp16 variants); the others check sdrag's own handling of file lists,
# failures and proxies, which the main job covers, and the suite has to fit its 12 minutes.
FLOORS ?= diffusers==0.40.0 transformers==5.0.0 huggingface_hub==1.27.0 accelerate==1.2.0 tokenizers==0.22.1 kernels==0.13.0
FLOOR_DIR := $(VENV)/floors
SD15_HUB := tests/models/test_sd15_hub.py
FLOOR_TESTS := tests/test_setup.py tests/models/test_plan.py tests/models/test_presets.py tests/models/test_tiny.py \
	$(SD15_HUB)::test_first_run_downloads_what_it_loads_with_progress_then_runs_offline_unchanged \
	$(SD15_HUB)::test_fp16_downloads_the_fp16_variants_and_falls_back_where_a_repo_has_none

$(FLOOR_DIR)/.installed: $(STAMP) Makefile
	rm -rf $(FLOOR_DIR)
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps --compile-bytecode --target $(FLOOR_DIR) $(FLOORS) || \
		$(BIN)/python -m pip install -q --no-deps --target $(FLOOR_DIR) $(FLOORS)
	touch $@

# Two lanes on the two cores (pytest-xdist; whole files per lane, so a module's fixtures load once), torch on one
# thread in every process: two processes each running torch's default two threads on two cores thrash.
# The floor job runs in one lane: its time is two hub tests of one file.
TEST_LANES ?= 2
PYTEST := OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q
FLOOR_JOB := SDRAG_FLOORS="$(FLOORS)" PYTHONPATH=$(FLOOR_DIR) $(PYTEST) -p no:cacheprovider $(FLOOR_TESTS)
# Most tests start fresh interpreters, which import sdrag and the tests from source each time where
# PYTHONDONTWRITEBYTECODE is set (CI): the test jobs let Python keep their bytecode (in the ignored __pycache__/).
test test-floors: export PYTHONDONTWRITEBYTECODE :=

test: $(STAMP) $(FLOOR_DIR)/.installed
	$(PYTEST) -n $(TEST_LANES) --dist loadfile
	$(FLOOR_JOB)

test-floors: $(FLOOR_DIR)/.installed
	$(FLOOR_JOB)

# ruff (style, complexity) and import-linter (the layer order and no cycles: pyproject's [tool.importlinter]).
lint: $(STAMP)
	$(BIN)/python -m ruff check .
	$(BIN)/lint-imports
