"""Comparing sweeps: metric means per run on the parameter combinations they share, and one explorer page
with the runs side by side (a "run" axis, per-cell difference pictures and metric deltas)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..runs.folder import OK, load_run, varying_params
from ..runs.metrics import METRICS
from ..runs.spec import SweepError
from .explore import axis_label, sort_key


def compare_runs(run_dirs, out_path: str | Path | None = None, *, standalone: bool = False) -> pd.DataFrame:
    """Compare sweeps on the parameter combinations they share: metric means per run and deltas to the first,
    rows ordered by value (numbers as numbers).

    With `out_path`, also write an explorer page with the runs side by side (`standalone`: one file holding
    every image).
    """
    runs = [load_run(d) for d in run_dirs]
    if len(runs) < 2:
        raise SweepError("compare_runs needs two or more run folders.")
    keys = sorted({c for r in runs for c in varying_params(r.table) if c != "seed"})
    merged = None
    for i, run in enumerate(runs):
        ok = run.table[run.table["status"] == OK].copy()
        for k in keys:
            ok[k] = ok[k].map(_text) if k in ok else ""
        means = ok.groupby(keys or ["prompt"], sort=False)[list(METRICS)].mean()
        means.columns = [f"{c}[{i}]" for c in means.columns]
        merged = means if merged is None else merged.join(means, how="outer")
    for metric in METRICS:
        for i in range(1, len(runs)):
            merged[f"{metric} delta[{i}-0]"] = merged[f"{metric}[{i}]"] - merged[f"{metric}[0]"]
    merged = merged.reset_index()
    if keys:
        order = sorted(range(len(merged)), key=lambda n: tuple(sort_key(merged[k].iloc[n]) for k in keys))
        merged = merged.iloc[order].reset_index(drop=True)
    if out_path is not None:
        from .explorer import write_explorer

        write_explorer(runs, Path(out_path), title="sdrag comparison", standalone=standalone)
    return merged


def _text(value) -> str:
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else axis_label(value)


def identical(comparison: pd.DataFrame, tolerance: float = 0.0) -> bool:
    """Whether every metric delta of a `compare_runs` table is zero (within `tolerance`) on shared cells."""
    deltas = comparison[[c for c in comparison if " delta[" in c]].to_numpy(dtype=float)
    shared = deltas[np.isfinite(deltas)]
    return bool(shared.size) and bool((np.abs(shared) <= tolerance).all())
