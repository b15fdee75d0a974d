"""The package's shape: layers that follow the data flow, no cycles, small modules, a light `import sdrag`."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import sdrag

PACKAGE = Path(sdrag.__file__).parent
HEAVY = ("torch", "diffusers", "transformers", "chromadb", "pandas", "cv2", "matplotlib", "ipywidgets")


def test_import_contracts_hold():
    """The layer order and the no-cycle rule of pyproject's [tool.importlinter] (what `make lint` runs)."""
    out = subprocess.run([Path(sys.executable).with_name("lint-imports"), "--no-cache"], capture_output=True,
                         text=True, cwd=PACKAGE.parent)
    assert out.returncode == 0, out.stdout[-3000:]
    assert "2 kept, 0 broken" in out.stdout


def test_an_upward_import_breaks_the_layer_contract(tmp_path):
    """The contract is not vacuous: a copy of the package with one import against the flow fails it."""
    import shutil

    copy = tmp_path / "sdrag"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("assets", "__pycache__"))
    with (copy / "runs" / "spec.py").open("a") as fh:
        fh.write("\n\ndef _upward():\n    from ..reports import html  # noqa: F401\n")
    shutil.copy(PACKAGE.parent / "pyproject.toml", tmp_path)
    out = subprocess.run([Path(sys.executable).with_name("lint-imports"), "--no-cache"], capture_output=True,
                         text=True, cwd=tmp_path, env={"PYTHONPATH": str(tmp_path), "PATH": ""})
    assert out.returncode == 1 and "sdrag.runs.spec -> sdrag.reports.html" in out.stdout


def test_import_sdrag_loads_no_heavy_library():
    code = f"import sys, json, sdrag; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_every_public_name_resolves_and_old_import_paths_still_work():
    for name in sdrag.__all__:
        assert getattr(sdrag, name) is not None, name
    with pytest.raises(AttributeError):
        _ = sdrag.no_such_name
    from sdrag import report, sweep, ui
    from sdrag.app import studio
    from sdrag.reports.compare import compare_runs
    from sdrag.sweeps.engine import run_sweep

    assert ui.RagStudio is studio.RagStudio and report.compare_runs is compare_runs
    assert sweep.run_sweep is run_sweep is sdrag.run_sweep and sweep.load_spec is sdrag.load_spec


def test_no_module_outgrows_a_screenful_of_screens():
    sizes = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {name: n for name, n in sizes.items() if n > 400} == {}
