"""One unit of sweep work: a batch's inputs (`Job`), what generating it gives back (`Outcome`), and `do_job`.

The driver prepares jobs (it alone retrieves styles and writes the run folder); whoever holds a Workbench does them:
the local engine in its own process, a Ray worker on its GPU. Both call the same `do_job`, so a cell's image does
not depend on which engine made it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..files import image_bytes, pixels_sha256
from ..images import load_image
from ..retrieval.entries import Style

if TYPE_CHECKING:
    from PIL import Image

    from ..generation.params import ResolvedParams
    from ..generation.workbench import Workbench


@dataclass
class Job:
    """One batch to generate: cells equal but for seed (`chunk`, all regenerated), the ones to record (`missing`),
    the batch's parameters, its style references with blend weights, and the blended CLIP vector the style metric
    compares with (None when metrics are off)."""

    batch_no: int
    chunk: list[int]
    missing: list[int]
    params: ResolvedParams
    references: list[tuple[Style, float]]
    reference: np.ndarray | None = None

    @property
    def size(self) -> tuple[int, int]:
        """The output size: what a worker's compiled or cached state depends on, so jobs of one size stay together."""
        return self.params.width_height


@dataclass
class Outcome:
    """What generating a job gave: PNG bytes per chunk cell, or the error that stopped it."""

    error: str = ""
    images: list[bytes] = field(default_factory=list)
    edges_sha256: str = ""
    seconds: float = 0.0  # per image
    peak_mem_mb: float = 0.0
    memory: dict = field(default_factory=dict)
    metrics: dict[str, list[float]] = field(default_factory=dict)
    note: str = ""


@dataclass
class Shipped(Style):
    """A style whose image bytes travel with it, for a worker that cannot read the library's files."""

    data: bytes = field(default=b"", repr=False)

    @classmethod
    def of(cls, style: Style) -> Shipped:
        """`style` with its image file's bytes."""
        return cls(**asdict(style), data=style.image_bytes())

    def image(self) -> Image.Image:
        """Decode the shipped bytes."""
        return load_image(self.data)


def do_job(wb: Workbench, sketch: Image.Image, job: Job, tolerance: int | None) -> Outcome:
    """Generate one job's images with `wb` (and their metrics unless `tolerance` is None); errors come back."""
    import torch

    cuda = wb.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(wb.device)
    t0 = time.perf_counter()
    try:
        res = wb.run(sketch, params=job.params, references=job.references)
    except Exception as exc:  # noqa: BLE001 - one bad cell (a torch error, out of memory...) must not end a sweep
        return Outcome(error=f"{type(exc).__name__}: {exc}")
    seconds = (time.perf_counter() - t0) / len(job.chunk)
    peak = torch.cuda.max_memory_allocated(wb.device) / 2**20 if cuda else _rss_mb()
    metrics, note = {}, ""
    if tolerance is not None and job.reference is not None:
        try:
            metrics = cell_metrics(wb, job.params, res, job.reference, tolerance)
        except Exception as exc:  # noqa: BLE001 - the image is good; keep it and say why its metrics are empty
            note = f"metrics failed: {type(exc).__name__}: {exc}"
    return Outcome(images=[image_bytes(im) for im in res.images], edges_sha256=pixels_sha256(res.edges),
                   seconds=seconds, peak_mem_mb=peak, memory={**res.info["memory"],
                                                              "oom_fallback": res.info["oom_fallback"]},
                   metrics=metrics, note=note)


def cell_metrics(wb: Workbench, p: ResolvedParams, res: Any, reference: np.ndarray,
                 tolerance: int) -> dict[str, list[float]]:
    """Edge F1, style similarity (to the blended `reference` vector) and prompt alignment of a batch's images."""
    from ..runs.metrics import clip_metrics, structure_fidelity

    text = wb.cache.get("text", p.prompt, lambda: wb.embedder.embed_text([p.prompt])[0])
    style, prompt = clip_metrics(wb.embedder, res.images, reference, text)
    return {"style_similarity": style.tolist(), "prompt_alignment": prompt.tolist(),
            "edge_f1": [structure_fidelity(res.edges, img, p.canny, tolerance) for img in res.images]}


def _rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
