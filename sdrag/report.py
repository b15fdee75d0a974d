"""Sweep reports: labelled X/Y grids (one page per Z value), metric heatmaps, a Pareto plot, one HTML file."""

from __future__ import annotations

import base64
import html
import io
import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from .files import atomic_write_bytes

MAX_GRID_PX = 4096
LABEL_H = 18


def _label(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def grid_axes(run) -> tuple[str | None, str | None, list[str]]:
    """(x axis, y axis, page axes): the spec's axes in order, with seeds last among pages."""
    spec = run.manifest["spec"]
    names = [n for n in list(spec.get("axes") or {}) + list(spec.get("zip") or {}) if n != "seed"]
    if "seed" in (spec.get("axes") or {}) or "seed" in (spec.get("zip") or {}):
        names.append("seed")
    names = [n if n not in ("canny_low", "canny_high") else "canny" for n in names]
    names = list(dict.fromkeys(names))
    x = names[0] if names else None
    y = names[1] if len(names) > 1 else None
    return x, y, names[2:]


def _values(table: pd.DataFrame, name: str | None) -> list:
    return [None] if name is None else list(dict.fromkeys(table[name].tolist()))


def _cell_image(out_dir: Path, row: pd.Series | None, size: int) -> Image.Image:
    if row is not None and row["status"] == "ok" and isinstance(row["image"], str):
        img = Image.open(out_dir / row["image"]).convert("RGB")
        img.thumbnail((size, size))
        return img
    # A failed or missing cell is drawn as such, never left blank.
    tile = Image.new("RGB", (size, size), (120, 20, 20))
    draw = ImageDraw.Draw(tile)
    draw.line((0, 0, size, size), fill="white", width=3)
    draw.line((0, size, size, 0), fill="white", width=3)
    draw.text((6, 6), "FAILED" if row is not None else "MISSING", fill="white")
    return tile


def grid_pages(run) -> list[tuple[str, Image.Image]]:
    """One labelled grid image per combination of page-axis values: (title, image)."""
    table = run.table
    x, y, pages = grid_axes(run)
    xs, ys = _values(table, x), _values(table, y)
    ok = table[table["status"] == "ok"]
    native = max(Image.open(run.out_dir / ok["image"].iloc[0]).size) if len(ok) else 128
    # The guard: a grid never grows past MAX_GRID_PX a side, however many values an axis has.
    cell = max(32, min(256, native, MAX_GRID_PX // max(len(xs), len(ys), 1) - 8))
    out = []
    for combo in itertools.product(*[_values(table, p) for p in pages]) if pages else [()]:
        sub = table
        for name, value in zip(pages, combo):
            sub = sub[sub[name] == value]
        title = ", ".join(f"{n}: {_label(v)}" for n, v in zip(pages, combo)) or run.manifest["name"]
        left = 150 if y else 0
        canvas = Image.new("RGB", (left + len(xs) * (cell + 4), LABEL_H * 2 + len(ys) * (cell + 4)), "white")
        draw = ImageDraw.Draw(canvas)
        draw.text((4, 2), title[:200], fill="black")
        for ci, xv in enumerate(xs):
            if x:
                draw.text((left + ci * (cell + 4) + 2, LABEL_H), f"{x}: {_label(xv)}"[:40], fill="black")
            for ri, yv in enumerate(ys):
                match = sub
                if x:
                    match = match[match[x] == xv]
                if y:
                    match = match[match[y] == yv]
                row = match.iloc[0] if len(match) else None
                top = LABEL_H * 2 + ri * (cell + 4)
                canvas.paste(_cell_image(run.out_dir, row, cell), (left + ci * (cell + 4), top))
                if y and ci == 0:
                    draw.text((4, top + cell // 2), f"{y}: {_label(yv)}"[:24], fill="black")
        out.append((title, canvas))
    return out


def _png(fig_or_img) -> bytes:
    buf = io.BytesIO()
    if isinstance(fig_or_img, Image.Image):
        fig_or_img.save(buf, format="PNG")
    else:
        import matplotlib.pyplot as plt

        fig_or_img.savefig(buf, format="png", dpi=90, bbox_inches="tight")
        plt.close(fig_or_img)
    return buf.getvalue()


def heatmaps(run, metrics: tuple[str, ...] = ("edge_f1", "style_similarity", "prompt_alignment")) -> list:
    """A matplotlib heatmap per metric over the two main axes (mean over everything else)."""
    import matplotlib.pyplot as plt

    x, y, _ = grid_axes(run)
    ok = run.table[run.table["status"] == "ok"]
    figs = []
    if not x or ok.empty:
        return figs
    for metric in metrics:
        if metric not in ok or ok[metric].isna().all():
            continue
        pivot = ok.pivot_table(index=y, columns=x, values=metric, aggfunc="mean", sort=False) if y else \
            ok.groupby(x, sort=False)[metric].mean().to_frame().T
        fig, ax = plt.subplots(figsize=(1.2 + 0.9 * pivot.shape[1], 1.0 + 0.6 * pivot.shape[0]))
        im = ax.imshow(pivot.to_numpy(dtype=float), cmap="viridis", aspect="auto")
        ax.set_xticks(range(pivot.shape[1]), [_label(v) for v in pivot.columns], rotation=30, ha="right")
        ax.set_yticks(range(pivot.shape[0]), [_label(v) for v in pivot.index] if y else [metric])
        ax.set_xlabel(x)
        ax.set_ylabel(y or "")
        for (i, j), v in np.ndenumerate(pivot.to_numpy(dtype=float)):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="white", fontsize=8)
        ax.set_title(f"{metric} (mean)")
        fig.colorbar(im, ax=ax)
        figs.append((metric, fig))
    return figs


def pareto(run):
    """Scatter of style similarity against structure fidelity, with the Pareto front drawn."""
    import matplotlib.pyplot as plt

    ok = run.table[run.table["status"] == "ok"].dropna(subset=["edge_f1", "style_similarity"])
    if ok.empty:
        return None
    pts = ok[["edge_f1", "style_similarity"]].to_numpy(dtype=float)
    front = [i for i, (a, b) in enumerate(pts)
             if not ((pts[:, 0] >= a) & (pts[:, 1] >= b) & ((pts[:, 0] > a) | (pts[:, 1] > b))).any()]
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter(pts[:, 0], pts[:, 1], s=18, alpha=0.6, label="cells")
    fp = pts[sorted(front, key=lambda i: pts[i, 0])]
    ax.plot(fp[:, 0], fp[:, 1], "r-o", ms=4, label="Pareto front")
    ax.set_xlabel("structure fidelity (edge F1)")
    ax.set_ylabel("style similarity (CLIP cosine)")
    ax.legend(fontsize=8)
    return fig


def _img_tag(data: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _result_columns(table: pd.DataFrame) -> list[str]:
    from .sweep import varying_params

    keep = ["cell_id", "status", "error", *varying_params(table), "references", "retrieved", "edge_f1",
            "style_similarity", "prompt_alignment", "seconds", "peak_mem_mb"]
    return list(dict.fromkeys(c for c in keep if c in table))


def _html_table(frame: pd.DataFrame) -> str:
    shown = frame.astype(object).where(frame.notna(), "")
    return shown.to_html(index=False, escape=True, float_format=lambda v: f"{v:.4g}")


def write_report(run) -> Path:
    """Write grids as PNGs and one self-contained report.html (no server, every user string escaped)."""
    out = run.out_dir
    parts = [f"<h1>sweep {html.escape(run.manifest['name'])}</h1>"]
    table = run.table
    failed = int((table["status"] != "ok").sum())
    parts.append(f"<p>{len(table)} cells, {failed} failed. Preset {html.escape(str(run.manifest['preset']))},"
                 f" device {html.escape(json.dumps(run.manifest['device']))}.</p>")
    parts.append("<h2>Grids</h2>")
    for n, (title, img) in enumerate(grid_pages(run)):
        data = _png(img)
        atomic_write_bytes(out / f"grid_{n:02d}.png", data)
        parts.append(f"<h3>{html.escape(title)}</h3>{_img_tag(data, title)}")
    maps = heatmaps(run)
    if maps:
        parts.append("<h2>Metrics</h2>" + "".join(_img_tag(_png(fig), m) for m, fig in maps))
    fig = pareto(run)
    if fig is not None:
        parts.append("<h2>Style vs structure</h2>" + _img_tag(_png(fig), "pareto"))
    summary = run.summary()
    if len(summary):
        parts.append("<h2>Mean and std over seeds</h2>" + _html_table(summary))
    parts.append("<h2>Results</h2><p>Every column, and the resolved parameters of each cell, are in"
                 " results.csv beside this file.</p>" + _html_table(table[_result_columns(table)]))
    parts.append("<h2>Provenance</h2><pre>" + html.escape(json.dumps(run.manifest, indent=2)) + "</pre>")
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>sdrag sweep</title><style>"
            "body{font-family:sans-serif;margin:1.5em} table{border-collapse:collapse;font-size:12px}"
            "td,th{border:1px solid #ccc;padding:2px 4px} img{max-width:100%}</style></head><body>"
            + "\n".join(parts) + "</body></html>")
    return atomic_write_bytes(out / "report.html", page.encode("utf-8"))


def load_run(out_dir: str | Path):
    """Open a finished sweep folder (results.csv + manifest.json) as a SweepRun."""
    from .sweep import SweepError, SweepRun

    out = Path(out_dir)
    try:
        table = pd.read_csv(out / "results.csv", keep_default_na=False, na_values=[""])
        manifest = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise SweepError(f"{out} is not a sweep folder ({exc}). Fix: pass a folder run_sweep wrote.") from None
    report = out / "report.html"
    return SweepRun(out_dir=out, table=table, manifest=manifest, report_path=report if report.is_file() else None)


def compare_runs(run_dirs, out_path: str | Path | None = None) -> pd.DataFrame:
    """Compare sweeps on the parameter combinations they share: metric means per run and deltas to the first.

    With `out_path`, also write a self-contained HTML page with each run's grids side by side.
    """
    from .sweep import SweepError, varying_params

    runs = [load_run(d) for d in run_dirs]
    if len(runs) < 2:
        raise SweepError("compare_runs needs two or more run folders.")
    keys = sorted({c for r in runs for c in varying_params(r.table) if c != "seed"})
    merged = None
    for i, run in enumerate(runs):
        ok = run.table[run.table["status"] == "ok"].copy()
        for k in keys:
            ok[k] = ok[k].astype(str) if k in ok else ""
        means = ok.groupby(keys or ["prompt"], sort=False)[["edge_f1", "style_similarity", "prompt_alignment"]].mean()
        means.columns = [f"{c}[{i}]" for c in means.columns]
        merged = means if merged is None else merged.join(means, how="outer")
    for metric in ("edge_f1", "style_similarity", "prompt_alignment"):
        for i in range(1, len(runs)):
            merged[f"{metric} delta[{i}-0]"] = merged[f"{metric}[{i}]"] - merged[f"{metric}[0]"]
    merged = merged.reset_index()
    if out_path is not None:
        names = [html.escape(f"[{i}] {r.manifest['name']} ({r.out_dir})") for i, r in enumerate(runs)]
        cols = []
        for name, run in zip(names, runs):
            grids = "".join(_img_tag(_png(img), title) for title, img in grid_pages(run)[:4])
            cols.append(f"<td style='vertical-align:top'><h3>{name}</h3>{grids}</td>")
        page = ("<!doctype html><html><head><meta charset='utf-8'><title>sdrag comparison</title></head><body>"
                "<h1>Sweep comparison</h1><table><tr>" + "".join(cols) + "</tr></table><h2>Metrics</h2>"
                + _html_table(merged) + "</body></html>")
        atomic_write_bytes(Path(out_path), page.encode("utf-8"))
    return merged
