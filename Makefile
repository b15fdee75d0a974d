# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
# torch goes in first and alone: any other request lets pip pick a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= notebooks,dev
BIN := $(VENV)/bin
STAMP := $(VENV)/.sdrag-installed

.PHONY: install demo test lint clean-tiny

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	HF_HUB_DISABLE_TELEMETRY=1 $(BIN)/python -m sdrag.demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/python -m ruff check sdrag tests scripts benchmarks
