"""The run folder: the one place that knows how a sweep's lasting output is laid out, written and read.

    <run>/manifest.json     what ran: spec, preset, sketch hash, versions, device, weights, library (+ history)
    <run>/sketch.png        the sketch every cell was drawn from
    <run>/styles/<id>.*     a copy of every style image a cell used (so the folder alone reproduces it), and
    <run>/styles/<id>.json  its name, caption and tags as the library had them
    <run>/thumbs/           small JPEGs of cells and styles for the explorer, named by content (runs/thumbs.py)
    <run>/rows/<id>.json    one finished cell each (<id>.failed.json for a failure, never replacing an ok row)
    <run>/cells/<id>.png    one image per finished cell
    <run>/results.csv       every row in spec order, for people and spreadsheets (rows/ is what sdrag reads)
    <run>/.sdrag-run.lock   held by the one sweep writing here; its presence marks the folder as sdrag's
    <run>/report.html, grid_*.png   written by sdrag.reports

Every file is written atomically, so a killed sweep leaves whole files only and a rerun resumes from rows/.
Everything read back is checked (runs/schema.py); nothing outside the folder is read or written through it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from ..files import atomic_save_image, atomic_write_bytes, atomic_write_json, canonical, pixels_sha256
from ..images import load_image
from .lock import FolderLock
from .schema import (
    CELL_ID,
    FAILED,
    LEGACY_VALUES,
    OK,
    ROW_COLUMNS,
    TEXT_COLUMNS,
    from_spreadsheet,
    manifest_problem,
    parse_references,
    references_text,
    row_problem,
    spreadsheet_safe,
    varying_params,
    with_legacy_values,
    worker_table,
)
from .spec import SweepError

if TYPE_CHECKING:
    import pandas as pd
    from PIL import Image

    from ..generation.params import ResolvedParams
    from .spec import SweepSpec

__all__ = ["FAILED", "OK", "ROW_COLUMNS", "RunFolder", "SweepRun", "cell_id", "load_run", "new_row",
           "parse_references", "references_text", "varying_params"]
LOCK_NAME = ".sdrag-run.lock"
_SUBFOLDERS = ("cells", "rows", "styles")


def cell_id(p: ResolvedParams, context: dict) -> str:
    """Content hash of a cell's resolved parameters and what they act on (preset, sketch)."""
    params = p.to_dict()
    # Parameters added later leave the hash at the value cells had before them, so older cells keep their ids.
    for name, before in LEGACY_VALUES.items():
        if params.get(name) == before:
            params.pop(name)
    blob = canonical({"params": params, **context})
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def new_row(index: int, cid: str, label: dict, resolved: ResolvedParams, batch: int) -> dict:
    """A results row with the cell's identity and parameters filled in, everything else empty."""
    row: dict = {c: None for c in ROW_COLUMNS}
    # Parameter columns show values as the spec wrote them ('style', not its expanded block map); the
    # resolved parameters, which reproduce the cell, go in one JSON column.
    for name, value in label.items():
        row[name] = value if isinstance(value, (int, float, str)) or value is None else json.dumps(value)
    row.update(cell=index, cell_id=cid, batch=batch, resolved=json.dumps(resolved.to_dict()))
    return row


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

    def lock(self) -> FolderLock:
        """The one-writer lock of this folder (a context manager; creates the folder)."""
        self._check_usable()
        self.path.mkdir(parents=True, exist_ok=True)
        return FolderLock(self.path / LOCK_NAME)

    def _check_usable(self) -> None:
        """Refuse a path that is a file, or a folder of someone else's files (never written into)."""
        if self.path.exists() and not self.path.is_dir():
            raise SweepError(f"{self.path} is a file, not a folder. Fix: pass a folder path as out_dir.")
        if not self.path.is_dir() or (self.path / LOCK_NAME).exists() or self.manifest_path.exists():
            return
        foreign = sorted(p.name for p in self.path.iterdir())
        if foreign:
            shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
            raise SweepError(f"{self.path} is not a run folder and not empty ({shown}); sdrag writes only into new,"
                             " empty or its own run folders. Fix: pass another out_dir.")

    def prepare(self, sweep: SweepSpec, sketch: Image.Image) -> str:
        """Make the folder (held by `lock()`) ready to run `sweep` on `sketch`, refusing another sweep's folder;
        return the sketch's pixel hash, which cell ids include."""
        sketch_sha = pixels_sha256(sketch)
        self._check_belongs(sweep, sketch_sha)
        for name in ("", *_SUBFOLDERS):
            folder = self.path / name
            if name and (folder.is_symlink() or (folder.exists() and not folder.is_dir())):
                raise SweepError(f"{folder} is a link or a file; sdrag writes only inside the run folder. Fix: make"
                                 " it a plain folder, or pass another out_dir.")
            folder.mkdir(parents=True, exist_ok=True)
            for stale in folder.glob(".*.tmp"):
                stale.unlink()  # left by a killed writer (the lock says none is running); never renamed in
        if not self.sketch_path.is_file():
            # The run folder keeps its own copy of the sketch, so a cell can be reproduced from the folder alone.
            atomic_save_image(sketch, self.sketch_path)
        return sketch_sha

    def _check_belongs(self, sweep: SweepSpec, sketch_sha: str) -> None:
        """Refuse to resume into a folder that holds another preset's or another sketch's sweep."""
        if not self.manifest_path.exists():
            return
        old = self.read_manifest()
        if old["preset"] != sweep.preset or old["sketch_sha256"] != sketch_sha:
            raise SweepError(
                f"{self.path} holds a sweep with preset {old['preset']!r} on another sketch or preset; resuming"
                " into it would mix runs. Fix: pass another out_dir."
            )

    def check_cells(self, ids: list[str], rows: dict[str, dict]) -> None:
        """Refuse to run a spec that would leave this folder's finished cells (`rows()`) out of its table and
        report."""
        foreign = sorted(set(rows) - set(ids))
        if foreign:
            hint = "".join(f" Cells made before `{name}` was a parameter used {name}: {before}; add it to the spec's"
                           " base to resume them." for name, before in LEGACY_VALUES.items()
                           if any(rows[cid].get(name) == before for cid in foreign))
            raise SweepError(
                f"{self.path} holds {len(foreign)} cell(s) of another spec (e.g. {foreign[0]}) that this spec does"
                " not have; running it here would drop them from the results. Fix: pass another out_dir, or run a"
                f" spec that includes them (a spec with more values adds cells).{hint}"
            )

    def write_manifest(self, manifest: dict) -> dict:
        """Write manifest.json for this invocation; earlier invocations stay in its `history`."""
        history = self.read_manifest()["history"] if self.manifest_path.exists() else []
        # A resume may run a longer spec, or newer packages: each invocation's spec, versions and device are kept.
        history.append({"started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                        **{k: manifest[k] for k in ("spec", "versions", "device", "models")}})
        manifest = {**manifest, "history": history}
        atomic_write_json(self.manifest_path, manifest)
        return manifest

    def rewrite_manifest(self, manifest: dict) -> None:
        """Replace manifest.json with `manifest` as it is (its history already in it)."""
        atomic_write_json(self.manifest_path, manifest)

    def write_cell(self, cid: str, png: bytes) -> str:
        """Store one cell's image; return its path relative to the folder (what the row records)."""
        atomic_write_bytes(self.path / "cells" / f"{cid}.png", png)
        return f"cells/{cid}.png"

    def write_row(self, row: dict) -> None:
        """Store one cell's row; a failed row lives beside an ok one and never replaces it."""
        suffix = ".json" if row["status"] == OK else ".failed.json"
        atomic_write_json(self.path / "rows" / f"{row['cell_id']}{suffix}", row)

    def keep_styles(self, styles: list) -> None:
        """Copy the image and the name, caption and tags of each style (a retrieval Style) the folder lacks."""
        for style in styles:
            if self.style_file(style.id) is None:
                suffix = Path(style.path).suffix.lower() or ".png"
                atomic_write_bytes(self.path / "styles" / f"{style.id}{suffix}", Path(style.path).read_bytes())
            if not (self.path / "styles" / f"{style.id}.json").is_file():
                atomic_write_json(self.path / "styles" / f"{style.id}.json",
                                  {"id": style.id, "name": style.name, "caption": style.caption,
                                   "tags": list(style.tags)})

    def write_table(self, ids: list[str], rows: dict[str, dict]) -> pd.DataFrame:
        """Write results.csv: the rows of `ids` that exist, in that order; return them as a DataFrame.

        In the file, text a spreadsheet would run as a formula is quoted; the returned table and rows/ keep it.
        """
        import pandas as pd

        table = pd.DataFrame([rows[cid] for cid in ids if cid in rows], columns=ROW_COLUMNS)
        safe = table.astype(object).map(spreadsheet_safe)
        atomic_write_bytes(self.table_path, safe.to_csv(index=False).encode())
        return table

    # -- reading -------------------------------------------------------------------------------------------

    def read_manifest(self) -> dict:
        """manifest.json, checked; a SweepError names what is wrong with it."""
        try:
            manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            problem = f"cannot be read ({exc})"
        else:
            problem = manifest_problem(manifest)
        if problem:
            raise SweepError(f"{self.manifest_path} {problem}; {self.path} is not a run folder sdrag can use."
                             " Fix: restore the file from the sweep, or run the sweep again into a new out_dir.")
        return manifest

    def rows(self, skipped: list[str] | None = None) -> dict[str, dict]:
        """Every intact row by cell id (an ok row wins over a failed one of the same cell).

        A row file that is not a row, names another cell, or whose image is missing or not the one recorded is
        left out (its cell counts as not done, so a resume makes it again); `skipped` collects why.
        """
        rows: dict[str, dict] = {}
        for path in sorted((self.path / "rows").glob("*.json")):
            name_id = path.name.removesuffix(".json").removesuffix(".failed")
            problem = "is not named <cell id>.json" if not CELL_ID.fullmatch(name_id) else ""
            row = None
            if not problem:
                row, problem = self._read_row(path, name_id)
            if problem:
                if skipped is not None:
                    skipped.append(f"{path.name}: {problem}")
                continue
            if row["status"] == OK or name_id not in rows:
                rows[name_id] = row
        return rows

    def finished_row(self, cid: str) -> dict | None:
        """The intact ok row of one cell (what `rows()` would give for it), reading only that row and its image."""
        if not CELL_ID.fullmatch(cid):
            return None
        row, problem = self._read_row(self.path / "rows" / f"{cid}.json", cid)
        return row if not problem and row["status"] == OK else None

    def _read_row(self, path: Path, name_id: str) -> tuple[dict | None, str]:
        try:
            row = with_legacy_values(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            return None, f"cannot be read ({type(exc).__name__})"
        problem = row_problem(row, name_id)
        if not problem and row["status"] == OK:
            problem = self._image_problem(row)
        return row, problem

    def _image_problem(self, row: dict) -> str:
        """Why the image an ok row names is not the one it recorded ('' if it is)."""
        path = self.path / row["image"]
        try:
            if path.is_symlink() or not path.is_file():
                return f"its image {row['image']} is missing"
            data = path.read_bytes()
        except OSError as exc:
            return f"its image cannot be read ({exc.strerror or exc})"
        return "" if hashlib.sha256(data).hexdigest() == row["image_sha256"] else "its image is not the one recorded"

    def read_table(self) -> pd.DataFrame:
        """The results: from rows/ (checked), in results.csv's order; results.csv itself when rows/ is absent."""
        import pandas as pd

        if (self.path / "rows").is_dir():
            rows = self.rows()
            order = {cid: n for n, cid in enumerate(self._csv_ids())}
            ranked = sorted(rows.values(), key=lambda r: (order.get(r["cell_id"], len(order)), r["cell"]))
            return pd.DataFrame(ranked, columns=ROW_COLUMNS)
        return self._read_csv()

    def _csv_ids(self) -> list[str]:
        try:
            return self._read_csv()["cell_id"].tolist()
        except SweepError:
            return []

    def _read_csv(self) -> pd.DataFrame:
        import pandas as pd

        try:
            table = pd.read_csv(self.table_path, keep_default_na=False, na_values=[""],
                                dtype={c: str for c in TEXT_COLUMNS})
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise SweepError(f"{self.table_path} cannot be read ({exc}). Fix: pass a folder run_sweep wrote."
                             ) from None
        for name, before in LEGACY_VALUES.items():
            if name not in table:  # a table written before the parameter existed
                table[name] = before
        missing = [c for c in ROW_COLUMNS if c not in table]
        if missing or not table["cell_id"].map(lambda c: isinstance(c, str) and CELL_ID.fullmatch(c)).all():
            raise SweepError(f"{self.table_path} is not a sweep's results table (missing or malformed columns:"
                             f" {', '.join(missing) or 'cell_id'}). Fix: restore it from the sweep.")
        return table.astype(object).map(from_spreadsheet)[ROW_COLUMNS]

    def cell_file(self, image: str) -> Path:
        """The file a row's `image` column names: it must lie in this folder's cells/ (rows can be edited)."""
        cells = (self.path / "cells").resolve()
        path = (self.path / str(image)).resolve()
        if not path.is_relative_to(cells):
            raise SweepError(f"A row of {self.path} names the image {str(image)[:200]!r}, outside {cells}. Fix:"
                             " restore rows/ from the sweep, or run it again into a new folder.")
        return path

    def style_file(self, sid: str) -> Path | None:
        """This folder's copy of a style image (None if it holds none: folders made before copies were kept)."""
        if not CELL_ID.fullmatch(sid):
            return None
        found = [p for p in sorted((self.path / "styles").glob(f"{sid}.*"))
                 if p.suffix != ".json" and p.is_file() and not p.is_symlink()]
        return found[0] if found else None

    def style_info(self, sid: str) -> dict:
        """What this folder recorded of a style: id, name, caption, tags (the id as its name when unrecorded)."""
        info = {"id": sid, "name": sid, "caption": "", "tags": []}
        path = self.path / "styles" / f"{sid}.json"
        if not CELL_ID.fullmatch(sid) or path.is_symlink() or not path.is_file():
            return info
        try:
            found = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            return info
        if isinstance(found, dict):  # a damaged file must not put anything but text into the page
            info.update({k: found[k] for k in ("name", "caption") if isinstance(found.get(k), str)})
            if isinstance(found.get("tags"), list):
                info["tags"] = [t for t in found["tags"] if isinstance(t, str)]
        return info

    def sketch(self, manifest: dict) -> Image.Image:
        """The run's sketch copy, checked against the hash its manifest records."""
        sketch = load_image(self.sketch_path)
        if pixels_sha256(sketch) != manifest["sketch_sha256"]:
            raise SweepError(f"{self.sketch_path} is not the sketch this run used. Fix: restore it from the"
                             " run's backup; the manifest records its sha256.")
        return sketch

    def open(self) -> SweepRun:
        """The finished (or partial) sweep in this folder."""
        if not self.path.is_dir():
            raise SweepError(f"{self.path} is not a sweep folder (no such folder). Fix: pass a folder run_sweep"
                             " wrote.")
        manifest = self.read_manifest()
        table = self.read_table()
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

    def workers(self) -> pd.DataFrame:
        """Each worker of this invocation: node, device, threads, batches, cells, busy_s, cells_per_s, lost."""
        return worker_table(self.manifest)

    def summary(self) -> pd.DataFrame:
        """Metric mean and std over seeds for each parameter combination (successful cells only)."""
        from .metrics import aggregate

        by = [c for c in varying_params(self.table) if c != "seed"]
        return aggregate(self.ok.fillna({c: "" for c in by}), by or ["prompt"])


def load_run(out_dir: str | Path) -> SweepRun:
    """Open a sweep folder as a SweepRun (reads only; checks every file it reads)."""
    return RunFolder(out_dir).open()
