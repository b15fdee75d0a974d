"""The explorer page: one HTML file with the data of one or more runs and the script that shows them.

The script and style sheet are files beside this module (assets/), put inline so the page opens from disk
with nothing fetched but the run folders' own thumbnails (or nothing at all when standalone).
"""

from __future__ import annotations

import html
import json
from importlib import resources
from pathlib import Path

from ..files import atomic_write_bytes
from ..runs.folder import SweepRun
from .explore import explorer_data

_ASSETS = resources.files(__package__) / "assets"


def _script_json(data: dict) -> str:
    """JSON that cannot end the <script> element holding it (no '<', '>' or '&' survive as such)."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _summary(data: dict) -> str:
    parts = []
    for i, run in enumerate(data["runs"]):
        tag = f"[{i}] " if len(data["runs"]) > 1 else ""
        aside = f", {len(run['set_aside'])} damaged row file(s) set aside" if run["set_aside"] else ""
        parts.append(f"<p class='summary'>{html.escape(tag + run['name'])}: {run['cells']} of {run['expected']}"
                     f" cells done, {run['failed']} failed{aside} · preset {html.escape(run['preset'])} ·"
                     f" {html.escape(run['device'])} · {run['invocations']} invocation(s) ·"
                     f"{' ' + html.escape(run['engine']) + ' ·' if run['engine'] else ''}"
                     f" <code>{html.escape(run['folder'])}</code></p>")
    if any(run["preset"] != "sd15" for run in data["runs"]):
        parts.append("<p class='banner'>Random weights (a preset other than sd15): pictures and metrics are noise;"
                     " the chain that made them is real.</p>")
    return "".join(parts)


def _provenance(data: dict) -> str:
    blocks = "".join(f"<details><summary>{html.escape(run['name'])}: manifest.json</summary>"
                     f"<pre>{html.escape(run['provenance'])}</pre></details>" for run in data["runs"])
    return f"<section><h2>Provenance</h2>{blocks}</section>"


def page(data: dict, title: str, extra: str = "") -> bytes:
    """The explorer page for `data` (from `explorer_data`), with `extra` HTML (already escaped) before the
    provenance."""
    script = (_ASSETS / "explorer.js").read_text(encoding="utf-8")
    style = (_ASSETS / "explorer.css").read_text(encoding="utf-8")
    hint = ("Click a cell to enlarge it (arrow keys move, Esc closes). Choose the X and Y axes and the axes"
            " that make a grid of grids; every other axis has a row of values to pick from.")
    body = (
        f"<h1>{html.escape(title)}</h1>{_summary(data)}<p class='hint'>{hint}</p>"
        "<div id='controls'></div><div id='selectors'></div><div id='legend'></div><div id='grid'></div>"
        "<dialog id='detail'><button id='detail-close'>close (Esc)</button><div id='detail-body'></div></dialog>"
        "<section><h2>Heatmap</h2><div id='heatmap'></div></section>"
        "<section><h2>Style vs structure</h2><div id='pareto'></div></section>"
        "<section><h2>Cells</h2><p>Click a column to sort, a row to open its cell. Every column is in"
        " results.csv.</p><div id='table'></div></section>"
        f"{extra}{_provenance(data)}"
    )
    return ("<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>{style}</style></head><body>{body}"
            f"<script type='application/json' id='sdrag-data'>{_script_json(data)}</script>"
            f"<script>{script}</script></body></html>").encode()


def write_explorer(runs: list[SweepRun], out_path: Path, *, title: str, extra: str = "",
                   standalone: bool = False) -> Path:
    """Write the explorer page of `runs` to `out_path` (atomically); `standalone` puts every image inside."""
    out_path = Path(out_path)
    data = explorer_data(runs, out_path.parent, inline=standalone)
    return atomic_write_bytes(out_path, page(data, title, extra))
