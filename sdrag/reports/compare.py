"""Comparing sweeps: metric means per run on the parameter combinations they share, and grids side by side."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from ..files import atomic_write_bytes
from ..runs.folder import OK, load_run, varying_params
from ..runs.metrics import METRICS
from ..runs.spec import SweepError
from .grids import grid_pages
from .html import html_page, html_table, img_tag, png


def compare_runs(run_dirs, out_path: str | Path | None = None) -> pd.DataFrame:
    """Compare sweeps on the parameter combinations they share: metric means per run and deltas to the first.

    With `out_path`, also write a self-contained HTML page with each run's grids side by side.
    """
    runs = [load_run(d) for d in run_dirs]
    if len(runs) < 2:
        raise SweepError("compare_runs needs two or more run folders.")
    keys = sorted({c for r in runs for c in varying_params(r.table) if c != "seed"})
    merged = None
    for i, run in enumerate(runs):
        ok = run.table[run.table["status"] == OK].copy()
        for k in keys:
            ok[k] = ok[k].astype(str) if k in ok else ""
        means = ok.groupby(keys or ["prompt"], sort=False)[list(METRICS)].mean()
        means.columns = [f"{c}[{i}]" for c in means.columns]
        merged = means if merged is None else merged.join(means, how="outer")
    for metric in METRICS:
        for i in range(1, len(runs)):
            merged[f"{metric} delta[{i}-0]"] = merged[f"{metric}[{i}]"] - merged[f"{metric}[0]"]
    merged = merged.reset_index()
    if out_path is not None:
        names = [f"[{i}] {r.manifest['name']}" for i, r in enumerate(runs)]
        heads = "".join(f"<th>{html.escape(name)}</th>" for name in names)
        pages = [{page.key: (page.title, img) for page, img in grid_pages(r)} for r in runs]
        rows = []
        for key in dict.fromkeys(k for p in pages for k in p):
            # The same page of every run in one row, so equal axes line up side by side.
            cells = "".join(f"<td>{img_tag(png(p[key][1]), p[key][0]) if key in p else 'not in this run'}</td>"
                            for p in pages)
            rows.append(f"<tr><th>{html.escape(key or 'all cells')}</th>{cells}</tr>")
        folders = "".join(f"<li>[{i}] {html.escape(str(r.out_dir))}</li>" for i, r in enumerate(runs))
        body = (f"<h1>Sweep comparison</h1><ul>{folders}</ul><h2>Metrics (deltas to run 0)</h2>"
                + html_table(merged) + f"<h2>Grids</h2><table><tr><th></th>{heads}</tr>" + "".join(rows)
                + "</table>")
        atomic_write_bytes(Path(out_path), html_page("sdrag comparison", body))
    return merged

