"""What an explorer shows of one or more run folders: axes, cells and styles as one JSON-able dict.

The report page's explorer and the notebook's explorer widget both read this; neither reads a run folder
itself. With several runs, "run" is one more axis and each cell of a later run carries its differences to the
cell of the first run with the same values on every other axis.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np

from ..errors import SdragError
from ..files import data_uri, image_bytes
from ..generation.params import Params
from ..images import load_image
from ..retrieval.ranking import explain
from ..runs.folder import OK, SweepRun, varying_params
from ..runs.metrics import METRICS
from ..runs.spec import CANNY_SIDES, SweepError, grid_dims
from ..runs.thumbs import THUMB_PX, cell_thumbnail, style_thumbnail

# Past this many cells a single-file page gets too heavy to share; the folder's report.html has no limit.
MAX_STANDALONE_CELLS = 5000
RUN_AXIS = "run"
_PARAM_COLUMNS = set(Params.names())
_TEXT_PARAMS = {"prompt", "negative_prompt", "fit", "scheduler"}


def axis_label(value) -> str:
    """How a parameter value reads on an axis: numbers as Python writes them (0.0 stays 0.0), lists as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return repr(value) if not isinstance(value, float) or math.isfinite(value) else str(value)
    return json.dumps(value)


def sort_key(label: str) -> tuple:
    """Order axis labels as values: numbers and lists of numbers by magnitude, then text ("[50, 150]" first)."""
    try:
        value = json.loads(label)
    except (TypeError, ValueError):
        return (2, (), label)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, (float(value),), label)
    if isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return (1, tuple(float(v) for v in value), label)
    return (2, (), label)


def expected_cells(spec: dict) -> int:
    """How many cells a manifest's spec expands to (axes x zip x explicit cells), as `load_spec` counts them."""
    axes, zipped, cells = spec.get("axes") or {}, spec.get("zip") or {}, spec.get("cells") or []
    n_zip = len(next(iter(zipped.values()))) if zipped else 1
    return math.prod(len(v) for v in axes.values()) * n_zip * max(len(cells), 1)


def param_value(row: dict, name: str):
    """A row's value of a parameter, or of one side of its Canny pair."""
    if name in CANNY_SIDES:
        return json.loads(row["canny"])[CANNY_SIDES[name]]
    return row[name]


def row_label(row: dict, names: list[str]) -> str:
    """How one row reads on an axis made of `names` (zipped axes join their values with ' · ')."""
    return " · ".join(axis_label(param_value(row, n)) for n in names)


@dataclass
class Axis:
    """One explorer axis: the parameters that vary together on it and their values as labels, in spec order."""

    name: str
    params: list[str]
    values: list[str]

    def to_dict(self) -> dict:
        """The axis as the page's data holds it."""
        return {"name": self.name, "params": self.params, "values": self.values}


def records(run: SweepRun) -> list[dict]:
    """The rows of a run's table as dicts, a missing value as None."""
    return run.table.astype(object).where(run.table.notna(), None).to_dict("records")


def run_axes(run: SweepRun, rows: list[dict] | None = None) -> list[Axis]:
    """The axes of one run: each spec axis alone, zipped axes as one, explicit cells as one; seed last.

    `rows` are the run's `records` when the caller has them already."""
    rows = records(run) if rows is None else rows
    axes = []
    for names in grid_dims(run.manifest["spec"]):
        # Values the table holds beyond the spec's (a resumed folder's older cells) still get a place.
        seen = [row_label(r, names) for r in rows]
        axes.append(Axis(" + ".join(names), names, list(dict.fromkeys(_spec_labels(run, names) + seen))))
    return axes


def _spec_labels(run: SweepRun, names: list[str]) -> list[str]:
    """The labels of an axis's values as the spec lists them (cells not run yet included), read as the table
    reads them: a column holding 7.5 holds 3 as 3.0."""
    listed = (run.manifest["spec"].get("axes") or {}).get(names[0])
    if len(names) != 1 or not isinstance(listed, list):
        return []
    floats = names[0] in run.table and run.table[names[0]].dtype.kind == "f"
    return [axis_label(float(v) if floats and isinstance(v, int) and not isinstance(v, bool) else v) for v in listed]


def _merge_axes(runs: list[SweepRun], rows: list[list[dict]]) -> list[Axis]:
    """The axes of several runs (their `records` in `rows`): every run's axes by name; values in first-seen order."""
    merged: dict[str, Axis] = {}
    for run, run_rows in zip(runs, rows):
        for axis in run_axes(run, run_rows):
            known = merged.setdefault(axis.name, Axis(axis.name, axis.params, []))
            known.values = list(dict.fromkeys(known.values + axis.values))
    # A run that holds one value of another run's axis still sits on it, at that value.
    for run_rows in rows:
        for axis in merged.values():
            known = axis.values + [row_label(r, axis.params) for r in run_rows]
            axis.values = list(dict.fromkeys(known))
    if len(runs) > 1:
        names = [f"[{i}] {r.manifest['name']}" for i, r in enumerate(runs)]
        merged[RUN_AXIS] = Axis(RUN_AXIS, [], names)
    return list(merged.values())


class _Links:
    """How the page reaches a run folder's files: a relative URL, or the bytes inline for a single file."""

    def __init__(self, page_dir: Path, inline: bool):
        self.page_dir, self.inline = page_dir.resolve(), inline

    def __call__(self, path: Path) -> str:
        if self.inline:
            return data_uri(path.read_bytes(), "image/jpeg" if path.suffix == ".jpg" else "image/png")
        return quote(Path(os.path.relpath(path.resolve(), self.page_dir)).as_posix())


def _human_device(device: dict) -> str:
    parts = [str(device.get(k)) for k in ("device", "dtype", "gpu") if device.get(k)]
    if device.get("cuda"):
        parts.append(f"CUDA {device['cuda']}")
    return " · ".join(parts)


def _run_info(run: SweepRun) -> dict:
    m = run.manifest
    failed = int((run.table["status"] != OK).sum())
    versions = {k: v for k, v in (m.get("versions") or {}).items() if isinstance(v, str)}
    return {"name": m["name"], "folder": str(run.out_dir), "preset": m["preset"], "device": _human_device(m["device"]),
            "cells": len(run.table), "expected": expected_cells(m["spec"]), "failed": failed, "versions": versions,
            "set_aside": m.get("rows_set_aside", []), "engine": engine_text(run),
            "invocations": len(m["history"]), "provenance": json.dumps(m, indent=2, default=str)}


# A cluster's worth of workers is named one by one up to here; the rest are counted.
_NAMED_WORKERS = 8


def engine_text(run: SweepRun) -> str:
    """Who made the last invocation's cells: the engine, and each worker's cells and cells per busy second."""
    engine = run.manifest.get("engine")
    name = engine.get("name") if isinstance(engine, dict) else None
    workers = run.workers()
    if not isinstance(name, str) or workers.empty:
        return ""
    parts = []
    for w in workers.head(_NAMED_WORKERS).itertuples():
        rate = f" at {w.cells_per_s:.2f}/s" if _number(w.cells_per_s) is not None else ""
        lost = f", {w.lost:g} batch(es) lost" if _number(w.lost) else ""
        parts.append(f"{w.worker}: {_number(w.cells) or 0:g} cells{rate}{lost}")
    more = f"; {len(workers) - _NAMED_WORKERS} more" if len(workers) > _NAMED_WORKERS else ""
    return f"{name} engine, {len(workers)} worker(s) ({'; '.join(parts)}{more})"


def _number(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _hits(text) -> list[list]:
    """A row's retrieved hits, [id, score] or [id, score, explanation] each (rows are read back: checked)."""
    return [e for e in _json_list(text) if isinstance(e, list) and len(e) >= 2 and isinstance(e[0], str)]


def _param(name: str, value):
    """A parameter as the spec wrote it: rows keep lists and mappings (canny, blends) as JSON text."""
    if name in _TEXT_PARAMS or not isinstance(value, str) or not value.startswith(("[", "{")):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _json_list(text) -> list:
    try:
        found = json.loads(text)
    except (TypeError, ValueError):
        return []
    return found if isinstance(found, list) else []


class _Builder:
    """Collects cells and the styles they name, for one page."""

    def __init__(self, runs: list[SweepRun], links: _Links, thumb: int):
        self.runs, self.links, self.thumb = runs, links, thumb
        self.rows = [records(r) for r in runs]
        self.axes = _merge_axes(runs, self.rows)
        self.places = [{v: n for n, v in enumerate(a.values)} for a in self.axes]
        self.styles: dict[str, dict] = {}
        self.metrics = [m for m in METRICS if any(m in r.table for r in runs)]

    def style(self, run: SweepRun, sid: str) -> str:
        if sid not in self.styles:
            info = run.folder.style_info(sid)
            thumb = style_thumbnail(run.folder, sid, self.thumb)
            info["thumb"] = self.links(run.out_dir / thumb) if thumb else None
            self.styles[sid] = info
        return sid

    def cell(self, i: int, run: SweepRun, row: dict, varying: list[str]) -> dict:
        ok = row["status"] == OK
        thumb = cell_thumbnail(run.folder, row, self.thumb) if ok else None
        values = [row_label(row, a.params) if a.params else f"[{i}] {run.manifest['name']}" for a in self.axes]
        uses_style = ok and _number(row["ip_adapter_scale"]) != 0.0
        return {
            "run": i, "id": row["cell_id"], "status": row["status"], "error": row["error"] or "",
            "v": [place[v] for place, v in zip(self.places, values)],
            "p": {n: _param(n, row[n]) for n in varying},
            "m": [_number(row.get(m)) for m in self.metrics],
            "seconds": _number(row["seconds"]), "peak_mb": _number(row["peak_mem_mb"]),
            "thumb": self.links(run.out_dir / thumb) if thumb else None,
            # A thumbnail exists only for an image `cell_file` accepted (inside cells/): no second check needed.
            "image": self.links(run.out_dir / row["image"]) if thumb else None,
            "refs": [[self.style(run, s), _number(w)] for s, w in _json_list(row["references"]) if isinstance(s, str)],
            "retrieved": [[self.style(run, e[0]), _number(e[1])] for e in _hits(row["retrieved"])],
            "why": [explain(e[2]) if len(e) > 2 and isinstance(e[2], dict) else "" for e in _hits(row["retrieved"])],
            "style_used": uses_style, "memory": row["memory"] or "",
        }

    def build(self) -> dict:
        cells, common = [], []
        for i, (run, rows) in enumerate(zip(self.runs, self.rows)):
            varying = varying_params(run.table)
            first = rows[0] if rows else {}
            common.append({k: _param(k, first[k]) for k in (run.table.columns if rows else [])
                           if k not in varying and k in _PARAM_COLUMNS})
            cells.extend(self.cell(i, run, row, varying) for row in rows)
        # Labels as Python writes the values (JSON numbers lose the ".0" of 0.0 on the way to the page).
        labels = [{k: axis_label(v) for k, v in c.items()} for c in common]
        return {"runs": [_run_info(r) for r in self.runs], "axes": [a.to_dict() for a in self.axes],
                "metrics": self.metrics, "common": common, "common_labels": labels, "cells": cells,
                "styles": self.styles}


def explorer_data(runs: SweepRun | list[SweepRun], page_dir: str | Path, *, inline: bool = False,
                  thumb: int = THUMB_PX) -> dict:
    """The explorer's data for one run or several (compared on their shared axes), with links from `page_dir`.

    Thumbnails are made in each run folder's thumbs/ as needed. `inline` puts every image in the data itself
    (a single file to share; refused past MAX_STANDALONE_CELLS cells).
    """
    runs = runs if isinstance(runs, list) else [runs]
    if inline and sum(len(r.table) for r in runs) > MAX_STANDALONE_CELLS:
        raise SweepError(f"A single-file page holds at most {MAX_STANDALONE_CELLS} cells. Fix: share the run folder"
                         " (its report.html reads the images beside it), or leave standalone off.")
    data = _Builder(runs, _Links(Path(page_dir), inline), thumb).build()
    if len(runs) > 1:
        _add_differences(data, runs)
    return data


def _add_differences(data: dict, runs: list[SweepRun]) -> None:
    """Give each cell of a later run its metric deltas to, and a difference image against, the first run's
    cell with the same values on every other axis."""
    run_at = [a["name"] for a in data["axes"]].index(RUN_AXIS)
    first = {}
    for n, cell in enumerate(data["cells"]):
        if cell["run"] == 0:
            first[tuple(v for k, v in enumerate(cell["v"]) if k != run_at)] = n
    for cell in data["cells"]:
        base_at = first.get(tuple(v for k, v in enumerate(cell["v"]) if k != run_at))
        if cell["run"] == 0 or base_at is None:
            continue
        base = data["cells"][base_at]
        cell["base"] = base_at
        cell["dm"] = [None if a is None or b is None else a - b for a, b in zip(cell["m"], base["m"])]
        if cell["status"] == OK and base["status"] == OK:
            cell["diff"] = _difference(runs[0], base["id"], runs[cell["run"]], cell["id"])


def _difference(run_a: SweepRun, id_a: str, run_b: SweepRun, id_b: str) -> str | None:
    """A small picture of |b - a| per pixel (amplified 4x so small changes show), as a data URI."""
    try:
        a, b = (load_image(r.folder.cell_file(f"cells/{cid}.png")).convert("RGB") for r, cid in
                ((run_a, id_a), (run_b, id_b)))
    except (SdragError, OSError, ValueError):  # a gone image means no picture, not a failed page
        return None
    if a.size != b.size:
        b = b.resize(a.size)
    diff = np.clip(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)) * 4, 0, 255).astype(np.uint8)
    from PIL import Image

    img = Image.fromarray(diff)
    img.thumbnail((THUMB_PX, THUMB_PX))
    return data_uri(image_bytes(img, "JPEG", quality=85), "image/jpeg")
