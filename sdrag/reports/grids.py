"""Grids of a sweep's images for papers, labelled like the X/Y/Z plot: X and Y are the first two dimensions (seeds
side by side within X), one page per value of the others."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from ..errors import SdragError
from ..runs.folder import OK, RunFolder, SweepRun
from ..runs.spec import grid_dims
from .explore import axis_label, param_value

# The guard: no grid image grows past this many pixels a side; more values spill onto further pages.
MAX_GRID_PX = 4096
CELL_PX = (96, 256)
GAP = 4
LINE_H = 16
LABEL_W = 170
TOP_PX = LINE_H * 6


def _key(row: dict, names: list[str], named: bool = True) -> str:
    """How one row reads on a grid dimension: 'name: value' per name (values only with named=False)."""
    return ", ".join(f"{n}: {axis_label(param_value(row, n))}" if named or len(names) > 1
                     else axis_label(param_value(row, n)) for n in names)


def grid_axes(run: SweepRun, named: bool = True) -> tuple[list[list[str]], pd.DataFrame]:
    """(dimensions, keys): the spec's grid dimensions and, per row of the table, its key on each of them."""
    dims = grid_dims(run.manifest["spec"])
    records = run.table.to_dict("records")
    keys = pd.DataFrame([[_key(r, d, named) for d in dims] for r in records], index=run.table.index,
                        columns=[f"dim{i}" for i in range(len(dims))], dtype=object)
    return dims, keys


def _unique(series: pd.Series | None) -> list:
    return [None] if series is None else list(dict.fromkeys(series.tolist()))


def _cell_image(folder: RunFolder, row: pd.Series | None, size: int) -> Image.Image:
    if row is not None and row["status"] == OK:
        try:
            img = Image.open(folder.cell_file(row["image"])).convert("RGB")
        except (OSError, SdragError, ValueError):  # gone or damaged since the row was checked
            return _tile("DAMAGED", size)
        scale = size / max(img.size)
        # Small images are enlarged without smoothing, so a 64 px cell still shows its pixels as they are.
        return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                          Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS)
    return _tile("FAILED" if row is not None else "MISSING", size)


def _tile(label: str, size: int) -> Image.Image:
    """A failed, missing or damaged cell is drawn as such, never left blank."""
    tile = Image.new("RGB", (size, size), (120, 20, 20))
    draw = ImageDraw.Draw(tile)
    draw.line((0, 0, size, size), fill="white", width=3)
    draw.line((0, size, size, 0), fill="white", width=3)
    draw.text((6, 6), label, fill="white", font=_font())
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


def _cell_px(run: SweepRun) -> int:
    ok = run.table[run.table["status"] == OK]
    try:
        native = max(Image.open(run.folder.cell_file(ok["image"].iloc[0])).size) if len(ok) else CELL_PX[0]
    except (OSError, SdragError, ValueError):
        native = CELL_PX[0]
    return min(max(native, CELL_PX[0]), CELL_PX[1])


def grid_layout(run: SweepRun, cell: int | None = None) -> list[GridPage]:
    """Lay the cells out like the X/Y/Z plot: X and Y are the first two dimensions, one page per value of the
    others; an axis too long for MAX_GRID_PX a side continues on further pages. Every cell has one place."""
    dims, keys = grid_axes(run)
    cell = cell or _cell_px(run)
    if len(dims) > 2 and dims[-1] == ["seed"]:
        # Seeds side by side: they share X with the first dimension instead of each taking pages of its own.
        keys["dim0"] = keys["dim0"] + " · " + keys[f"dim{len(dims) - 1}"]
        keys = keys.drop(columns=f"dim{len(dims) - 1}")
        dims = dims[:-1]
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


def grid_pages(run: SweepRun) -> list[tuple[GridPage, Image.Image]]:
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
                canvas.paste(_cell_image(run.folder, row, cell), (left + ci * (cell + GAP), top))
        out.append((page, canvas))
    return out


def _text(draw: ImageDraw.ImageDraw, at: tuple[int, int], lines: list[str]) -> None:
    for n, line in enumerate(lines):
        draw.text((at[0], at[1] + n * LINE_H), line, fill="black", font=_font())
