"""Where a style library's ChromaDB lives and how processes share it: a folder under a file lock, or a server.

A folder is used by one operation at a time across processes (an exclusive `flock` on `sdrag.lock`, held only
for the operation); a `chroma run` server, named by its URL, serialises its clients itself. Either way the
library code gets the same collection object.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import LibraryError

try:
    import fcntl
except ImportError:  # Windows: no flock; there a library folder takes one process at a time.
    fcntl = None

COLLECTION = "sdrag_styles"
LOCK_FILE = "sdrag.lock"
LOCK_TIMEOUT_S = 60.0
# chroma 1.5 saves its HNSW files in place every `sync_threshold` applied records, and a kill -9 during that
# save leaves an index it can no longer load ("Failed to apply logs to the hnsw segment writer"). Never saving
# them keeps every byte of state in SQLite, which is transactional; each open rebuilds the index from its log.
_SYNC_THRESHOLD = 10**8
_RECORD_BYTES = 128
_URL = re.compile(r"^(https?):/{1,2}([^/?#\s]+?)/*$", re.IGNORECASE)


def server_url(location: Any) -> str | None:
    """Return `location` as a normalised chroma server URL ('http://host:port') if it names one, else None.

    `Path("http://h:8000")` collapses the double slash, so "http:/h:8000" is accepted too.
    """
    if not isinstance(location, (str, os.PathLike)):
        return None
    match = _URL.match(os.fspath(location).strip())
    if not match:
        return None
    return f"{match.group(1).lower()}://{match.group(2)}"


def library_location(location: str | Path) -> str | Path:
    """A library location as given: a server URL stays a string, anything else becomes a Path."""
    return server_url(location) or Path(location)


class Store:
    """This process's one chroma client for a library location, shared by every StyleLibrary on it.

    chroma caches one client system per folder per process, so instances must share it; it is reopened when
    another process has written, because an open client keeps serving (and would write back) its own stale
    in-memory index.
    """

    def __init__(self, location: str, url: str | None, embedder_name: str):
        """`location` is the resolved folder or the server URL (`url`, None for a folder)."""
        self.location = location
        self.url = url
        self.embedder_name = embedder_name
        self.client: Any = None
        self.col: Any = None
        self.token: str | None = None
        self.mutex = threading.Lock()

    @contextlib.contextmanager
    def session(self, op: str, write: bool, timeout: float) -> Iterator[Any]:
        """Hold the library for one short operation and yield a collection that sees every committed write."""
        deadline = time.monotonic() + timeout
        if not self.mutex.acquire(timeout=timeout):
            raise self._busy(op, "another thread of this process", timeout)
        try:
            with self._file_lock(op, deadline, timeout) as fd:
                token = _read_token(fd) if fd is not None else None
                if self.col is None or token != self.token:
                    self._reopen()
                    self.token = token
                if fd is not None:
                    if write:
                        # Changed before writing, so a writer killed mid-write still makes others reopen.
                        self.token = uuid.uuid4().hex
                    _write_record(fd, self.token or "", op)
                try:
                    yield self.col
                except Exception as exc:
                    if _is_backend_error(exc):
                        raise self._backend_error(op, exc) from None
                    raise
        finally:
            self.mutex.release()

    def _reopen(self) -> None:
        try:
            self._open()
        except Exception as exc:  # chromadb raises many types for a bad folder or an absent server
            self.close()
            fix = ("start the server (`chroma run --path DIR --port PORT`) and check the URL" if self.url
                   else "use a writable folder that only sdrag's ChromaDB uses")
            raise LibraryError(f"Cannot open the style library at {self.location}: {exc}. Fix: {fix}.") from None

    def _open(self) -> None:
        import chromadb
        from chromadb.config import Settings

        self.close()
        # Telemetry off: sdrag promises zero network calls offline.
        settings = Settings(anonymized_telemetry=False, allow_reset=False)
        if self.url:
            parts = urlsplit(self.url)
            https = parts.scheme == "https"
            client = chromadb.HttpClient(host=parts.hostname or "localhost", port=parts.port or (443 if https else 80),
                                         ssl=https, settings=settings)
        else:
            client = chromadb.PersistentClient(path=self.location, settings=settings)
        try:
            col = client.get_or_create_collection(
                COLLECTION, embedding_function=None,
                configuration={"hnsw": {"space": "cosine", "sync_threshold": _SYNC_THRESHOLD}},
                metadata={"embedder": self.embedder_name},
            )
            hnsw = (getattr(col, "configuration_json", None) or {}).get("hnsw") or {}
            if (hnsw.get("sync_threshold") or 0) < _SYNC_THRESHOLD:  # a library made before sdrag set it
                col.modify(configuration={"hnsw": {"sync_threshold": _SYNC_THRESHOLD}})
        except BaseException:
            client.close()
            raise
        self.client, self.col = client, col

    def close(self) -> None:
        """Drop the client (the next session opens a fresh one)."""
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.close()
        self.client = self.col = None

    @contextlib.contextmanager
    def _file_lock(self, op: str, deadline: float, timeout: float) -> Iterator[int | None]:
        if self.url:
            yield None  # a server serialises its clients itself
            return
        if fcntl is None:
            warnings.warn(f"No file locks on this system: run only one process on the style library at {self.location}"
                          " at a time, or serve it with `chroma run`.", RuntimeWarning, stacklevel=5)
            yield None
            return
        lock = Path(self.location) / LOCK_FILE
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise LibraryError(
                f"Cannot open the library lock file {lock}: {exc.strerror}. Fix: use a library folder you can write to."
            ) from None
        try:
            delay = 0.001
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise self._busy(op, _holder(fd), timeout) from None
                    time.sleep(delay)
                    delay = min(delay * 2, 0.05)
                except OSError as exc:
                    if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                        raise
                    warnings.warn(f"The file system of {lock} does not support locks ({exc.strerror}): run only one"
                                  " process on this style library at a time.", RuntimeWarning, stacklevel=5)
                    break
            yield fd
        finally:
            os.close(fd)  # releases the lock, also on a crash or kill

    def _busy(self, op: str, holder: str, timeout: float) -> LibraryError:
        return LibraryError(
            f"The style library at {self.location} is busy: {holder} has held it for more than {timeout:g} s,"
            f" so this {op} gave up. Fix: wait for that to finish and retry, stop it if it is stuck, or pass a longer"
            f" lock_timeout; for many processes writing at once, serve the folder with `chroma run --path"
            f" {self.location} --port 8000` and use 'http://127.0.0.1:8000' as the library."
        )

    def _backend_error(self, op: str, exc: Exception) -> LibraryError:
        if self.url:
            fix = "check that the chroma server is running and reachable, then retry"
        else:
            fix = ("retry; if it fails again the index is damaged: move the folder aside and ingest the styles again"
                   " (ids are content hashes, so nothing else changes)")
        return LibraryError(f"ChromaDB failed during {op} on the style library at {self.location}: {exc}. Fix: {fix}.")


_STORES: dict[str, Store] = {}
_STORES_LOCK = threading.Lock()


def store_for(location: str, url: str | None, embedder_name: str) -> Store:
    """The one Store of this process for `location`."""
    with _STORES_LOCK:
        store = _STORES.get(location)
        if store is None:
            store = _STORES[location] = Store(location, url, embedder_name)
        return store


# -- lock file ------------------------------------------------------------------------------------------
# One fixed-size record: a token that every write changes (so other processes know to reopen), then who holds
# the lock now (for the message when another process waits too long).


def _read_token(fd: int) -> str:
    return os.pread(fd, _RECORD_BYTES, 0).decode("ascii", "replace").split("\n", 1)[0].strip()


def _write_record(fd: int, token: str, op: str) -> None:
    record = f"{token}\n{os.getpid()} {op} {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode()
    os.pwrite(fd, record[:_RECORD_BYTES].ljust(_RECORD_BYTES, b" "), 0)


def _holder(fd: int) -> str:
    try:
        pid, op, day, clock = os.pread(fd, _RECORD_BYTES, 0).decode("ascii", "replace").split("\n")[1].split()
    except (OSError, ValueError, IndexError):
        return "another process"
    if pid == str(os.getpid()):
        return f"another thread of this process ({op}, since {clock})"
    return f"process {pid} ({op}, since {day} {clock})"


def _is_backend_error(exc: Exception) -> bool:
    from chromadb.errors import ChromaError

    if isinstance(exc, ChromaError):
        return True
    try:
        import httpx
    except ImportError:  # pragma: no cover - chromadb depends on httpx
        return False
    return isinstance(exc, httpx.HTTPError)
