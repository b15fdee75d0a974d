"""The run folder: the one place that knows how a sweep's lasting output is laid out, written and read.

    <run>/manifest.json     what ran: spec, preset, sketch hash, versions, device, weights, library (+ history)
    <run>/sketch.png        the sketch every cell was drawn from
    <run>/rows/<id>.json    one finished cell each (<id>.failed.json for a failure, never replacing an ok row)
    <run>/cells/<id>.png    one image per finished cell
    <run>/results.csv       every row in spec order (rebuilt from rows/ after each batch)
    <run>/report.html, grid_*.png   written by sdrag.reports

Every file is written atomically, so a killed sweep leaves whole files only and a rerun resumes from rows/.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..files import atomic_save_image, atomic_write_bytes, atomic_write_json, canonical, pixels_sha256
from ..generation.params import Params
from ..images import load_image
from .metrics import METRICS
from .spec import SweepError

if TYPE_CHECKING:
    import pandas as pd
    from PIL import Image

    from ..generation.params import ResolvedParams
    from .spec import SweepSpec

OK, FAILED = "ok", "failed"
ROW_COLUMNS = ["cell", "cell_id", "status", "error", *Params.names(), "references", "retrieved", *METRICS,
               "seconds", "peak_mem_mb", "memory", "batch", "batch_seeds", "image", "image_sha256", "edges_sha256",
               "resolved"]


def cell_id(p: ResolvedParams, context: dict) -> str:
    """Content hash of a cell's resolved parameters and what they act on (preset, sketch)."""
    blob = canonical({"params": p.to_dict(), **context})
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def new_row(index: int, cid: str, label: dict, resolved: ResolvedParams, batch: int) -> dict:
    """A results row with the cell's identity and parameters filled in, everything else empty."""
    row: dict[str, Any] = {c: None for c in ROW_COLUMNS}
    # Parameter columns show values as the spec wrote them ('style', not its expanded block map); the
    # resolved parameters, which reproduce the cell, go in one JSON column.
    for name, value in label.items():
        row[name] = value if isinstance(value, (int, float, str)) or value is None else json.dumps(value)
    row.update(cell=index, cell_id=cid, batch=batch, resolved=json.dumps(resolved.to_dict()))
    return row


def references_text(refs: list[tuple[str, float]]) -> str:
    """The style references of a cell as its row stores them: JSON [[id, weight], ...] at full precision."""
    return json.dumps([[sid, weight] for sid, weight in refs])


def parse_references(text: str) -> list[tuple[str, float]]:
    """A row's style references; rows written before JSON hold 'id:weight;id:weight'."""
    if text.startswith("["):
        return [(str(sid), float(weight)) for sid, weight in json.loads(text)]
    return [(part.rsplit(":", 1)[0], float(part.rsplit(":", 1)[1])) for part in text.split(";")]


class RunFolder:
    """One sweep's folder on disk: the checks before writing into it, and every read and write of its files."""

    def __init__(self, path: str | Path):
        """Name the folder (nothing is read or written yet)."""
        self.path = Path(path)
        self.manifest_path = self.path / "manifest.json"
        self.table_path = self.path / "results.csv"
        self.sketch_path = self.path / "sketch.png"
        self.report_path = self.path / "report.html"

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # -- writing a sweep ---------------------------------------------------------------------------------

    def prepare(self, sweep: SweepSpec, sketch: Image.Image) -> str:
        """Make the folder ready to run `sweep` on `sketch` (refusing another sweep's folder); return the
        sketch's pixel hash, which cell ids include."""
        sketch_sha = pixels_sha256(sketch)
        self._check_belongs(sweep, sketch_sha)
        for folder in (self.path, self.path / "cells", self.path / "rows"):
            folder.mkdir(parents=True, exist_ok=True)
            for stale in folder.glob(".*.tmp"):
                stale.unlink()  # a temp file left by a killed writer; the file it was for was never renamed in
        if not self.sketch_path.is_file():
            # The run folder keeps its own copy of the sketch, so a cell can be reproduced from the folder alone.
            atomic_save_image(sketch, self.sketch_path)
        return sketch_sha

    def _check_belongs(self, sweep: SweepSpec, sketch_sha: str) -> None:
        """Refuse to resume into a folder that holds another preset's or another sketch's sweep."""
        if not self.manifest_path.is_file():
            return
        old = self.read_manifest()
        if old.get("preset") != sweep.preset or old.get("sketch_sha256") != sketch_sha:
            raise SweepError(
                f"{self.path} holds a sweep with preset {old.get('preset')!r} on another sketch or preset; resuming"
                " into it would mix runs. Fix: pass another out_dir."
            )

    def write_manifest(self, manifest: dict) -> dict:
        """Write manifest.json for this invocation; earlier invocations stay in its `history`."""
        history = self.read_manifest().get("history", []) if self.manifest_path.is_file() else []
        # A resume may run a longer spec, or newer packages: each invocation's spec, versions and device are kept.
        history.append({"started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                        **{k: manifest[k] for k in ("spec", "versions", "device", "models")}})
        manifest = {**manifest, "history": history}
        atomic_write_json(self.manifest_path, manifest)
        return manifest

    def write_cell(self, cid: str, png: bytes) -> str:
        """Store one cell's image; return its path relative to the folder (what the row records)."""
        path = atomic_write_bytes(self.path / "cells" / f"{cid}.png", png)
        return str(path.relative_to(self.path))

    def write_row(self, row: dict) -> None:
        """Store one cell's row; a failed row lives beside an ok one and never replaces it."""
        suffix = ".json" if row["status"] == OK else ".failed.json"
        atomic_write_json(self.path / "rows" / f"{row['cell_id']}{suffix}", row)

    def rows(self) -> dict[str, dict]:
        """Every stored row by cell id (an ok row wins over a failed one of the same cell)."""
        rows: dict[str, dict] = {}
        for path in sorted((self.path / "rows").glob("*.json")):
            try:
                row = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # only a partial temp file could be unreadable, and those are never renamed into place
            if row.get("status") == OK or row["cell_id"] not in rows:
                rows[row["cell_id"]] = row
        return rows

    def write_table(self, ids: list[str], rows: dict[str, dict]) -> pd.DataFrame:
        """Write results.csv: the rows of `ids` that exist, in that order; return it as a DataFrame."""
        import pandas as pd

        table = pd.DataFrame([rows[cid] for cid in ids if cid in rows], columns=ROW_COLUMNS)
        atomic_write_bytes(self.table_path, table.to_csv(index=False).encode())
        return table

    # -- reading a finished sweep --------------------------------------------------------------------------

    def read_manifest(self) -> dict:
        """manifest.json, or a SweepError if it cannot be read."""
        try:
            return json.loads(self.manifest_path.read_text())
        except (OSError, ValueError) as exc:
            raise SweepError(f"{self.manifest_path} cannot be read ({exc}); {self.path} is not a run folder sdrag"
                             " can use. Fix: pass a folder run_sweep wrote, or another out_dir.") from None

    def read_table(self) -> pd.DataFrame:
        """results.csv as a DataFrame (empty cells as NaN, everything else as written)."""
        import pandas as pd

        try:
            return pd.read_csv(self.table_path, keep_default_na=False, na_values=[""])
        except (OSError, ValueError) as exc:
            raise SweepError(f"{self.path} is not a sweep folder ({exc}). Fix: pass a folder run_sweep wrote."
                             ) from None

    def cell_file(self, image: str) -> Path:
        """The file a row's `image` column names: it must lie in this folder's cells/ (rows can be edited)."""
        cells = (self.path / "cells").resolve()
        path = (self.path / str(image)).resolve()
        if not path.is_relative_to(cells):
            raise SweepError(f"A row of {self.table_path} names the image {str(image)[:200]!r}, outside {cells}. Fix:"
                             " restore results.csv and rows/ from the sweep, or run it again into a new folder.")
        return path

    def sketch(self, manifest: dict) -> Image.Image:
        """The run's sketch copy, checked against the hash its manifest records."""
        sketch = load_image(self.sketch_path)
        if pixels_sha256(sketch) != manifest["sketch_sha256"]:
            raise SweepError(f"{self.sketch_path} is not the sketch this run used. Fix: restore it from the"
                             " run's backup; the manifest records its sha256.")
        return sketch

    def open(self) -> SweepRun:
        """The finished (or partial) sweep in this folder."""
        table = self.read_table()
        manifest = self.read_manifest()
        report = self.report_path if self.report_path.is_file() else None
        return SweepRun(out_dir=self.path, table=table, manifest=manifest, report_path=report)


@dataclass
class SweepRun:
    """A finished (or resumed) sweep: its folder, table and report."""

    out_dir: Path
    table: pd.DataFrame
    manifest: dict
    report_path: Path | None = None
    cache_stats: dict = field(default_factory=dict)

    @property
    def folder(self) -> RunFolder:
        """The run folder, for reading its files."""
        return RunFolder(self.out_dir)

    @property
    def ok(self) -> pd.DataFrame:
        """The rows of cells that finished."""
        return self.table[self.table["status"] == OK]

    @property
    def failed(self) -> pd.DataFrame:
        """The rows of cells that failed."""
        return self.table[self.table["status"] != OK]

    def summary(self) -> pd.DataFrame:
        """Metric mean and std over seeds for each parameter combination (successful cells only)."""
        from .metrics import aggregate

        by = [c for c in varying_params(self.table) if c != "seed"]
        return aggregate(self.ok.fillna({c: "" for c in by}), by or ["prompt"])


def load_run(out_dir: str | Path) -> SweepRun:
    """Open a sweep folder (results.csv + manifest.json) as a SweepRun."""
    return RunFolder(out_dir).open()


def varying_params(table: pd.DataFrame) -> list[str]:
    """The parameter columns that take more than one value in a results table."""
    return [n for n in Params.names() if n in table and table[n].astype(str).nunique() > 1]
