"""Scale-out: the same tiny sweep with the local engine, then on a local Ray with 1 and 2 workers.

Each run starts cold (the local engine loads its models inside run_sweep, each Ray worker imports torch and
diffusers and loads its own), on a Ray that is already up (as a cluster would be). Prints each run's wall time,
what of it was not generation (wall minus the busiest worker's busy time: starting workers, retrieval, writing),
the images identical to the local run's, the per-worker figures, and the time ratios (Ray / local) last, with the
ratio of generation alone (cells per second of the busiest worker's busy time, workers summed).

    python benchmarks/sweep_scaleout.py [--size 64] [--steps 8] [--batch 2] [--seeds 24]   # 8 cells per seed
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import sdrag
from sdrag.sweeps.engine import run_sweep

REPO = Path(__file__).resolve().parent.parent


def spec_for(size: int, steps: int, batch: int, seeds: int, library: Path) -> dict:
    """Canny pair x ControlNet scale x IP-Adapter scale x `seeds` seeds (48 cells with 6 seeds)."""
    return {"name": "scaleout", "batch": batch, "metrics": False, "library": str(library),
            "base": {"prompt": "a neon glowing city street at night", "steps": steps, "size": size},
            "axes": {"canny": [[50, 150], [100, 200]], "controlnet_scale": [0.5, 1.5],
                     "ip_adapter_scale": [0.4, 0.8], "seed": list(range(seeds))}}


def timed(spec: dict, out: Path, **engine) -> tuple[float, sdrag.SweepRun]:
    """Wall time of one cold run_sweep (a new driver workbench, so the local engine loads its models inside)."""
    start = time.perf_counter()
    run = run_sweep(spec, out_dir=out, progress=False, report=False, **engine)
    return time.perf_counter() - start, run


def main(argv: list[str] | None = None) -> int:
    """Run the three ways and print the ratios."""
    import ray
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=24)
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="sdrag-scaleout-"))
    sdrag.Workbench.from_preset("tiny", library_dir=work / "library").library.ingest(REPO / "styles", progress=False)
    spec = spec_for(args.size, args.steps, args.batch, args.seeds, work / "library")
    print(f"{platform.node()}: {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads),"
          f" ray {ray.__version__}; {args.size}px, {args.steps} steps, batch {args.batch}")
    local_s, local = timed(spec, work / "local")
    cells = len(local.table)
    local_busy = local.workers()["busy_s"].max()
    print(f"local: {local_s:.1f} s for {cells} cells ({cells / local_s:.2f} cells/s);"
          f" {local_s - local_busy:.1f} s not generating")
    started = time.perf_counter()
    ray.init(include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    print(f"ray.init: {time.perf_counter() - started:.1f} s (not counted below)")
    ratios = []
    try:
        for workers in (1, 2):
            seconds, run = timed(spec, work / f"ray{workers}", engine="ray", workers=workers)
            same = (run.table["image_sha256"].values == local.table["image_sha256"].values).sum()
            figures = run.workers()
            print(f"ray, {workers} worker(s): {seconds:.1f} s ({cells / seconds:.2f} cells/s);"
                  f" {seconds - figures['busy_s'].max():.1f} s not generating; {same} of {cells} images identical"
                  " to local's")
            print(figures[["worker", "threads", "batches", "cells", "busy_s", "cells_per_s"]].to_string(index=False))
            ratios.append(f"ray {workers} worker(s) / local {seconds / local_s:.2f} (generation alone"
                          f" {figures['busy_s'].max() / local_busy:.2f})")
    finally:
        ray.shutdown()
    print("ratios: " + "; ".join(ratios))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
