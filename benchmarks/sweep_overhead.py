"""Sweep engine vs a naive loop: the same cells, (a) one raw diffusers call per cell recomputing every stage,
(b) `run_sweep` with metrics off (stage caching + seed batching). Asserts the images match, prints b/a last.

    python benchmarks/sweep_overhead.py [--size 128] [--steps 8] [--batch 4]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import sdrag
from sdrag.generation.canny import edges_of
from sdrag.images import fit_image, load_image
from sdrag.runs.spec import load_spec, validate
from sdrag.sweeps.engine import run_sweep

REPO = Path(__file__).resolve().parent.parent


def spec_for(size: int, steps: int, batch: int) -> dict:
    """24 cells: Canny pair x ControlNet scale x IP-Adapter scale x 3 seeds."""
    return {"name": "overhead", "batch": batch, "metrics": False,
            "base": {"prompt": "a neon glowing city street at night", "steps": steps, "size": size},
            "axes": {"canny": [[50, 150], [100, 200]], "controlnet_scale": [0.5, 1.5],
                     "ip_adapter_scale": [0.4, 0.8], "seed": [0, 1, 2]}}


def naive(wb, cells) -> list[np.ndarray]:
    """What a plain script does: every stage recomputed for every cell, one image per pipeline call."""
    from diffusers import UniPCMultistepScheduler

    pipe = wb.generator.pipe
    pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config)  # sdrag's default scheduler
    images = []
    for p in cells:
        sketch = load_image(sdrag.SAMPLE_SKETCH)
        edges = edges_of(fit_image(sketch, p.width_height, p.fit), *p.canny)
        style = wb.library.search(p.prompt, k=1)[0]
        pipe.set_ip_adapter_scale(p.ip_adapter_scale)
        out = pipe(prompt=p.prompt, negative_prompt=p.negative_prompt or None, image=edges,
                   ip_adapter_image=style.image(), num_inference_steps=p.steps, guidance_scale=p.guidance,
                   controlnet_conditioning_scale=p.controlnet_scale, control_guidance_start=p.control_start,
                   control_guidance_end=p.control_end, width=p.width_height[0], height=p.width_height[1],
                   generator=torch.Generator("cpu").manual_seed(p.seed))
        images.append(np.asarray(out.images[0], dtype=np.int16))
    return images


def main(argv: list[str] | None = None) -> int:
    """Time both ways on the tiny preset and print the ratio."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4)
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="sdrag-overhead-"))
    wb = sdrag.Workbench.from_preset("tiny", library_dir=work / "library").load()
    wb.library.ingest(REPO / "styles", progress=False)
    spec = spec_for(args.size, args.steps, args.batch)
    cells = validate(load_spec(spec))
    naive(wb, cells[:2])  # warm-up, so neither side pays first-call costs
    t = time.perf_counter()
    reference = naive(wb, cells)
    a = time.perf_counter() - t
    wb.cache.clear()
    t = time.perf_counter()
    run = run_sweep(spec, out_dir=work / "run", workbench=wb, progress=False, report=False)
    b = time.perf_counter() - t
    from PIL import Image

    diffs = [np.abs(np.asarray(Image.open(run.out_dir / row["image"]), dtype=np.int16) - ref).max()
             for ref, (_, row) in zip(reference, run.table.iterrows())]
    assert len(diffs) == len(cells) >= 24, "both ways must produce every cell"
    assert max(diffs) <= 1, f"outputs differ by up to {max(diffs)} grey levels"
    print(f"{len(cells)} cells, {args.size}px, {args.steps} steps, batch {args.batch}: naive {a:.2f} s, "
          f"sweep {b:.2f} s; max pixel difference {max(diffs)} (seed batching), cache {wb.cache.stats()}")
    print(f"{b / a:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
