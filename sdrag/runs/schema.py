"""What a run folder's files must hold. Anything read back may have been edited, damaged or dropped in by
someone else: each check names the first problem ('' when there is none), and callers never trust a file that
fails one."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from ..generation.params import Params
from .metrics import METRICS

if TYPE_CHECKING:
    import pandas as pd

OK, FAILED = "ok", "failed"
ROW_COLUMNS = ["cell", "cell_id", "status", "error", *Params.names(), "references", "retrieved", *METRICS,
               "seconds", "peak_mem_mb", "memory", "batch", "batch_seeds", "image", "image_sha256", "edges_sha256",
               "resolved"]
# Columns that hold text whatever it looks like: an id of digits must not come back as a number.
TEXT_COLUMNS = ["cell_id", "status", "error", "prompt", "negative_prompt", "fit", "scheduler", "retrieval", "avoid",
                "references", "retrieved", "memory", "batch_seeds", "image", "image_sha256", "edges_sha256", "resolved"]
CELL_ID = re.compile(r"[0-9a-f]{16}")
SHA256 = re.compile(r"[0-9a-f]{64}")
MANIFEST_KEYS = {"name": str, "preset": str, "spec": dict, "sketch_sha256": str, "versions": dict, "device": dict,
                 "models": dict, "weights": dict, "library": dict, "history": list}
# Parameters added after run folders existed, with the value every earlier cell was made with: rows and tables
# written before them read as having that value, and cell ids leave it out (runs/folder.py cell_id).
LEGACY_VALUES = {"retrieval": "dense", "avoid": "", "diversity": 0.0}
# A spreadsheet runs a cell that starts with one of these as a formula (OWASP's list); "'" starts the escape.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")


def with_legacy_values(row: Any) -> Any:
    """A row as read back, with the parameters added since it was written set to the value it was made with."""
    if isinstance(row, dict):
        for name, before in LEGACY_VALUES.items():
            row.setdefault(name, before)
    return row


def row_problem(row: Any, name_id: str) -> str:
    """Why a row file's content cannot be a row of cell `name_id` (its file name's id); '' if it can."""
    if not isinstance(row, dict):
        return f"holds {type(row).__name__}, not a row"
    missing = [c for c in ROW_COLUMNS if c not in row]
    if missing:
        return f"lacks {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"
    if row["cell_id"] != name_id:
        return f"names cell {str(row['cell_id'])[:40]!r}, not the {name_id} of its file name"
    if row["status"] not in (OK, FAILED):
        return f"has status {str(row['status'])[:40]!r}"
    if not _json_of(row["resolved"], dict):
        return "has no resolved parameters"
    if row["status"] == FAILED:
        return ""
    return _ok_row_problem(row)


def _ok_row_problem(row: dict) -> str:
    if row["image"] != f"cells/{row['cell_id']}.png":
        return f"names the image {str(row['image'])[:80]!r} instead of cells/{row['cell_id']}.png"
    if not all(isinstance(row[k], str) and SHA256.fullmatch(row[k]) for k in ("image_sha256", "edges_sha256")):
        return "lacks the image's or the edge map's sha256"
    if not _json_of(row["batch_seeds"], list) or not _json_of(row["memory"], dict):
        return "lacks its batch's seeds or memory savers"
    try:
        parse_references(row["references"])
    except (TypeError, ValueError, IndexError):
        return "lacks readable style references"
    return ""


def _json_of(text: Any, kind: type) -> bool:
    try:
        return isinstance(json.loads(text), kind)
    except (TypeError, ValueError):
        return False


def manifest_problem(manifest: Any) -> str:
    """Why `manifest` cannot be a run's manifest.json; '' if it can."""
    if not isinstance(manifest, dict):
        return f"holds {type(manifest).__name__}, not a manifest"
    wrong = [k for k, kind in MANIFEST_KEYS.items() if not isinstance(manifest.get(k), kind)]
    if wrong:
        return f"lacks {', '.join(wrong)} (or has another type there)"
    if not SHA256.fullmatch(manifest["sketch_sha256"]):
        return "has no sketch hash"
    if not isinstance(manifest["library"].get("styles", []), list):
        return "has no library snapshot"
    return ""


def references_text(refs: list[tuple[str, float]]) -> str:
    """The style references of a cell as its row stores them: JSON [[id, weight], ...] at full precision."""
    return json.dumps([[sid, weight] for sid, weight in refs])


def parse_references(text: str) -> list[tuple[str, float]]:
    """A row's style references; rows written before JSON hold 'id:weight;id:weight'."""
    if text.startswith("["):
        refs = [(str(sid), float(weight)) for sid, weight in json.loads(text)]
    else:
        refs = [(part.rsplit(":", 1)[0], float(part.rsplit(":", 1)[1])) for part in text.split(";")]
    if not all(CELL_ID.fullmatch(sid) for sid, _ in refs):
        raise ValueError("a style id that is not 16 hex digits")
    return refs


def spreadsheet_safe(value: Any) -> Any:
    """Text a spreadsheet would run as a formula, quoted with a leading "'" (which spreadsheets hide)."""
    return "'" + value if isinstance(value, str) and value.startswith(_FORMULA_START) else value


def from_spreadsheet(value: Any) -> Any:
    """The text `spreadsheet_safe` quoted, as it was."""
    return value[1:] if isinstance(value, str) and value.startswith("'") else value


WORKER_COLUMNS = ["worker", "node", "ip", "device", "threads", "batches", "cells", "busy_s", "lost"]


def worker_table(manifest: dict) -> pd.DataFrame:
    """The manifest's per-worker figures (`engine.workers`) as a DataFrame with cells per busy second; whatever an
    edited manifest holds there that is not a row of figures is left out."""
    import pandas as pd

    engine = manifest.get("engine")
    rows = engine.get("workers") if isinstance(engine, dict) else None
    table = pd.DataFrame([r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else [],
                         columns=WORKER_COLUMNS)[WORKER_COLUMNS]
    for name in ("batches", "cells", "busy_s", "lost"):
        table[name] = pd.to_numeric(table[name], errors="coerce")
    table["cells_per_s"] = (table["cells"] / table["busy_s"].where(table["busy_s"] > 0)).round(3)
    return table


def varying_params(table: pd.DataFrame) -> list[str]:
    """The parameter columns that take more than one value in a results table."""
    return [n for n in Params.names() if n in table and table[n].astype(str).nunique() > 1]
