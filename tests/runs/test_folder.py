"""The run folder on its own: rows, table, manifest history, the checks before writing, what rows may name."""

import json

import pytest
from PIL import Image

from sdrag import Params
from sdrag.runs.folder import OK, ROW_COLUMNS, RunFolder, cell_id, new_row, parse_references, references_text
from sdrag.runs.spec import SweepError, load_spec

SPEC = load_spec({"name": "t", "base": {"prompt": "x", "steps": 2, "size": 64}, "axes": {"seed": [0, 1]}})


def _row(folder: RunFolder, index: int, status: str) -> dict:
    """A row as the sweep writes it (an ok one with its image in cells/)."""
    import hashlib

    from sdrag.files import image_bytes

    p = Params(prompt="x", seed=index).resolved()
    row = new_row(index, cell_id(p, {"preset": "tiny", "sketch": "s"}), {"seed": index, "canny": [50, 150]}, p, 0)
    row.update(status=status)
    if status == OK:
        png = image_bytes(Image.new("RGB", (8, 8), (index, 0, 0)))
        row.update(image=folder.write_cell(row["cell_id"], png), image_sha256=hashlib.sha256(png).hexdigest(),
                   edges_sha256="0" * 64, batch_seeds=json.dumps([index]), references=references_text([]),
                   memory=json.dumps({"attention_slicing": False}))
    folder.write_row(row)
    return row


def test_rows_table_and_manifest_round_trip(tmp_path):
    folder = RunFolder(tmp_path / "run")
    sketch_sha = folder.prepare(SPEC, Image.new("RGB", (8, 8), "white"))
    ok, failed = _row(folder, 0, OK), _row(folder, 1, "failed")
    again = _row(folder, 1, OK)  # the retry succeeds: its ok row wins over the failed one beside it
    assert (folder.path / "rows" / f"{failed['cell_id']}.failed.json").is_file()
    rows = folder.rows()
    assert rows[again["cell_id"]]["status"] == OK and set(rows) == {ok["cell_id"], again["cell_id"]}
    table = folder.write_table([again["cell_id"], "missing", ok["cell_id"]], rows)
    assert list(table.columns) == ROW_COLUMNS and list(table["cell"]) == [1, 0]  # in the order asked
    assert rows[ok["cell_id"]]["canny"] == "[50, 150]"  # non-scalar labels are stored as JSON text
    manifest = {"name": "t", "preset": "tiny", "sketch_sha256": sketch_sha, "spec": SPEC.to_dict(),
                "versions": {}, "device": {}, "models": {}, "weights": {}, "library": {"styles": []}}
    folder.write_manifest(manifest)
    second = folder.write_manifest(manifest)
    assert len(second["history"]) == 2 and folder.read_manifest() == second
    run = folder.open()
    assert len(run.ok) == 2 and run.failed.empty and run.folder.path == folder.path


def test_a_folder_of_another_sweep_or_sketch_is_refused(tmp_path):
    folder = RunFolder(tmp_path / "run")
    sketch_sha = folder.prepare(SPEC, Image.new("RGB", (8, 8), "white"))
    folder.write_manifest({"name": "t", "preset": "tiny", "sketch_sha256": sketch_sha, "spec": {}, "versions": {},
                           "device": {}, "models": {}, "weights": {}, "library": {"styles": []}})
    with pytest.raises(SweepError, match="would mix runs"):
        folder.prepare(SPEC, Image.new("RGB", (8, 8), "black"))
    folder.manifest_path.write_text("{not json")
    with pytest.raises(SweepError, match="cannot be read"):
        folder.prepare(SPEC, Image.new("RGB", (8, 8), "white"))


@pytest.mark.parametrize("image", ["../manifest.json", "/etc/passwd", "cells/../../x.png", "rows/a.json"])
def test_a_row_cannot_name_an_image_outside_cells(tmp_path, image):
    folder = RunFolder(tmp_path / "run")
    assert folder.cell_file("cells/abc.png") == (tmp_path / "run" / "cells" / "abc.png").resolve()
    with pytest.raises(SweepError, match="outside"):
        folder.cell_file(image)


def test_references_are_json_and_old_rows_still_read():
    a, b = "0123456789abcdef", "fedcba9876543210"
    refs = [(a, 0.1 + 0.2), (b, 2 / 3)]
    text = references_text(refs)
    assert json.loads(text) == [[a, 0.1 + 0.2], [b, 2 / 3]] and parse_references(text) == refs
    assert parse_references(f"{a}:0.30000000000000004;{b}:0.6666666666666666") == refs
    with pytest.raises(ValueError):
        parse_references('[["../x", 1.0]]')
