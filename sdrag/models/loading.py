"""Loading one component as planned: every failure becomes one WeightsUnavailableError that says what to do."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

from ..errors import WeightsUnavailableError
from .hub import first_line, hub_offline, hub_reachable, interrupted, network_cause, network_errors
from .plan import Part
from .presets import is_local

T = TypeVar("T")
# Below this a tokenizer lost its vocabulary: transformers returns a 2-token one silently.
_MIN_TOKENS = 100


def load_errors() -> tuple[type[BaseException], ...]:
    """Exception types a loader raises for missing, damaged or refused files."""
    from huggingface_hub.errors import EntryNotFoundError

    errors: list[type[BaseException]] = [OSError, ValueError, KeyError, EntryNotFoundError, *network_errors()]
    with contextlib.suppress(ImportError):
        from safetensors import SafetensorError

        errors.append(SafetensorError)
    return tuple(errors)


def load(part: Part, call: Callable[[Part], T]) -> T:
    """Run `call(part)` (one component's from_pretrained calls) and turn every failure into one sdrag error.

    A disk-only load that fails (a file removed from the cache, one the plan could not foresee) downloads
    instead when the hub can be reached.
    """
    try:
        return call(part)
    except load_errors() as exc:
        first = exc
    if part.local_only and not is_local(part.source) and not hub_offline() and hub_reachable():
        part = replace(part, local_only=False)
        try:
            return call(part)
        except load_errors() as exc:
            first = exc
    raise _failure(part, first) from None


def _failure(part: Part, exc: BaseException) -> WeightsUnavailableError:
    cause = network_cause(exc)
    if cause is not None:
        return interrupted(part.name, part.where, cause)
    repo = part.source
    fix = (f"if a cached file is damaged, `hf cache verify {repo}` names it; remove it (`hf cache rm model/{repo}`)"
           " and run again to download it afresh, or point the override at a complete folder in hub layout")
    if is_local(part.source):
        fix = ("point the override at a complete folder in hub layout (safetensors weights), or use the tiny preset"
               " (preset='tiny' in Python, --preset tiny on the command line)")
    return WeightsUnavailableError(f"Could not load {part.label} from {part.where}: {type(exc).__name__}:"
                                   f" {first_line(exc)}\nFix: {fix}.")


def checked_tokenizer(tokenizer: Any, source: str) -> Any:
    """Return `tokenizer`, or raise if it loaded degraded (transformers returns a 2-token one silently)."""
    if len(tokenizer) < _MIN_TOKENS:
        raise WeightsUnavailableError(
            f"The tokenizer from {source} has only {len(tokenizer)} tokens: its vocabulary files are missing."
            " Fix: re-download the model or point at a folder with tokenizer files."
        )
    return tokenizer
