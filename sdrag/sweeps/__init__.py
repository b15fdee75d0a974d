"""Sweeps: running a spec's cells into a run folder (crash-safe, resumable, batched by seed), then its report;
and reproducing one cell from its folder alone. A new engine (Ray, say) goes here beside `engine.py`."""
