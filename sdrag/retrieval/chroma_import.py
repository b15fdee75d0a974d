"""Importing chromadb without paying for a grammar it never uses.

chromadb imports jsonschema (for its embedding-function schemas); jsonschema imports `rfc3987_syntax` where it is
installed (Jupyter's `jsonschema[format-nongpl]` brings it), and that module builds an IRI grammar on import: 1.3 of
chromadb's 2.1 s import on the project's machines, paid by every process that opens a library. sdrag never checks
an IRI, so while chromadb loads, that module is a stand-in whose functions import the real one on first call:
jsonschema's IRI formats still work, and the grammar is built only by a process that uses them.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any

_DEFERRED = "rfc3987_syntax"


def load_chromadb() -> types.ModuleType:
    """The chromadb module, imported with `rfc3987_syntax` deferred to its first use."""
    if "chromadb" in sys.modules:
        return sys.modules["chromadb"]
    stand_in = _stand_in() if _DEFERRED not in sys.modules and "jsonschema" not in sys.modules else None
    if stand_in is not None:
        sys.modules[_DEFERRED] = stand_in
    try:
        import chromadb
    finally:
        if stand_in is not None and sys.modules.get(_DEFERRED) is stand_in:
            del sys.modules[_DEFERRED]  # a later `import rfc3987_syntax` gets the real module
    return chromadb


def _stand_in() -> types.ModuleType | None:
    """A module that forwards to the real `rfc3987_syntax` when first used (None where it is not installed, so
    jsonschema goes on without it exactly as it would have)."""
    if importlib.util.find_spec(_DEFERRED) is None:
        return None
    module = types.ModuleType(_DEFERRED)

    def real() -> Any:
        if sys.modules.get(_DEFERRED) is module:
            del sys.modules[_DEFERRED]
        return importlib.import_module(_DEFERRED)

    def is_valid_syntax(*args: Any, **kwargs: Any) -> Any:
        return real().is_valid_syntax(*args, **kwargs)

    def other(name: str) -> Any:
        # The import system probes dunder names (__path__, __spec__...): those must not load the real module.
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(real(), name)

    module.is_valid_syntax = is_valid_syntax
    # Any other name a jsonschema release asks for is the real module's own (loaded then, not deferred).
    module.__getattr__ = other
    return module
