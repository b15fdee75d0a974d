"""The sdrag error family: every failure a user can cause is one of these, with the problem and the fix."""

from __future__ import annotations


class SdragError(Exception):
    """Base class of every error sdrag raises on purpose."""


class InputError(SdragError, ValueError):
    """An image or file given to sdrag cannot be used."""


class ParameterError(SdragError, ValueError):
    """A generation, Canny or retrieval parameter is out of range or malformed.

    `problems` lists each problem on its own (the message shows them all), so callers can regroup them.
    """

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = list(problems) if problems else [message]


class WeightsUnavailableError(SdragError, RuntimeError):
    """Model weights a preset needs are neither local nor reachable."""


class LibraryError(SdragError, RuntimeError):
    """The style library cannot be opened, read or written."""


class StyleNotFoundError(LibraryError, KeyError):
    """A style id or name is not in the library."""

    def __str__(self) -> str:
        # KeyError quotes its message; keep it readable.
        return str(self.args[0]) if self.args else ""


class StorageError(SdragError, OSError):
    """A file could not be written (disk full, no permission); what was there before is intact."""


class MemoryExhaustedError(SdragError, RuntimeError):
    """The GPU ran out of memory even with every memory saver on."""


class GenerationCancelled(SdragError):
    """A generation was stopped on request (its progress callback returned False)."""
