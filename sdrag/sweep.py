"""Old import path of the sweep functions, kept for notebooks and scripts that import it: they live in
sdrag.runs (spec, run folder) and sdrag.sweeps (running, reproducing)."""

from .runs.folder import SweepRun
from .runs.spec import SweepError, load_spec, validate
from .sweeps.engine import SweepFailed, run_sweep
from .sweeps.reproduce import reproduce

__all__ = ["SweepError", "SweepFailed", "SweepRun", "load_spec", "reproduce", "run_sweep", "validate"]
