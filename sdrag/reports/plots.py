"""Metric plots of a sweep: a heatmap per metric over the two main grid dimensions, and style vs structure."""

from __future__ import annotations

import numpy as np

from ..runs.folder import OK, SweepRun
from ..runs.metrics import METRICS
from .grids import grid_axes


def heatmaps(run: SweepRun, metrics: tuple[str, ...] = METRICS) -> list:
    """A matplotlib heatmap per metric over the two main grid dimensions (mean over everything else)."""
    import matplotlib.pyplot as plt

    dims, keys = grid_axes(run, named=False)
    ok = run.table["status"] == OK
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


def pareto(run: SweepRun):
    """Scatter of style similarity against structure fidelity, with the Pareto front drawn."""
    import matplotlib.pyplot as plt

    ok = run.table[run.table["status"] == OK].dropna(subset=["edge_f1", "style_similarity"])
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
