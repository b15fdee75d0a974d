"""sdrag: structure-locked, retrieval-styled image generation (Canny ControlNet + CLIP/ChromaDB + IP-Adapter).

Pipeline stages, one module each: presets (which weights) -> hub (which files, from the cache or the hub)
-> tiny (offline stand-ins) -> images (read and fit inputs) -> canny (edge map) -> embed (CLIP vectors)
-> library (ChromaDB styles) -> params (one parameters object) -> generate (SD1.5 + ControlNet + IP-Adapter)
-> workbench (the chain and its Result) -> spec (sweep grids, checked up front) -> sweep (runs them,
resumable) -> metrics -> report; cache, provenance and files serve them.
"""

from .canny import canny_edges
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
from .images import SAMPLE_SKETCH, load_image
from .library import IngestReport, Style, StyleLibrary
from .params import IP_SCALE_PRESETS, Params
from .presets import ModelSpec, get_spec
from .sweep import SweepError, SweepFailed, SweepRun, load_spec, reproduce, run_sweep
from .workbench import Result, Workbench

__version__ = "0.1.0"

__all__ = [
    "IP_SCALE_PRESETS", "SAMPLE_SKETCH", "GenerationCancelled", "IngestReport", "InputError", "LibraryError",
    "MemoryExhaustedError", "ModelSpec", "ParameterError", "Params", "Result", "SdragError", "StorageError",
    "Style", "StyleLibrary", "StyleNotFoundError", "SweepError", "SweepFailed", "SweepRun",
    "WeightsUnavailableError", "Workbench", "canny_edges", "get_spec", "load_image", "load_spec", "reproduce",
    "run_sweep",
]
