"""The sweep report: one self-contained HTML page (grids, metrics, tables, provenance; every user string escaped)."""

from __future__ import annotations

import html
import io
import json
from pathlib import Path

import pandas as pd
from PIL import Image

from ..files import atomic_write_bytes, data_uri, image_bytes
from ..runs.folder import OK, SweepRun, varying_params
from ..runs.metrics import METRICS
from .grids import grid_pages
from .plots import heatmaps, pareto


def png(fig_or_img) -> bytes:
    if isinstance(fig_or_img, Image.Image):
        return image_bytes(fig_or_img)
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig_or_img.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig_or_img)
    return buf.getvalue()


def img_tag(data: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="{data_uri(data)}">'


def _result_columns(table: pd.DataFrame) -> list[str]:
    keep = ["cell_id", "status", "error", *varying_params(table), "references", "retrieved", *METRICS, "seconds",
            "peak_mem_mb"]
    return list(dict.fromkeys(c for c in keep if c in table))


def html_table(frame: pd.DataFrame) -> str:
    shown = frame.astype(object).where(frame.notna(), "")
    return shown.to_html(index=False, escape=True, float_format=lambda v: f"{v:.4g}")


def write_report(run: SweepRun) -> Path:
    """Write grids as PNGs and one self-contained report.html (no server, every user string escaped)."""
    out = run.out_dir
    parts = [f"<h1>sweep {html.escape(run.manifest['name'])}</h1>"]
    table = run.table
    failed = int((table["status"] != OK).sum())
    parts.append(f"<p>{len(table)} cells, {failed} failed. Preset {html.escape(str(run.manifest['preset']))},"
                 f" device {html.escape(json.dumps(run.manifest['device']))}.</p>")
    parts.append("<h2>Grids</h2>")
    pages = grid_pages(run)
    for n, (page, img) in enumerate(pages):
        data = png(img)
        atomic_write_bytes(out / f"grid_{n:02d}.png", data)
        parts.append(f"<h3>{html.escape(page.title)}</h3>{img_tag(data, page.title)}")
    for stale in out.glob("grid_*.png"):
        # Pages a previous report had beyond this one's count would otherwise pass for current ones.
        if stale.stem[5:].isdigit() and int(stale.stem[5:]) >= len(pages):
            stale.unlink()
    if failed:
        parts.append("<h2>Failed cells</h2>" + html_table(table.loc[table["status"] != OK, _result_columns(table)]))
    maps = heatmaps(run)
    if maps:
        parts.append("<h2>Metrics</h2>" + "".join(img_tag(png(fig), m) for m, fig in maps))
    fig = pareto(run)
    if fig is not None:
        parts.append("<h2>Style vs structure</h2>" + img_tag(png(fig), "pareto"))
    summary = run.summary()
    if len(summary):
        parts.append("<h2>Mean and std over seeds</h2>" + html_table(summary))
    parts.append("<h2>Results</h2><p>Every column, and the resolved parameters of each cell, are in"
                 " results.csv beside this file.</p>" + html_table(table[_result_columns(table)]))
    parts.append("<h2>Provenance</h2><pre>" + html.escape(json.dumps(run.manifest, indent=2)) + "</pre>")
    return atomic_write_bytes(out / "report.html", html_page(f"sdrag sweep {run.manifest['name']}", "\n".join(parts)))


def html_page(title: str, body: str) -> bytes:
    """A self-contained HTML page: inline style, images as data URIs, nothing fetched."""
    return ("<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>"
            "body{font-family:sans-serif;margin:1.5em} table{border-collapse:collapse;font-size:12px}"
            "td,th{border:1px solid #ccc;padding:2px 4px;vertical-align:top} img{max-width:100%}</style></head>"
            f"<body>{body}</body></html>").encode()
