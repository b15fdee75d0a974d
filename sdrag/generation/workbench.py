"""The RAG chain in one call: retrieve a style, Canny the sketch, generate; models load on first use."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from PIL import Image

from ..errors import MemoryExhaustedError, ParameterError, StyleNotFoundError
from ..files import cache_root, pixels_sha256
from ..images import ImageLike, fit_image, load_image
from ..models.device import pick_device, pick_dtype
from ..models.plan import plan
from ..models.presets import ModelSpec, get_spec
from ..models.tiny import TINY_VERSION
from ..retrieval.store import library_location
from .cache import StageCache
from .canny import edges_of
from .ipscale import layer_scales
from .memory import OOM_LADDER, MemoryOptions
from .params import Params, ResolvedParams
from .result import Result

if TYPE_CHECKING:
    from ..retrieval.entries import Style
    from ..retrieval.library import StyleLibrary
    from .generator import Generator, Progress


class Control(NamedTuple):
    """A sketch fitted to the output size, and its Canny edge map (what ControlNet sees)."""

    sketch: Image.Image
    edges: Image.Image


class Workbench:
    """Models, style library and the RAG chain behind one object; models load on first use."""

    def __init__(self, sources: ModelSpec, library_dir: str | Path | None = None, device: str | None = None,
                 dtype: Any = None, memory: MemoryOptions | dict | None = None):
        """Prefer `Workbench.from_preset`. Checks that every weight can be had before returning."""
        self.sources = sources
        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device, dtype)
        # The memory savers in effect: this workbench owns them; an out-of-memory retry adds to them for good.
        self.memory = MemoryOptions.from_any(memory)
        self.memory.check(self.device)
        # Decides every file each component loads, and fails fast here if any cannot be had.
        self.plan = plan(sources, self.dtype)
        # A folder or a chroma server URL; SDRAG_LIBRARY sets it for every workbench that is not given one.
        self.library_dir = library_location(library_dir or os.environ.get("SDRAG_LIBRARY")
                                            or cache_root() / "libraries" / sources.preset)
        self._embedder = None
        self._library: StyleLibrary | None = None
        self._generator: Generator | None = None
        # Interactive reruns and sweeps reuse edge maps and embeddings that did not change.
        self.cache = StageCache()
        # The pipeline holds per-call state (scheduler, IP-Adapter scales): one run at a time, whichever thread
        # asks (the studio's background thread and a notebook cell can overlap).
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        loaded = "loaded" if self._generator is not None else "not loaded yet"
        return (f"Workbench(preset={self.sources.preset!r}, device={self.device.type}, "
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

    @property
    def spec(self) -> ModelSpec:
        """The model sources (the older name of `sources`)."""
        return self.sources

    # -- lazily loaded parts ----------------------------------------------------------------------------

    @property
    def embedder(self):
        """The CLIP embedder used for retrieval."""
        if self._embedder is None:
            from ..retrieval.embed import ClipEmbedder

            self._embedder = ClipEmbedder(self.plan["clip"], self.device, self.dtype)
        return self._embedder

    @property
    def embedder_name(self) -> str:
        """Which embedder built this workbench's vectors (tiny weights are versioned, not located)."""
        if self.sources.preset in ("tiny", "sd15-random") and "clip" not in self._overridden():
            return f"{self.sources.preset}-v{TINY_VERSION}"
        revision = self.sources.revision("clip")
        # Another revision may hold other weights: its vectors must not be mixed with these.
        return f"{self.sources.clip}@{revision}" if revision else self.sources.clip

    def _overridden(self) -> set[str]:
        preset = get_spec(self.sources.preset).to_dict()
        return {k for k, v in self.sources.to_dict().items() if preset[k] != v}

    @property
    def library(self) -> StyleLibrary:
        """The persistent style library."""
        if self._library is None:
            from ..retrieval.library import StyleLibrary

            self._library = StyleLibrary(self.library_dir, lambda: self.embedder, self.embedder_name)
        return self._library

    @property
    def generator(self) -> Generator:
        """The loaded pipeline (loads on first access, with this workbench's memory savers)."""
        if self._generator is None:
            from .generator import Generator

            self._generator = Generator(self.sources, self.device, self.dtype, self.plan, self.memory)
        return self._generator

    def load(self) -> Workbench:
        """Load every model now instead of on first use."""
        with self._lock:
            _ = self.generator, self.embedder
        return self

    def use_memory(self, memory: MemoryOptions | dict) -> MemoryOptions:
        """Switch more memory savers on, for good (never off); return the ones newly switched on."""
        added = MemoryOptions.from_any(memory).beyond(self.memory)
        if added.names():
            added.check(self.device)
            with self._lock:
                if self._generator is not None:
                    self._generator.apply_memory(added)
                self.memory = self.memory | added
        return added

    def weight_hashes(self) -> dict[str, list[dict]]:
        """sha256 of every weight file the models load (loading them first if a download is still due)."""
        from ..models.provenance import weight_hashes

        if any(part.path(rel) is None for part in self.plan.values() for rel in part.weights):
            self.load()
        return weight_hashes(self.plan)

    def unload(self) -> None:
        """Drop the loaded models (they reload on next use, with the same memory savers) and free their memory."""
        import gc

        import torch

        with self._lock:
            self._generator = self._embedder = None
            self.cache.clear()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # -- the chain ----------------------------------------------------------------------------------------

    def resolve_style(self, prompt: str, p: ResolvedParams) -> tuple[list[Style], list[tuple[Style, float]]]:
        """Return (hits, references with blend weights) for resolved params: retrieval or a fixed choice."""
        if p.style is None:
            if not prompt.strip():
                raise ParameterError("Retrieval needs a prompt. Fix: give a prompt, or pick style='<id or name>'.")
            hits = self.library.search(prompt, k=p.top_k, tags=p.tags, method=p.retrieval, avoid=p.avoid,
                                       diversity=p.diversity)
            if not hits:
                raise StyleNotFoundError(f"No style matches {prompt!r} with retrieval={p.retrieval!r} (lexical search"
                                         " needs a word in common). Fix: use retrieval='hybrid' or 'dense', or pick"
                                         " a style.")
            # A blend weighs its styles by CLIP similarity to the prompt, whichever method chose them.
            cosines = [h.score for h in hits] if p.retrieval == "dense" else self._prompt_similarity(prompt, hits)
            return hits, list(zip(hits, blend_weights(cosines)))
        chosen = [(p.style, 1.0)] if isinstance(p.style, str) else p.style
        styles = [self.library.get(key) for key, _ in chosen]
        if prompt.strip():
            for s, sim in zip(styles, self._prompt_similarity(prompt, styles)):
                s.score = sim
        total = sum(w for _, w in chosen)
        return styles, [(s, w / total) for s, (_, w) in zip(styles, chosen)]

    def _prompt_similarity(self, prompt: str, styles: list[Style]) -> list[float]:
        """CLIP cosine of each style's stored embedding with the prompt's."""
        sims = self.library.vectors([s.id for s in styles]) @ self.embedder.embed_text([prompt])[0]
        return [float(x) for x in sims]

    def control(self, sketch: Image.Image, p: ResolvedParams) -> Control:
        """The fitted sketch and its Canny edge map for resolved params, cached per sketch and settings."""
        key = (pixels_sha256(sketch), sketch.size, p.width_height, p.fit, p.canny)

        def compute() -> Control:
            fitted = fit_image(sketch, p.width_height, p.fit)
            return Control(fitted, edges_of(fitted, *p.canny))

        return self.cache.get("canny", key, compute)

    def ip_embeds(self, refs: Sequence[tuple[Style, float]]):
        """IP-Adapter embeddings of weighted style references, cached per (content, weight) set."""
        key = tuple((s.id, s.sha256, round(w, 12)) for s, w in refs)
        return self.cache.get("style", key,
                              lambda: self.generator.image_embeds([s.image() for s, _ in refs], [w for _, w in refs]))

    def run(self, sketch: ImageLike, prompt: str = "", *, params: Params | ResolvedParams | dict | None = None,
            progress: Progress | bool | None = None, references: Sequence[tuple[Style, float]] | None = None,
            **kwargs: Any) -> Result:
        """Run the chain: retrieve a style for `prompt`, Canny the `sketch`, generate.

        Keyword arguments are Params fields (steps, guidance, controlnet_scale, ip_adapter_scale, canny,
        seed, size, style, top_k, ...); `params` gives a whole Params object to start from. `progress` is
        a callable(step, total) (return False to stop) or True for a tqdm bar. `references` gives the style
        images and weights outright, bypassing the library (how `reproduce` works from a run folder alone).
        Safe to call from several threads: calls run one at a time.
        """
        with self._lock:
            return self._run(sketch, _checked_params(params, progress, prompt, kwargs), progress, references)

    def _run(self, sketch: ImageLike, p: ResolvedParams, progress, references) -> Result:
        timings: dict[str, float] = {}
        with _timed(timings, "total"):
            image = load_image(sketch)
            if self._generator is None:
                with _timed(timings, "load"):
                    _ = self.generator
            with _timed(timings, "retrieve"):
                hits, refs = ([], list(references)) if references is not None else self.resolve_style(p.prompt, p)
            with _timed(timings, "canny"):
                control = self.control(image, p)
            with _timed(timings, "embed"):
                ip_embeds = self.ip_embeds(refs)
                prompt_embeds = self.cache.get("prompt", (p.prompt, p.negative_prompt),
                                               lambda: self.generator.encode_prompt(p.prompt, p.negative_prompt))
            with _timed(timings, "generate"), _progress_bar(progress, p.steps) as callback:
                images, fallback = self._generate(control.edges, p, ip_embeds, prompt_embeds, callback)
        # The recorded style is what was used, so Params.from_dict(res.params) reproduces the image.
        record = p.update(style=[(s.id, w) for s, w in refs]).to_dict()
        info = {**self.generator.info(), "memory": self.memory.to_dict(), "retrieved": p.style is None,
                "ip_adapter_layers": layer_scales(p.ip_adapter_scale), "oom_fallback": fallback}
        notes = self._notes(p) + [f"Out of GPU memory: retried with {step}; it stays on for this workbench."
                                  for step in fallback]
        return Result(images=images, edges=control.edges, sketch=control.sketch, hits=hits, references=refs,
                      params=record, timings=timings, info=info, notes=notes)

    def _generate(self, edges: Image.Image, p: ResolvedParams, ip_embeds, prompt_embeds,
                  progress) -> tuple[list, list[str]]:
        """Generate; on CUDA out-of-memory retry once per rung of OOM_LADDER. Returns (images, rungs used)."""
        import torch

        used: list[str] = []
        for rung in (None, *(r for r in OOM_LADDER if r.works_on(self.device))):
            if rung is not None:
                added = self.use_memory(rung)
                if not added.names():
                    continue  # already on: retrying the same way would fail the same way
                used.append("+".join(added.names()))
            try:
                return self.generator.generate(edges, p, ip_embeds=ip_embeds, prompt_embeds=prompt_embeds,
                                               progress=progress), used
            except torch.cuda.OutOfMemoryError as exc:
                error = exc
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
        savers = ", ".join(self.memory.names()) or "no memory savers"
        raise MemoryExhaustedError(
            f"Out of GPU memory at {p.width_height[0]}x{p.width_height[1]} with {len(p.seeds)} image(s) per call,"
            f" even with {savers} on ({str(error).splitlines()[0]}). Fix: lower size, or give fewer seeds per"
            " call (a sweep's batch)."
        ) from None

    def _notes(self, p: ResolvedParams) -> list[str]:
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


def _checked_params(params: Any, progress: Any, prompt: str, changes: dict) -> ResolvedParams:
    """The resolved parameters of one run: `params` (object or dict), then keyword changes and the prompt."""
    if isinstance(params, dict):
        params = Params.from_dict(params)
    elif params is not None and not isinstance(params, (Params, ResolvedParams)):
        raise ParameterError(f"params must be a Params object or a dict, got {type(params).__name__}."
                             " Fix: pass sdrag.Params(...) or keyword arguments.")
    if progress is not None and not isinstance(progress, bool) and not callable(progress):
        raise ParameterError(f"progress must be a callable(step, total), True or None; got {progress!r}.")
    return (params or Params()).update(**changes, **({"prompt": prompt} if prompt else {})).resolved()


@contextlib.contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    """Add the seconds the block takes to `timings[stage]`."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start


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
