"""The demo sweep draws the same cells, pixel for pixel, as before the package was reshaped (issue 11).

demo_sweep_cells.json was recorded from experiments/specs/demo.yaml on the tiny preset before any module moved:
cell id -> sha256 of the cell's PNG file and of its Canny map's pixels.
"""

import json
from pathlib import Path

from conftest import REPO

import sdrag

RECORDED = json.loads(Path(__file__).with_name("demo_sweep_cells.json").read_text())


def test_demo_sweep_cells_and_pngs_are_unchanged(tmp_path):
    # Metrics off: they do not touch the images, and the recorded hashes are of images only.
    spec = sdrag.load_spec(REPO / "experiments" / "specs" / "demo.yaml", metrics=False)
    run = sdrag.run_sweep(spec, out_dir=tmp_path / "demo", progress=False, report=False)
    assert (run.table["status"] == "ok").all()
    assert dict(zip(run.table["cell_id"], run.table["image_sha256"])) == RECORDED["cells"]
    assert dict(zip(run.table["cell_id"], run.table["edges_sha256"])) == RECORDED["edges"]
