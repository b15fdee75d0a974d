"""Sweep reports: labelled X/Y grids (one page per Z value), metric heatmaps, a Pareto plot, one HTML file."""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from .files import atomic_write_bytes, image_bytes
from .metrics import METRICS
from .spec import CANNY_SIDES, grid_dims

# The guard: no grid image grows past this many pixels a side; more values spill onto further pages.
MAX_GRID_PX = 4096
CELL_PX = (96, 256)
GAP = 4
LINE_H = 16
LABEL_W = 170
TOP_PX = LINE_H * 6


def _label(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, ".10g")
    return json.dumps(value)


def _value(row: dict, name: str):
    if name in CANNY_SIDES:
        return json.loads(row["canny"])[CANNY_SIDES[name]]
    return row[name]


def _key(row: dict, names: list[str], named: bool = True) -> str:
    """How one row reads on a grid dimension: 'name: value' per name (values only with named=False)."""
    return ", ".join(f"{n}: {_label(_value(row, n))}" if named or len(names) > 1 else _label(_value(row, n))
                     for n in names)


def grid_axes(run, named: bool = True) -> tuple[list[list[str]], pd.DataFrame]:
    """(dimensions, keys): the spec's grid dimensions and, per row of the table, its key on each of them."""
    dims = grid_dims(run.manifest["spec"])
    records = run.table.to_dict("records")
    keys = pd.DataFrame([[_key(r, d, named) for d in dims] for r in records], index=run.table.index,
                        columns=[f"dim{i}" for i in range(len(dims))], dtype=object)
    return dims, keys


def _unique(series: pd.Series | None) -> list:
    return [None] if series is None else list(dict.fromkeys(series.tolist()))


def _cell_image(out_dir: Path, row: pd.Series | None, size: int) -> Image.Image:
    if row is not None and row["status"] == "ok" and isinstance(row["image"], str):
        img = Image.open(out_dir / row["image"]).convert("RGB")
        scale = size / max(img.size)
        # Small images are enlarged without smoothing, so a 64 px cell still shows its pixels as they are.
        return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                          Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS)
    # A failed or missing cell is drawn as such, never left blank.
    tile = Image.new("RGB", (size, size), (120, 20, 20))
    draw = ImageDraw.Draw(tile)
    draw.line((0, 0, size, size), fill="white", width=3)
    draw.line((0, size, size, 0), fill="white", width=3)
    draw.text((6, 6), "FAILED" if row is not None else "MISSING", fill="white", font=_font())
    return tile


def _font():
    return ImageFont.load_default(size=13)


def _wrap(draw: ImageDraw.ImageDraw, text: str, width: int, max_lines: int) -> list[str]:
    """Break `text` into lines at most `width` px wide (over-long words are cut), `max_lines` at most."""
    font, lines, line = _font(), [], ""
    for word in text.split(" "):
        trial = f"{line} {word}" if line else word
        if draw.textlength(trial, font=font) <= width:
            line = trial
            continue
        if line:
            lines.append(line)
        line = word
        while len(line) > 1 and draw.textlength(line, font=font) > width:
            cut = len(line) - 1
            while cut > 1 and draw.textlength(line[:cut], font=font) > width:
                cut -= 1
            lines.append(line[:cut])
            line = line[cut:]
    lines.append(line)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][:-3] + "..."
    return lines


def _chunks(values: list, size: int) -> list[tuple[int, list]]:
    return [(start, values[start:start + size]) for start in range(0, len(values), size)] or [(0, values)]


@dataclass
class GridPage:
    """One grid image to draw: its title, column and row labels, and which table row sits in each place."""

    key: str  # the page's values on the further dimensions (+ which part of a long axis): equal across runs
    title: str
    columns: list[str | None]
    rows: list[str | None]
    cells: dict[tuple[int, int], int]  # (column, row) -> index into the results table


def _cell_px(run) -> int:
    ok = run.table[run.table["status"] == "ok"]
    native = max(Image.open(run.out_dir / ok["image"].iloc[0]).size) if len(ok) else CELL_PX[0]
    return min(max(native, CELL_PX[0]), CELL_PX[1])


def grid_layout(run, cell: int | None = None) -> list[GridPage]:
    """Lay the cells out like the X/Y/Z plot: X and Y are the first two dimensions, one page per value of the
    others; an axis too long for MAX_GRID_PX a side continues on further pages. Every cell has one place."""
    dims, keys = grid_axes(run)
    cell = cell or _cell_px(run)
    x = keys["dim0"] if dims else pd.Series([""] * len(keys), index=keys.index, dtype=object)
    y = keys["dim1"] if len(dims) > 1 else None
    xs, ys = _unique(x), _unique(y)
    per_x = max(1, (MAX_GRID_PX - (LABEL_W if y is not None else 0)) // (cell + GAP))
    per_y = max(1, (MAX_GRID_PX - TOP_PX) // (cell + GAP))
    page_cols = [f"dim{i}" for i in range(2, len(dims))]
    combos = list(dict.fromkeys(zip(*(keys[c] for c in page_cols)))) if page_cols else [()]
    pages = []
    for combo in combos:
        on_page = np.ones(len(keys), bool)
        for col, value in zip(page_cols, combo):
            on_page &= (keys[col] == value).to_numpy()
        for y0, ypart in _chunks(ys, per_y):
            for x0, xpart in _chunks(xs, per_x):
                key = ", ".join(combo)
                if len(xpart) < len(xs):
                    key += f" [columns {x0 + 1}-{x0 + len(xpart)} of {len(xs)}]"
                if len(ypart) < len(ys):
                    key += f" [rows {y0 + 1}-{y0 + len(ypart)} of {len(ys)}]"
                col_of = {v: i for i, v in enumerate(xpart)}
                row_of = {v: i for i, v in enumerate(ypart)}
                cells = {}
                for idx in np.flatnonzero(on_page):
                    xv, yv = x.iloc[idx], None if y is None else y.iloc[idx]
                    if xv in col_of and yv in row_of:
                        cells[(col_of[xv], row_of[yv])] = int(idx)
                title = key.strip() or str(run.manifest["name"])
                pages.append(GridPage(key, title, [v if dims else None for v in xpart], ypart, cells))
    return pages


def grid_pages(run) -> list[tuple[GridPage, Image.Image]]:
    """The grid images of a run, labelled "name: value" on both axes: (page, image) per page."""
    cell = _cell_px(run)
    out = []
    for page in grid_layout(run, cell):
        left = LABEL_W if page.rows != [None] else 0
        canvas = Image.new("RGB", (left + len(page.columns) * (cell + GAP), TOP_PX + len(page.rows) * (cell + GAP)),
                           "white")
        draw = ImageDraw.Draw(canvas)
        _text(draw, (4, 2), _wrap(draw, page.title, canvas.width - 8, 2))
        for ci, label in enumerate(page.columns):
            if label is not None:
                _text(draw, (left + ci * (cell + GAP) + 2, LINE_H * 2), _wrap(draw, label, cell, 4))
        for ri, label in enumerate(page.rows):
            top = TOP_PX + ri * (cell + GAP)
            if label is not None:
                lines = _wrap(draw, label, LABEL_W - 8, max(1, cell // LINE_H))
                _text(draw, (4, top + (cell - len(lines) * LINE_H) // 2), lines)
            for ci in range(len(page.columns)):
                idx = page.cells.get((ci, ri))
                row = run.table.iloc[idx] if idx is not None else None
                canvas.paste(_cell_image(run.out_dir, row, cell), (left + ci * (cell + GAP), top))
        out.append((page, canvas))
    return out


def _text(draw: ImageDraw.ImageDraw, at: tuple[int, int], lines: list[str]) -> None:
    for n, line in enumerate(lines):
        draw.text((at[0], at[1] + n * LINE_H), line, fill="black", font=_font())


def _png(fig_or_img) -> bytes:
    if isinstance(fig_or_img, Image.Image):
        return image_bytes(fig_or_img)
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig_or_img.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig_or_img)
    return buf.getvalue()


def heatmaps(run, metrics: tuple[str, ...] = METRICS) -> list:
    """A matplotlib heatmap per metric over the two main grid dimensions (mean over everything else)."""
    import matplotlib.pyplot as plt

    dims, keys = grid_axes(run, named=False)
    ok = run.table["status"] == "ok"
    figs = []
    if not dims or not ok.any():
        return figs
    frame = keys[ok].join(run.table.loc[ok, [m for m in metrics if m in run.table]])
    x, y = "dim0", "dim1" if len(dims) > 1 else None
    for metric in metrics:
        if metric not in frame or frame[metric].isna().all():
            continue
        pivot = frame.pivot_table(index=y, columns=x, values=metric, aggfunc="mean", sort=False) if y else \
            frame.groupby(x, sort=False)[metric].mean().to_frame().T
        values = pivot.to_numpy(dtype=float)
        fig, ax = plt.subplots(figsize=(min(16, 2.5 + 0.9 * values.shape[1]), min(12, 1.5 + 0.5 * values.shape[0])))
        im = ax.imshow(values, cmap="viridis", aspect="auto")
        ax.set_xticks(range(values.shape[1]), [str(v)[:30] for v in pivot.columns], rotation=30, ha="right")
        ax.set_yticks(range(values.shape[0]), [str(v)[:30] for v in pivot.index] if y else [metric])
        ax.set_xlabel(" / ".join(dims[0]))
        ax.set_ylabel(" / ".join(dims[1]) if y else "")
        if values.size <= 400:  # numbers stay readable; beyond that the colours carry it
            for (i, j), v in np.ndenumerate(values):
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

    keep = ["cell_id", "status", "error", *varying_params(table), "references", "retrieved", *METRICS, "seconds",
            "peak_mem_mb"]
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
    pages = grid_pages(run)
    for n, (page, img) in enumerate(pages):
        data = _png(img)
        atomic_write_bytes(out / f"grid_{n:02d}.png", data)
        parts.append(f"<h3>{html.escape(page.title)}</h3>{_img_tag(data, page.title)}")
    for stale in out.glob("grid_*.png"):
        # Pages a previous report had beyond this one's count would otherwise pass for current ones.
        if stale.stem[5:].isdigit() and int(stale.stem[5:]) >= len(pages):
            stale.unlink()
    if failed:
        parts.append("<h2>Failed cells</h2>" + _html_table(table.loc[table["status"] != "ok", _result_columns(table)]))
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
    return atomic_write_bytes(out / "report.html", _page(f"sdrag sweep {run.manifest['name']}", "\n".join(parts)))


def _page(title: str, body: str) -> bytes:
    """A self-contained HTML page: inline style, images as data URIs, nothing fetched."""
    return ("<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>"
            "body{font-family:sans-serif;margin:1.5em} table{border-collapse:collapse;font-size:12px}"
            "td,th{border:1px solid #ccc;padding:2px 4px;vertical-align:top} img{max-width:100%}</style></head>"
            f"<body>{body}</body></html>").encode()


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
            cells = "".join(f"<td>{_img_tag(_png(p[key][1]), p[key][0]) if key in p else 'not in this run'}</td>"
                            for p in pages)
            rows.append(f"<tr><th>{html.escape(key or 'all cells')}</th>{cells}</tr>")
        folders = "".join(f"<li>[{i}] {html.escape(str(r.out_dir))}</li>" for i, r in enumerate(runs))
        body = (f"<h1>Sweep comparison</h1><ul>{folders}</ul><h2>Metrics (deltas to run 0)</h2>"
                + _html_table(merged) + f"<h2>Grids</h2><table><tr><th></th>{heads}</tr>" + "".join(rows)
                + "</table>")
        atomic_write_bytes(Path(out_path), _page("sdrag comparison", body))
    return merged
