"""Every notebook runs headless under papermill on the tiny preset, without waiting on any widget."""

import json
import subprocess
import sys

import nbformat
import papermill as pm
import pytest
from conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def _outputs(nb) -> str:
    texts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            texts.append(out.get("text", "") or json.dumps(out.get("data", {}))[:2000])
    return "\n".join(texts)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, wb):
    from sdrag.sweeps.engine import run_sweep

    out = tmp_path_factory.mktemp("runs") / "base"
    spec = {"base": {"prompt": "a neon city", "steps": 2, "size": 64}, "axes": {"controlnet_scale": [0.5, 1.5]}}
    return run_sweep(spec, out_dir=out, workbench=wb, progress=False, report=False).out_dir


def test_notebooks_are_ordered_thin_and_light():
    names = [p.stem for p in NOTEBOOKS]
    assert names == ["00_setup", "01_style_library", "02_canny_explorer", "03_rag_studio", "04_sweep",
                     "05_compare_runs"]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, path.name
        assert nb.metadata["kernelspec"]["name"] == "python3"
        for cell in nb.cells:
            if cell.cell_type == "code" and cell.get("outputs"):
                # Only nbval's checked cells keep an output, and only short text.
                assert "# NBVAL_CHECK_OUTPUT" in cell.source, f"{path.name} has outputs"
                assert all(o.output_type == "stream" and len(o.text) < 200 for o in cell.outputs), path.name
        code = [c.source for c in nb.cells if c.cell_type == "code"]
        assert max(len(src.splitlines()) for src in code) <= 15, f"{path.name}: logic belongs in the package"


def _params(name, tmp_path, small_run):
    lib = str(tmp_path / "lib")
    return {
        "00_setup": {},
        "01_style_library": {"library_dir": lib},
        "02_canny_explorer": {"size": 128},
        "03_rag_studio": {"library_dir": lib, "size": 64, "steps": 2},
        "04_sweep": {"runs_dir": str(tmp_path / "runs"), "run_name": "nb", "steps": 2, "size": 64,
                     "axes": {"controlnet_scale": [0.5, 1.5], "seed": [0, 1]}},
        "05_compare_runs": {"runs": [str(small_run), str(small_run)], "out": str(tmp_path / "cmp.html")},
    }[name]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_headless(path, tmp_path, small_run, monkeypatch):
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel uses Jupyter's inline backend, as users get
    out = tmp_path / path.name
    nb = pm.execute_notebook(str(path), str(out), parameters=_params(path.stem, tmp_path, small_run),
                             cwd=str(REPO), kernel_name="python3", progress_bar=False)
    text = _outputs(nb)
    expected = {
        "00_setup": "not on Colab", "01_style_library": "added", "02_canny_explorer": "image/png",
        "03_rag_studio": "Result(1 image(s) 64x64", "04_sweep": "report:", "05_compare_runs": "comparison:",
    }[path.stem]
    assert expected in text, text[-2000:]
    if path.stem == "04_sweep":
        assert (tmp_path / "runs" / "nb" / "report.html").is_file()
        # It says how many grid pages it leaves to the report, and ends with the run explorer.
        assert "grid pages; all are in" in text and "application/vnd.jupyter.widget-view+json" in text
        assert "cells_per_s" in text  # who made the cells, and how fast
    if path.stem == "05_compare_runs":
        assert "identical: no metric changed" in text  # a run compared with itself
    if path.stem == "00_setup":
        # Offline here: sd15's whole missing-file list and the way out, not a cut first line; sd15-random is
        # not called ready before its build.
        for needle in ("sd15: NOT READY", "unet/diffusion_pytorch_model.safetensors", "openai/clip-vit-base-patch32@",
                       "go online", "tiny: ready", "sd15-random: NOT READY", "not built yet"):
            assert needle in text, needle


def test_compare_notebook_makes_the_missing_run_with_its_change_and_shows_deltas(tmp_path, small_run):
    spec = tmp_path / "spec.yaml"  # JSON is YAML
    spec.write_text(json.dumps(json.loads((small_run / "manifest.json").read_text())["spec"]))
    made = tmp_path / "guidance-3"
    nb = pm.execute_notebook(str(REPO / "notebooks/05_compare_runs.ipynb"), str(tmp_path / "05.ipynb"), parameters={
        "runs": [str(small_run), str(made)], "out": str(tmp_path / "cmp.html"), "spec_path": str(spec),
        "changes": {"guidance": 3.0}}, cwd=str(REPO), kernel_name="python3", progress_bar=False)
    text = _outputs(nb)
    assert "made" in text and "comparison:" in text and "identical" not in text
    assert "delta[1-0]" in text
    assert json.loads((made / "manifest.json").read_text())["spec"]["base"]["guidance"] == 3.0


def test_papermill_cli_runs_the_sweep_notebook_with_overrides(tmp_path):
    out = tmp_path / "04.ipynb"
    cmd = [sys.executable, "-m", "papermill", "--cwd", str(REPO), "-k", "python3",
           str(REPO / "notebooks/04_sweep.ipynb"), str(out), "-p", "preset", "tiny", "-p", "run_name", "cli",
           "-p", "runs_dir", str(tmp_path / "runs"), "-p", "steps", "2", "-p", "size", "64",
           "-y", '{"axes": {"guidance": [3.0, 7.5]}}']
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    table = (tmp_path / "runs" / "cli" / "results.csv").read_text().splitlines()
    assert len(table) == 3  # header + 2 cells from the inline axes


NBVAL = ["notebooks/00_setup.ipynb", "notebooks/02_canny_explorer.ipynb"]


def _nbval(*paths: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax", *paths]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_nbval_lax_runs_notebooks_and_checks_their_key_outputs(tmp_path):
    done = _nbval(*NBVAL)
    assert done.returncode == 0, done.stdout[-3000:]
    cells = sum(c.cell_type == "code" for p in NBVAL for c in nbformat.read(REPO / p, as_version=4).cells)
    assert f"{cells} passed" in done.stdout  # nbval runs each code cell as one test
    # The checked output bites: the same notebook with another stored output fails.
    nb = nbformat.read(REPO / NBVAL[0], as_version=4)
    checked = next(c for c in nb.cells if "# NBVAL_CHECK_OUTPUT" in c.source)
    checked.outputs[0].text = "on Colab\n"
    changed = tmp_path / "00_setup.ipynb"
    nbformat.write(nb, changed)
    failed = _nbval(str(changed))
    assert failed.returncode == 1 and "on Colab" in failed.stdout
