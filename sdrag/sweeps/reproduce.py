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
from ..runs.folder import RunFolder, parse_references
from ..runs.spec import SweepError


def reproduce(run_dir: str | Path, cell: str, workbench: Workbench | None = None) -> tuple[Any, bool]:
    """Regenerate one cell from its run folder alone (manifest, results row, sketch copy).

    The cell's whole batch is rerun with its recorded style references, so on CPU the image is bit-exact.
    Returns (image, whether its sha256 equals the recorded one).
    """
    from PIL import Image

    folder = RunFolder(run_dir)
    manifest = folder.read_manifest()
    row = folder.finished_row(str(cell))
    if row is None:
        raise SweepError(f"No finished cell {str(cell)[:40]!r} in {folder.path}. Fix: pick a cell_id from"
                         " results.csv.")
    resolved = json.loads(row["resolved"])
    seeds = json.loads(row["batch_seeds"])
    refs = parse_references(row["references"])
    params = Params.from_dict(resolved).update(style=refs, seed=seeds).resolved()
    sketch = folder.sketch(manifest)
    # Created lazily: with the run's own style copies, the library is never opened (nor created) at all.
    wb = workbench or Workbench.from_preset(manifest["preset"], library_dir=manifest["library"]["path"])
    library = workbench.library_dir if workbench is not None else manifest["library"]["path"]
    references = _references(folder, refs, wb, library)
    _check_weights(manifest["weights"], wb.weight_hashes())
    # Memory savers change the arithmetic: rerun with those the cell ran with (they only ever switch on).
    memory = json.loads(row["memory"])
    wb.use_memory(MemoryOptions(**{k: bool(memory.get(k)) for k in MemoryOptions.__dataclass_fields__}))
    res = wb.run(sketch, params=params, references=references)
    if pixels_sha256(res.edges) != row["edges_sha256"]:
        raise SweepError(f"The Canny map of cell {cell} differs from the recorded one (another OpenCV build?);"
                         " the image cannot match. Fix: reproduce with the package versions in manifest.json.")
    data = image_bytes(res.images[seeds.index(resolved["seed"])])
    same = hashlib.sha256(data).hexdigest() == row["image_sha256"]
    return Image.open(io.BytesIO(data)), same


def _references(folder: RunFolder, refs: list[tuple[str, float]], wb: Workbench, library: str | Path) -> list:
    """The cell's style references as (Style, weight): the run folder's copies, else (folders made before copies
    were kept) the workbench's library, if one exists there (it is never created here)."""
    from ..retrieval.entries import Style

    out = []
    for sid, weight in refs:
        copy = folder.style_file(sid)
        if copy is not None:
            out.append((Style(id=sid, name=sid, path=str(copy), sha256=_sha256(copy)), weight))
            continue
        from ..retrieval.store import server_url

        if not server_url(library) and not (Path(library) / "chroma.sqlite3").is_file():
            raise SweepError(f"The style image {sid} of this cell is neither in {folder.path / 'styles'} nor in a"
                             f" library at {library}. Fix: reproduce from the run folder as the sweep left it, or"
                             " pass a workbench whose library holds that style.")
        out.append((wb.library.get(sid), weight))
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_weights(recorded: dict, current: dict) -> None:
    """Refuse to reproduce on other weights than the run used (compared by content, not by path)."""
    changed = [part for part in recorded
               if sorted(f["sha256"] for f in recorded[part]) != sorted(f["sha256"] for f in current.get(part, []))]
    if changed:
        raise SweepError(f"The weights of {', '.join(changed)} differ from those this run used (sha256 in"
                         " manifest.json). Fix: load the same weights, e.g. Workbench.from_preset(..., base=<folder>).")
