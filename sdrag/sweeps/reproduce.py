"""Reproducing one cell of a sweep from its run folder alone, and checking it matches what was recorded."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

from ..files import image_bytes, pixels_sha256
from ..generation.memory import MemoryOptions
from ..generation.params import Params
from ..generation.workbench import Workbench
from ..runs.folder import OK, RunFolder, parse_references
from ..runs.spec import SweepError


def reproduce(run_dir: str | Path, cell: str, workbench: Workbench | None = None) -> tuple[Any, bool]:
    """Regenerate one cell from its run folder alone (manifest, results row, sketch copy).

    The cell's whole batch is rerun with its recorded style references, so on CPU the image is bit-exact.
    Returns (image, whether its sha256 equals the recorded one).
    """
    from PIL import Image

    folder = RunFolder(run_dir)
    run = folder.open()
    match = run.table[(run.table["cell_id"] == cell) & (run.table["status"] == OK)]
    if match.empty:
        raise SweepError(f"No finished cell {cell!r} in {folder.path}. Fix: pick a cell_id from results.csv.")
    row = match.iloc[0]
    resolved = json.loads(row["resolved"])
    seeds = json.loads(row["batch_seeds"])
    params = Params.from_dict(resolved).update(style=parse_references(str(row["references"])), seed=seeds).resolved()
    sketch = folder.sketch(run.manifest)
    wb = workbench or Workbench.from_preset(run.manifest["preset"], library_dir=run.manifest["library"]["path"])
    _check_weights(run.manifest["weights"], wb.weight_hashes())
    # Memory savers change the arithmetic: rerun with those the cell ran with (they only ever switch on).
    memory = json.loads(row["memory"])
    wb.use_memory(MemoryOptions(**{k: memory[k] for k in MemoryOptions.__dataclass_fields__}))
    res = wb.run(sketch, params=params)
    if pixels_sha256(res.edges) != row["edges_sha256"]:
        raise SweepError(f"The Canny map of cell {cell} differs from the recorded one (another OpenCV build?);"
                         " the image cannot match. Fix: reproduce with the package versions in manifest.json.")
    data = image_bytes(res.images[seeds.index(resolved["seed"])])
    same = hashlib.sha256(data).hexdigest() == row["image_sha256"]
    return Image.open(io.BytesIO(data)), same


def _check_weights(recorded: dict, current: dict) -> None:
    """Refuse to reproduce on other weights than the run used (compared by content, not by path)."""
    changed = [part for part in recorded
               if sorted(f["sha256"] for f in recorded[part]) != sorted(f["sha256"] for f in current.get(part, []))]
    if changed:
        raise SweepError(f"The weights of {', '.join(changed)} differ from those this run used (sha256 in"
                         " manifest.json). Fix: load the same weights, e.g. Workbench.from_preset(..., base=<folder>).")
