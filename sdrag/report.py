"""Old import path of the reports, kept for notebooks and scripts that import it: they live in sdrag.reports."""

from .reports.compare import compare_runs
from .reports.grids import GridPage, grid_axes, grid_layout, grid_pages
from .reports.html import write_report
from .reports.plots import heatmaps, pareto
from .runs.folder import load_run

__all__ = ["GridPage", "compare_runs", "grid_axes", "grid_layout", "grid_pages", "heatmaps", "load_run", "pareto",
           "write_report"]
