"""The RAG chain in one call: retrieve a style, Canny the sketch, generate — and the Result it returns."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .cache import StageCache
from .canny import edges_of
from .errors import MemoryExhaustedError, ParameterError
from .files import atomic_save_image, atomic_write_bytes, atomic_write_json, safe_name
from .generate import Generator, MemoryOptions, Progress
from .hub import plan
from .images import ImageLike, fit_image, load_image
from .library import Style, StyleLibrary
from .params import Params, layer_scales
from .presets import ModelSpec, get_spec, pick_device, pick_dtype
from .store import library_location
from .tiny import TINY_VERSION, cache_dir


@dataclass
class Result:
    """One run of the chain: images, the edge map, what was retrieved, the resolved parameters and timings."""

    images: list[Image.Image]
    edges: Image.Image
    sketch: Image.Image
    hits: list[Style]
    references: list[tuple[Style, float]]
    params: dict
    timings: dict[str, float]
    info: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def image(self) -> Image.Image:
        """The first generated image."""
        return self.images[0]

    def __repr__(self) -> str:
        style = self.style
        picked = repr(style.name if style else None)
        if style is not None and style.score is not None:
            picked += f" ({style.score:.3f})"
        w, h = self.image.size
        return (f"Result({len(self.images)} image(s) {w}x{h}, seed {self.seed}, style {picked}, "
                f"{self.timings.get('total', 0):.2f}s)")

    @property
    def seed(self) -> int:
        """The seed of the first image."""
        seeds = self.params["seed"]
        return seeds[0] if isinstance(seeds, list) else seeds

    @property
    def style(self) -> Style | None:
        """The (first) style reference used."""
        return self.references[0][0] if self.references else None

    def panel(self):
        """Return a matplotlib Figure: sketch | edges | style | result."""
        import matplotlib.pyplot as plt

        style = self.style
        style_title = "style: (none)"
        if style is not None:
            score = f" ({style.score:.3f})" if style.score is not None else ""
            more = f" +{len(self.references) - 1} blended" if len(self.references) > 1 else ""
            style_title = f"style: {style.name}{score}{more}"
        panes = [(self.sketch, "sketch"), (self.edges, f"edges {tuple(self.params['canny'])}"),
                 (style.image() if style else Image.new("RGB", (64, 64), "white"), style_title),
                 (self.image, f"result (seed {self.seed})")]
        fig, axes = plt.subplots(1, 4, figsize=(13, 3.6))
        for ax, (img, title) in zip(axes, panes):
            ax.imshow(img)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
        fig.suptitle(self.params["prompt"][:120], fontsize=10)
        fig.tight_layout()
        return fig

    def to_dict(self) -> dict:
        """The run's record (JSON-serialisable): params, hits, references, timings, info."""
        return {"params": self.params, "notes": self.notes, "hits": [h.to_dict() for h in self.hits],
                "references": [{"id": s.id, "name": s.name, "weight": w} for s, w in self.references],
                "timings": self.timings, "info": self.info}

    def save(self, folder: str | Path, name: str | None = None) -> dict[str, Path]:
        """Write image(s), edge map, panel and a JSON record into `folder` (atomically); return the paths."""
        import matplotlib.pyplot as plt

        folder = Path(folder)
        digest = hashlib.sha256(json.dumps(self.params, sort_keys=True).encode()).hexdigest()[:10]
        stem = safe_name(name, "result name") if name else f"result-{self.seed}-{digest}"
        paths = {"image": atomic_save_image(self.image, folder / f"{stem}.png"),
                 "edges": atomic_save_image(self.edges, folder / f"{stem}_edges.png")}
        for i, img in enumerate(self.images[1:], start=1):
            paths[f"image_{i}"] = atomic_save_image(img, folder / f"{stem}_{i}.png")
        fig = self.panel()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)
        paths["panel"] = atomic_write_bytes(folder / f"{stem}_panel.png", buf.getvalue())
        paths["record"] = atomic_write_json(folder / f"{stem}.json", self.to_dict())
        return paths


class Workbench:
    """Models, style library and the RAG chain behind one object; models load on first use."""

    def __init__(self, spec: ModelSpec, library_dir: str | Path | None = None, device: str | None = None,
                 dtype: Any = None, memory: MemoryOptions | dict | None = None):
        """Prefer `Workbench.from_preset`. Checks that every weight can be had before returning."""
        self.spec = spec
        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device, dtype)
        self.memory = MemoryOptions.from_any(memory)
        # Decides every file each component loads, and fails fast here if any cannot be had.
        self.plan = plan(spec, self.dtype)
        # A folder or a chroma server URL; SDRAG_LIBRARY sets it for every workbench that is not given one.
        self.library_dir = library_location(library_dir or os.environ.get("SDRAG_LIBRARY")
                                            or cache_dir() / "libraries" / spec.preset)
        self._embedder = None
        self._library: StyleLibrary | None = None
        self._generator: Generator | None = None
        # Interactive reruns and sweeps reuse edge maps and embeddings that did not change.
        self.cache = StageCache()

    def __repr__(self) -> str:
        loaded = "loaded" if self._generator is not None else "not loaded yet"
        return (f"Workbench(preset={self.spec.preset!r}, device={self.device.type}, "
                f"dtype={str(self.dtype).split('.')[-1]}, library={str(self.library_dir)!r}, models {loaded})")

    @classmethod
    def from_preset(cls, preset: str = "tiny", library_dir: str | Path | None = None, *, device: str | None = None,
                    dtype: Any = None, memory: MemoryOptions | dict | None = None, **overrides: Any) -> Workbench:
        """Create a workbench for preset 'sd15' (hub weights) or 'tiny' (random weights, offline).

        `overrides` replace model sources (base, controlnet, ip_adapter, clip, ip_adapter_weight, ...) with
        hub ids or local folders; `controlnet='canny-v10'` selects the original v1.0 Canny ControlNet.
        """
        return cls(get_spec(preset, **overrides), library_dir=library_dir, device=device, dtype=dtype,
                   memory=memory)

    # -- lazily loaded parts ----------------------------------------------------------------------------

    @property
    def embedder(self):
        """The CLIP embedder used for retrieval."""
        if self._embedder is None:
            from .embed import ClipEmbedder

            self._embedder = ClipEmbedder(self.plan["clip"], self.device, self.dtype)
        return self._embedder

    @property
    def embedder_name(self) -> str:
        """Which embedder built this workbench's vectors (tiny weights are versioned, not located)."""
        if self.spec.preset in ("tiny", "sd15-random") and "clip" not in self._overridden():
            return f"{self.spec.preset}-v{TINY_VERSION}"
        revision = self.spec.revision("clip")
        # Another revision may hold other weights: its vectors must not be mixed with these.
        return f"{self.spec.clip}@{revision}" if revision else self.spec.clip

    def _overridden(self) -> set[str]:
        base = get_spec(self.spec.preset)
        return {k for k, v in self.spec.to_dict().items() if base.to_dict()[k] != v}

    @property
    def library(self) -> StyleLibrary:
        """The persistent style library."""
        if self._library is None:
            self._library = StyleLibrary(self.library_dir, lambda: self.embedder, self.embedder_name)
        return self._library

    @property
    def generator(self) -> Generator:
        """The loaded pipeline (loads on first access)."""
        if self._generator is None:
            self._generator = Generator(self.spec, self.device, self.dtype, self.plan, self.memory)
        return self._generator

    def load(self) -> Workbench:
        """Load every model now instead of on first use."""
        _ = self.generator, self.embedder
        return self

    def weight_hashes(self) -> dict[str, list[dict]]:
        """sha256 of every weight file the models load (loading them first if a download is still due)."""
        from .provenance import weight_hashes

        if any(part.path(rel) is None for part in self.plan.values() for rel in part.weights):
            self.load()
        return weight_hashes(self.plan)

    def unload(self) -> None:
        """Drop the loaded models (they reload on next use) and return their GPU memory."""
        import gc

        import torch

        self._generator = self._embedder = None
        self.cache.clear()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # -- the chain ----------------------------------------------------------------------------------------

    def resolve_style(self, prompt: str, p: Params) -> tuple[list[Style], list[tuple[Style, float]]]:
        """Return (hits, references with blend weights) for resolved params: retrieval or a fixed choice."""
        if p.style is None:
            if not prompt.strip():
                raise ParameterError("Retrieval needs a prompt. Fix: give a prompt, or pick style='<id or name>'.")
            hits = self.library.search(prompt, k=p.top_k, tags=p.tags)
            return hits, list(zip(hits, blend_weights([h.score for h in hits])))
        chosen = [(p.style, 1.0)] if isinstance(p.style, str) else p.style
        styles = [self.library.get(key) for key, _ in chosen]
        if prompt.strip():
            sims = self.library.vectors([s.id for s in styles]) @ self.embedder.embed_text([prompt])[0]
            for s, sim in zip(styles, sims):
                s.score = float(sim)
        total = sum(w for _, w in chosen)
        return styles, [(s, w / total) for s, (_, w) in zip(styles, chosen)]

    def edges(self, sketch: Image.Image, p: Params) -> tuple[Image.Image, Image.Image]:
        """Return (fitted sketch, Canny edge map) for resolved params, cached per sketch and settings."""
        key = (hashlib.sha256(sketch.tobytes()).hexdigest(), sketch.size, p.width_height, p.fit, p.canny)

        def compute() -> tuple[Image.Image, Image.Image]:
            fitted = fit_image(sketch, p.width_height, p.fit)
            return fitted, edges_of(fitted, *p.canny)

        return self.cache.get("canny", key, compute)

    def style_embeds(self, refs: Sequence[tuple[Style, float]]):
        """Return IP-Adapter embeddings for weighted style references, cached per (content, weight) set."""
        key = tuple((s.id, s.sha256, round(w, 12)) for s, w in refs)
        return self.cache.get("style", key,
                              lambda: self.generator.style_embeds([s.image() for s, _ in refs], [w for _, w in refs]))

    def run(self, sketch: ImageLike, prompt: str = "", *, params: Params | None = None,
            progress: Progress | bool | None = None, **kwargs: Any) -> Result:
        """Run the chain: retrieve a style for `prompt`, Canny the `sketch`, generate.

        Keyword arguments are Params fields (steps, guidance, controlnet_scale, ip_adapter_scale, canny,
        seed, size, style, top_k, ...); `params` gives a whole Params object to start from. `progress` is
        a callable(step, total) (return False to stop) or True for a tqdm bar.
        """
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        if isinstance(params, dict):
            params = Params.from_dict(params)
        elif params is not None and not isinstance(params, Params):
            raise ParameterError(f"params must be a Params object or a dict, got {type(params).__name__}."
                                 " Fix: pass sdrag.Params(...) or keyword arguments.")
        if progress is not None and not isinstance(progress, bool) and not callable(progress):
            raise ParameterError(f"progress must be a callable(step, total), True or None; got {progress!r}.")
        p = (params or Params()).update(**kwargs, **({"prompt": prompt} if prompt else {})).resolved()
        image = load_image(sketch)
        if self._generator is None:
            t = time.perf_counter()
            _ = self.generator
            timings["load"] = time.perf_counter() - t
        t = time.perf_counter()
        hits, refs = self.resolve_style(p.prompt, p)
        timings["retrieve"] = time.perf_counter() - t
        t = time.perf_counter()
        fitted, edges = self.edges(image, p)
        timings["canny"] = time.perf_counter() - t
        t = time.perf_counter()
        gen = self.generator
        style = self.style_embeds(refs)
        prompt_embeds = self.cache.get("prompt", (p.prompt, p.negative_prompt),
                                       lambda: gen.encode_prompt(p.prompt, p.negative_prompt))
        timings["embed"] = time.perf_counter() - t
        t = time.perf_counter()
        with _progress_bar(progress, p.steps) as callback:
            images, fallback = self._generate(edges, p, style, prompt_embeds, callback)
        timings["generate"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - t0
        # The recorded style is what was used, so Params.from_dict(res.params) reproduces the image.
        record = p.update(style=[(s.id, w) for s, w in refs]).to_dict()
        info = {**gen.info(), "retrieved": p.style is None, "ip_adapter_layers": layer_scales(p.ip_adapter_scale),
                "oom_fallback": fallback}
        notes = self._notes(p) + [f"Out of GPU memory: retried with {step}; it stays on for this workbench."
                                  for step in fallback]
        return Result(images=images, edges=edges, sketch=fitted, hits=hits, references=refs, params=record,
                      timings=timings, info=info, notes=notes)

    def _generate(self, edges: Image.Image, p: Params, style, prompt_embeds, progress) -> tuple[list, list[str]]:
        """Generate; on CUDA out-of-memory retry once per rung of OOM_LADDER. Returns (images, rungs used)."""
        import torch

        used: list[str] = []
        for rung in (None, *OOM_LADDER):
            if rung is not None:
                added = self.generator.use_memory(rung)
                if not any(asdict(added).values()):
                    continue  # already on: retrying the same way would fail the same way
                used.append("+".join(k for k, v in asdict(added).items() if v))
            try:
                return self.generator.generate(edges, p, style=style, prompt_embeds=prompt_embeds,
                                               progress=progress), used
            except torch.cuda.OutOfMemoryError as exc:
                error = exc
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
        raise MemoryExhaustedError(
            f"Out of GPU memory at {p.width_height[0]}x{p.width_height[1]} with {len(p.seeds)} image(s) per call,"
            f" even with attention slicing, VAE tiling and CPU offload ({str(error).splitlines()[0]}). Fix: lower"
            " size, or give fewer seeds per call (a sweep's batch)."
        ) from None

    def _notes(self, p: Params) -> list[str]:
        """Things the user should know about how their parameters were read."""
        notes = []
        tok = self.generator.pipe.tokenizer
        for name in ("prompt", "negative_prompt"):
            # Counting only: verbose=False keeps the tokenizer from warning of "indexing errors" here.
            n = len(tok(getattr(p, name), verbose=False).input_ids)
            if n > tok.model_max_length:
                notes.append(f"{name} has {n} tokens; CLIP reads only the first {tok.model_max_length} (the rest"
                             " is ignored). Shorten it to use all of it.")
        return notes


# What a generation that ran out of GPU memory retries with, in order (each rung once).
OOM_LADDER = (MemoryOptions(attention_slicing=True, vae_tiling=True), MemoryOptions(cpu_offload=True))


@contextlib.contextmanager
def _progress_bar(progress: Progress | bool | None, steps: int):
    """Yield the per-step callback: the caller's own, a tqdm bar for True, or None."""
    if progress is not True:
        yield progress or None
        return
    from tqdm.auto import tqdm

    with tqdm(total=steps, desc="generating", unit="step") as bar:
        yield lambda step, total: bar.update(step - bar.n)


def blend_weights(scores: Sequence[float]) -> list[float]:
    """Weights for a top-k blend: proportional to the (non-negative) similarity scores."""
    s = np.clip(np.asarray(scores, dtype=float), 0, None)
    return [float(x) for x in s / s.sum()] if s.sum() > 0 else [1 / len(s)] * len(s)
