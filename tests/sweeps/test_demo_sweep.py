"""The demo sweep draws the same cells as recorded, and every one of its axes earns its cells.

demo_sweep_cells.json holds, for experiments/specs/demo.yaml on the tiny preset with the bundled sketch: cell id ->
the mean colour of each of the picture's 8x8 tiles, and the sha256 of its Canny map's pixels (integer arithmetic:
exact on any machine). A picture's bytes are not pinned: they depend on the CPU's float kernels (AVX2 and AVX-512
machines, or another thread count, differ in the last bits), while its tiles move by under 0.01 of a grey level
there and by far more when a knob is mis-wired. It was recorded by running this test with SDRAG_RECORD_DEMO=1
(which writes the file from the run it makes, then compares as usual); re-record only when the spec or the sketch
changes on purpose, never to make a changed pipeline pass.
"""

import itertools
import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, fingerprint
from PIL import Image

import sdrag
from sdrag.files import pixels_sha256

SPEC = REPO / "experiments" / "specs" / "demo.yaml"
CELLS = Path(__file__).with_name("demo_sweep_cells.json")
TILES = 8
# Grey levels a tile's mean may move by: 25 times what another CPU or thread count moves it.
TOLERANCE = 0.25


def _tiles(run) -> dict[str, list[float]]:
    return {r.cell_id: fingerprint(Image.open(run.out_dir / r.image), TILES).round(3).tolist()
            for r in run.table.itertuples()}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    # Metrics off: they do not touch the images, and the recorded hashes are of images only.
    spec = sdrag.load_spec(SPEC, metrics=False)
    run = sdrag.run_sweep(spec, out_dir=tmp_path_factory.mktemp("demo") / "demo", progress=False, report=False)
    if os.environ.get("SDRAG_RECORD_DEMO") == "1":
        cells = _tiles(run)
        edges = dict(zip(run.table["cell_id"], run.table["edges_sha256"]))
        lines = {part: ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in values.items())
                 for part, values in (("cells", cells), ("edges", edges))}
        CELLS.write_text("{\n" + ",\n".join(f' "{part}": {{\n{text}\n }}' for part, text in lines.items()) + "\n}\n")
    return spec, run


def test_demo_sweep_cells_and_pngs_are_unchanged(demo_run):
    _, run = demo_run
    recorded = json.loads(CELLS.read_text())
    assert (run.table["status"] == "ok").all()
    assert dict(zip(run.table["cell_id"], run.table["edges_sha256"])) == recorded["edges"]
    tiles = _tiles(run)
    assert tiles.keys() == recorded["cells"].keys()
    for cell, pinned in recorded["cells"].items():
        np.testing.assert_allclose(tiles[cell], pinned, atol=TOLERANCE, err_msg=cell)


def _pairs_along(table, axis: str, axes: list[str]) -> list:
    """Every two cells that differ in `axis` only (all of them: checked against the grid's shape)."""
    key = table[axes].map(str)  # hashable, and the same text for [50, 150] as a list or as read back
    others = [a for a in axes if a != axis]
    groups = table.assign(**{a: key[a] for a in axes}).groupby(others)
    pairs = [pair for _, group in groups for pair in itertools.combinations(group.itertuples(), 2)]
    n = key[axis].nunique()
    assert n > 1 and len(pairs) == len(table) // n * n * (n - 1) // 2, (axis, len(pairs))
    return pairs


def test_every_demo_axis_changes_what_it_should(demo_run):
    """Canny pairs give clearly different edge maps; every other axis gives a different picture, the rest fixed."""
    spec, run = demo_run
    table, axes = run.table, list(spec.axes)
    assert len(table) <= 36 and set(axes) == {"canny", "controlnet_scale", "ip_adapter_scale", "seed"}
    size = spec.base["size"]
    edges = {str(list(c)): np.asarray(sdrag.canny_edges(sdrag.SAMPLE_SKETCH, *c, size=size))
             for c in spec.axes["canny"]}
    for a, b in _pairs_along(table, "canny", axes):
        assert a.edges_sha256 == pixels_sha256(Image.fromarray(edges[a.canny])) != b.edges_sha256
        more, fewer = sorted(((edges[c][..., 0] > 0).sum() for c in (a.canny, b.canny)), reverse=True)
        assert more > 1.12 * fewer, (a.canny, b.canny, more, fewer)
    images = {r.cell_id: np.asarray(Image.open(run.out_dir / r.image), float) for r in table.itertuples()}
    for axis in ("controlnet_scale", "ip_adapter_scale", "seed"):
        for a, b in _pairs_along(table, axis, axes):
            change = np.abs(images[a.cell_id] - images[b.cell_id]).mean()
            assert change > 1.0, (axis, getattr(a, axis), getattr(b, axis), change)
