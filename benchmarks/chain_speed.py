"""Time the RAG chain per denoising step and its peak memory, for docs/benchmarks.md.

On a GPU (the number the issue asks for):
    python benchmarks/chain_speed.py --preset sd15-random --size 512 --steps 20      # fp16 on CUDA
On this project's CPU machines (tiny weights, what CI can run):
    python benchmarks/chain_speed.py --preset tiny --size 256 --steps 20

`sd15-random` has SD1.5's full architecture (UNet 860M, ControlNet, VAE, CLIP-L text encoder, ViT-H
IP-Adapter image encoder, ViT-B/32 retrieval CLIP) with random weights, so its speed and memory are the real
model's while needing no download. The last line printed is a JSON record of the measurement.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

import sdrag

REPO = Path(__file__).resolve().parent.parent


def measure(preset: str, size: int, steps: int, runs: int, **workbench_options) -> dict:
    """Load the preset (with Workbench options: device, dtype, memory), warm up once, then time `runs`
    generations step by step."""
    t0 = time.perf_counter()
    wb = sdrag.Workbench.from_preset(preset, library_dir=Path(tempfile.mkdtemp()) / "lib", **workbench_options)
    memory = wb.memory.to_dict()
    wb.load()
    load_s = time.perf_counter() - t0
    wb.library.ingest(REPO / "styles")
    cuda = wb.device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    wb.run(sdrag.SAMPLE_SKETCH, "a neon city at night", steps=2, size=size)  # warm-up: kernels, caches
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    step_ms: list[float] = []
    totals: list[float] = []
    for seed in range(runs):
        marks = [time.perf_counter()]

        def on_step(step: int, total: int, marks: list[float] = marks) -> None:
            sync()
            marks.append(time.perf_counter())

        sync()
        res = wb.run(sdrag.SAMPLE_SKETCH, "a neon city at night", steps=steps, size=size, seed=seed,
                     progress=on_step)
        totals.append(res.timings["total"])
        # The first interval also holds prompt encoding and latent set-up; steps proper follow.
        step_ms += [1000 * (b - a) for a, b in zip(marks[1:], marks[2:])]
    record = {
        "preset": preset, "size": size, "steps": steps, "runs": runs, "device": str(wb.device),
        "dtype": str(wb.dtype).split(".")[-1], "memory": memory, "load_s": round(load_s, 2),
        "ms_per_step_median": round(statistics.median(step_ms), 1),
        "ms_per_step_p90": round(sorted(step_ms)[int(0.9 * (len(step_ms) - 1))], 1),
        "chain_s_median": round(statistics.median(totals), 3),
        "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
    }
    if cuda:
        record["gpu"] = torch.cuda.get_device_name(wb.device)
        record["peak_allocated_gib"] = round(torch.cuda.max_memory_allocated(wb.device) / 2**30, 2)
        record["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved(wb.device) / 2**30, 2)
    else:
        import resource

        record["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    return record


def main(argv: list[str] | None = None) -> int:
    """Parse options, measure, print a summary and the JSON record."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny", choices=["tiny", "sd15-random", "sd15"])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--memory", default="", help="comma list: attention_slicing,vae_tiling,cpu_offload")
    args = ap.parse_args(argv)
    memory = {name: True for name in args.memory.split(",") if name}
    record = measure(args.preset, args.size, args.steps, args.runs, device=args.device, dtype=args.dtype,
                     memory=memory)
    print(f"{record['preset']} {record['size']}px {record['steps']} steps on {record.get('gpu', record['cpu'])} "
          f"({record['dtype']}): {record['ms_per_step_median']} ms/step median, chain {record['chain_s_median']} s")
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
