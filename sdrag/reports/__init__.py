"""What a run folder is shown as: X/Y/Z image grids, metric plots, the self-contained HTML report, and the
comparison of several runs. Reads run folders through sdrag.runs only; never generates."""
