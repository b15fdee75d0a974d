"""Metric plots of a sweep: a heatmap per metric over the two main grid dimensions, and style vs structure.

Axis values are user text (prompts, style names, spec values): every text is drawn as plain characters
(`PLAIN_TEXT`, `plain_text_figures`), never as mathtext or LaTeX.
"""

from __future__ import annotations

import numpy as np

from ..plotting import PLAIN_TEXT, plain_text_figures
from ..runs.folder import OK, SweepRun
from ..runs.metrics import METRICS
from ..runs.spec import SweepError
from .grids import grid_axes


def heatmaps(run: SweepRun, metrics: tuple[str, ...] = METRICS, x: str | None = None, y: str | None = None) -> list:
    """A matplotlib heatmap per metric over two grid dimensions (mean over everything else): the first two, or
    the ones named `x` and `y` (a dimension's name is its parameters joined by " + ", e.g. "ip_adapter_scale")."""
    dims, keys = grid_axes(run, named=False)
    ok = run.table["status"] == OK
    figs = []
    if not dims or not ok.any():
        return figs
    names = [" + ".join(d) for d in dims]
    for wanted in (x, y):
        if wanted is not None and wanted not in names:
            raise SweepError(f"{wanted!r} is not a dimension of this run. Fix: use one of {', '.join(names)}.")
    frame = keys[ok].join(run.table.loc[ok, [m for m in metrics if m in run.table]])
    x = f"dim{names.index(x)}" if x else "dim0"
    y = f"dim{names.index(y)}" if y else ("dim1" if len(dims) > 1 and x != "dim1" else None)
    with plain_text_figures():
        for metric in metrics:
            if metric in frame and not frame[metric].isna().all():
                figs.append((metric, _heatmap(frame, metric, dims, x, y)))
    return figs


def _decimals(values: np.ndarray) -> int:
    """Enough decimals that the ends of the colour scale read differently (0.751 and 0.753, not 0.75 twice)."""
    finite = values[np.isfinite(values)]
    span = float(finite.max() - finite.min()) if finite.size else 0.0
    return min(8, max(2, int(np.ceil(-np.log10(span))) + 1)) if span > 0 else 2


def _heatmap(frame, metric: str, dims: list[list[str]], x: str, y: str | None):
    import matplotlib.pyplot as plt

    pivot = frame.pivot_table(index=y, columns=x, values=metric, aggfunc="mean", sort=False) if y else \
        frame.groupby(x, sort=False)[metric].mean().to_frame().T
    values = pivot.to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(min(16, 2.5 + 0.9 * values.shape[1]), min(12, 1.5 + 0.5 * values.shape[0])))
    im = ax.imshow(values, cmap="viridis", aspect="auto")
    ax.set_xticks(range(values.shape[1]), [str(v)[:30] for v in pivot.columns], rotation=30, ha="right",
                  **PLAIN_TEXT)
    ax.set_yticks(range(values.shape[0]), [str(v)[:30] for v in pivot.index] if y else [metric], **PLAIN_TEXT)
    ax.set_xlabel(" / ".join(dims[int(x[3:])]), **PLAIN_TEXT)
    ax.set_ylabel(" / ".join(dims[int(y[3:])]) if y else "", **PLAIN_TEXT)
    decimals = _decimals(values)
    if values.size <= 400:  # numbers stay readable; beyond that the colours carry it
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.{decimals}f}", ha="center", va="center", color="white", fontsize=8,
                        **PLAIN_TEXT)
    ax.set_title(f"{metric} (mean)", **PLAIN_TEXT)
    fig.colorbar(im, ax=ax, format=f"%.{decimals}f")
    return fig


def pareto(run: SweepRun):
    """Scatter of style similarity against structure fidelity, with the Pareto front drawn."""
    import matplotlib.pyplot as plt

    ok = run.table[run.table["status"] == OK].dropna(subset=["edge_f1", "style_similarity"])
    if ok.empty:
        return None
    pts = ok[["edge_f1", "style_similarity"]].to_numpy(dtype=float)
    front = [i for i, (a, b) in enumerate(pts)
             if not ((pts[:, 0] >= a) & (pts[:, 1] >= b) & ((pts[:, 0] > a) | (pts[:, 1] > b))).any()]
    with plain_text_figures():
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.scatter(pts[:, 0], pts[:, 1], s=18, alpha=0.6, label="cells")
        fp = pts[sorted(front, key=lambda i: pts[i, 0])]
        ax.plot(fp[:, 0], fp[:, 1], "r-o", ms=4, label="Pareto front")
        ax.set_xlabel("structure fidelity (edge F1)", **PLAIN_TEXT)
        ax.set_ylabel("style similarity (CLIP cosine)", **PLAIN_TEXT)
        legend = ax.legend(fontsize=8)
        for text in legend.get_texts():
            text.set(**PLAIN_TEXT)
    return fig
