"""What a ChromaDB failure means, and its fix: the errors, HTTP errors and Rust panics chroma raises, told apart.

chroma's Rust bindings panic on data they cannot decode (`pyo3_runtime.PanicException`, a BaseException that
escapes every `except Exception`); its messages often hide SQLite's own ("Failed to get segments"), so a failure
on a folder is checked with SQLite itself (`PRAGMA quick_check`) before it is called damage or not. `Store.session`
(store.py) is the one place that calls these.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator

from ..errors import LibraryError, SdragError
from .chroma_import import load_chromadb

DB_FILE = "chroma.sqlite3"
_DETAIL_CHARS = 300
# What chroma's messages (SQLite's, mostly) say, checked in this order.
_KINDS = (
    ("read_only", re.compile(r"readonly database|read-only file system|\(code: 8\)", re.IGNORECASE)),
    ("full", re.compile(r"disk is full|no space left|\(code: 13\)", re.IGNORECASE)),
    ("locked", re.compile(r"database is locked|database table is locked|\(code: [56]\)", re.IGNORECASE)),
    ("damaged", re.compile(
        r"malformed|not a database|unable to open database file|\(code: (11|14|26)\)|corrupt|ColumnDecode"
        r"|Utf8Error|failed to apply logs|error finding id|error getting embedding|hnsw", re.IGNORECASE)),
)


def failure(what: str, location: str, url: str | None, exc: BaseException) -> LibraryError:
    """One LibraryError for a chroma failure: `what` failed (naming the library), chroma's words, then the fix."""
    detail = _detail(exc)
    return LibraryError(f"{what}: {detail}{'' if detail[-1] in '.?!' else '.'} {_fix(location, url, exc)}.")


def _fix(loc: str, url: str | None, exc: BaseException) -> str:
    if url:
        return ("Fix: start the server (`chroma run --path DIR --port PORT`), check the URL and that the server is"
                " reachable, then retry")
    if not os.path.isdir(loc):
        return "Fix: use a writable folder that only sdrag's ChromaDB uses"
    kind = _kind(str(exc))
    moved = (f"move the folder aside (`mv {loc} {loc}.damaged`) and ingest the styles again (ids are content"
             " hashes, nothing else changes)")
    if kind in ("", "damaged") or is_panic(exc):
        found = database_damage(loc)
        if found or kind or is_panic(exc):  # a panic is damage: the bindings panic on data they cannot decode
            seen = f" (SQLite's check: {found})" if found else ""
            return f"The library's database at {loc} is damaged{seen}. Fix: {moved}"
        return f"Fix: retry; if it fails again, the library's database at {loc} is damaged: {moved}"
    return {
        "read_only": f"The library at {loc} is read-only. Fix: copy it somewhere writable and use that folder",
        "full": f"The disk holding {loc} is full. Fix: free some space there, then retry",
        "locked": (f"Another program holds the library's database at {loc}. Fix: only sdrag's ChromaDB should use"
                   " this folder: stop the other program, or serve the folder with `chroma run` and use its URL as"
                   " the library"),
    }[kind]


def is_locked(exc: BaseException) -> bool:
    """SQLite said the database is locked (busy)."""
    return is_failure(exc) and _kind(str(exc)) == "locked"


def is_panic(exc: BaseException) -> bool:
    """A Rust panic of chroma's bindings: `pyo3_runtime.PanicException`, a BaseException, not an Exception."""
    return any(cls.__name__ == "PanicException" and cls.__module__ == "pyo3_runtime" for cls in type(exc).__mro__)


def is_failure(exc: BaseException) -> bool:
    """An error to report (an Exception, or a panic); never KeyboardInterrupt, SystemExit, GeneratorExit."""
    return (isinstance(exc, Exception) and not isinstance(exc, MemoryError)) or is_panic(exc)


def from_chroma(exc: BaseException) -> bool:
    """Whether `exc` is a chroma failure: a panic, a chroma or HTTP error, or anything raised inside chromadb."""
    if is_panic(exc):
        return True
    if not is_failure(exc) or isinstance(exc, SdragError):
        return False
    import httpx  # chromadb's HTTP client

    chromadb = load_chromadb()
    from chromadb.errors import ChromaError

    if isinstance(exc, (ChromaError, httpx.HTTPError)):
        return True
    package = os.path.dirname(chromadb.__file__) + os.sep
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.startswith(package):
            return True
        tb = tb.tb_next
    return False


def database_damage(folder: str) -> str:
    """What SQLite's own check (`PRAGMA quick_check`, read-only) finds wrong with the library's database, or ''."""
    import sqlite3
    from urllib.request import pathname2url

    db = os.path.join(folder, DB_FILE)
    if not os.path.lexists(db):
        return ""  # chroma makes a new one
    if not os.path.isfile(db):
        return f"{DB_FILE} is not a file"
    try:
        con = sqlite3.connect(f"file:{pathname2url(db)}?mode=ro", uri=True, timeout=1.0)
        try:
            rows = con.execute("PRAGMA quick_check(3)").fetchall()
        finally:
            con.close()
    except sqlite3.Error as exc:  # "file is not a database", "database disk image is malformed", ...
        return "" if _kind(str(exc)) in ("read_only", "full", "locked") else _bounded(str(exc))
    return _bounded("; ".join(str(row[0]) for row in rows if row and row[0] != "ok"))


def _kind(text: str) -> str:
    return next((kind for kind, pattern in _KINDS if pattern.search(text)), "")


def _bounded(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _DETAIL_CHARS else text[:_DETAIL_CHARS - 3] + "..."


def _detail(exc: BaseException) -> str:
    """chroma's message, one line, bounded; a panic says it is one."""
    text = _bounded(str(exc)) or type(exc).__name__
    return f"ChromaDB panicked ({text})" if is_panic(exc) else text


@contextlib.contextmanager
def no_failure() -> Iterator[None]:
    """Swallow a failure (a panic included) while cleaning up after another; never an interrupt."""
    try:
        yield
    except BaseException as exc:
        if not is_failure(exc):
            raise


def cached_system(path: str) -> bool:
    """Whether chroma has a client system cached for the folder `path` in this process."""
    from chromadb.api.shared_system_client import SharedSystemClient

    return path in getattr(SharedSystemClient, "_identifier_to_system", {})


def forget_system(path: str, force: bool = False) -> None:
    """Drop chroma's cached client system for `path` once no client uses it (or at once: `force`).

    chroma caches it before starting it and releases it only on an Exception, so a start that failed or panicked
    leaves a system that every later client of the folder would get, even after the folder was moved aside and
    made again: one still bound to the old database, or never started.
    """
    try:
        from chromadb.api.shared_system_client import SharedSystemClient
    except ImportError:  # pragma: no cover - another chromadb layout: nothing cached that we know of
        return
    systems = getattr(SharedSystemClient, "_identifier_to_system", {})
    refcounts = getattr(SharedSystemClient, "_identifier_to_refcount", {})
    if refcounts.get(path, 0) > 0 and not force:
        return  # a live client of this process still uses it
    system = systems.pop(path, None)
    refcounts.pop(path, None)
    if system is not None:
        with no_failure():
            system.stop()
