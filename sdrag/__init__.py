"""sdrag: structure-locked, retrieval-styled image generation (Canny ControlNet + CLIP/ChromaDB + IP-Adapter).

The folders are the data flow, each layer importing only the ones before it (docs/architecture.md):

    models/      weights: preset sources, which files load (folder, cache or hub), the offline tiny builds
    retrieval/   style retrieval: CLIP embeddings, the ChromaDB store, the style library and its ingest
    generation/  one generation: images, Canny, Params, the SD1.5 + ControlNet + IP-Adapter generator, Workbench
    runs/        the run folder a sweep leaves: spec, rows, table, manifest, per-cell metrics
    reports/     what a run folder is shown as: X/Y/Z grids, heatmaps, HTML, run comparison
    sweeps/      running specs into run folders (crash-safe, resumable) and reproducing a cell
    app/         the notebooks' widgets, the command line and the demo

`errors` and `files` sit under all of them. Importing sdrag is light: torch, diffusers, transformers and chromadb
load on first use of what needs them.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import (
    GenerationCancelled,
    InputError,
    LibraryError,
    MemoryExhaustedError,
    ParameterError,
    SdragError,
    StorageError,
    StyleNotFoundError,
    WeightsUnavailableError,
)

__version__ = "0.1.0"

# Public name -> the module that owns it; loaded on first access.
_LAZY = {
    "IP_SCALE_PRESETS": "models.sd15", "ModelSpec": "models.presets", "get_spec": "models.presets",
    "IngestReport": "retrieval.ingest", "Style": "retrieval.entries", "StyleLibrary": "retrieval.library",
    "SAMPLE_SKETCH": "images", "load_image": "images", "canny_edges": "generation.canny",
    "Params": "generation.params", "ResolvedParams": "generation.params", "MemoryOptions": "generation.memory",
    "Result": "generation.result", "Workbench": "generation.workbench",
    "SweepError": "runs.spec", "load_spec": "runs.spec", "SweepRun": "runs.folder",
    "SweepFailed": "sweeps.engine", "run_sweep": "sweeps.engine", "reproduce": "sweeps.reproduce",
    "RunExplorer": "app.explorer",
}

__all__ = [
    "GenerationCancelled", "InputError", "LibraryError", "MemoryExhaustedError", "ParameterError", "SdragError",
    "StorageError", "StyleNotFoundError", "WeightsUnavailableError", *sorted(_LAZY),
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sdrag' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
