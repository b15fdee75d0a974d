"""Where a style library's ChromaDB lives and how processes share it: a folder under a file lock, or a server.

A folder is used by one operation at a time across processes (a `flock` on `sdrag.lock`, held only for the
operation); a `chroma run` server, named by its URL, serialises its clients itself. Either way the library code
gets the same collection, inside `Store.session`, which turns anything chroma raises there into one LibraryError
with the fix (faults.py tells the failures apart).

ChromaDB cannot open a database it may not write to ("attempt to write a readonly database" at start), so a
read-only folder (a read-only mount, no write permission) is read through a private copy in the temp folder,
made under a shared lock on the lock file opened read-only (or no lock where there is none and none can be made:
then no writer of sdrag's can be using it either) and made again when the library changes. Nothing is written to
such a folder, not even the lock record; writes to it are refused with the fix.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import sqlite3
import tempfile
import threading
import time
import uuid
import warnings
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import LibraryError
from . import index
from .chroma_import import load_chromadb
from .faults import DB_FILE, cached_system, failure, forget_system, from_chroma, is_failure, is_locked, no_failure
from .lockfile import LOCK_FILE, READ_ONLY_ERRNOS, copy_tree, holder, read_only_reason, read_token, write_record

try:
    import fcntl
except ImportError:  # Windows: no flock; there a library folder takes one process at a time.
    fcntl = None

COLLECTION = "sdrag_styles"
LOCK_TIMEOUT_S = 60.0
# Waits before opening again while SQLite reports the database locked (about 3 s in all).
_RELEASE_WAITS_S = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)
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


@dataclass
class _Hold:
    """What holding a library folder found: the lock file (None: no lock) and why the folder is read-only ('')."""

    fd: int | None
    read_only: str = ""


class Store:
    """This process's one chroma client for a library location, shared by every StyleLibrary on it.

    chroma caches one client system per folder per process, so instances must share it; it is reopened when
    another process has written, because an open client keeps serving (and would write back) its own stale
    in-memory index, when the database file was replaced, and after any chroma failure.
    """

    def __init__(self, location: str, url: str | None, embedder_name: str):
        """`location` is the resolved folder or the server URL (`url`, None for a folder)."""
        self.location = location
        self.url = url
        self.embedder_name = embedder_name
        self.client: Any = None
        self.col: Any = None
        self.token: str | None = None
        self.stamp: tuple | None = None  # which database file the client has open (and, read-only, which state)
        self.read_only = ""  # why the folder is read-only; '' while it is writable
        self.record: dict | None = None  # what the folder's index files and log were after our last operation
        self.mutex = threading.Lock()
        self._path: str | None = None  # the folder chroma was given: the library's, or its private copy
        self._copy: weakref.finalize | None = None

    @contextlib.contextmanager
    def session(self, op: str, write: bool, timeout: float) -> Iterator[Any]:
        """Hold the library for one short operation and yield a collection that sees every committed write.

        Anything chroma raises, here or in the caller's block, leaves as one LibraryError (and the next session
        opens a fresh client); KeyboardInterrupt, SystemExit and the caller's own errors pass unchanged.
        """
        deadline = time.monotonic() + timeout
        if not self.mutex.acquire(timeout=timeout):
            raise self._busy(op, "another thread of this process", timeout)
        try:
            with self._file_lock(op, deadline, timeout) as hold:
                if write and hold.read_only:
                    raise self._read_only_error(op, hold.read_only)
                try:
                    reopened = self._sync(hold)
                    if hold.fd is not None and not hold.read_only:
                        if write:
                            # Changed before writing, so a writer killed mid-write still makes others reopen.
                            self.token = uuid.uuid4().hex
                        write_record(hold.fd, self.token or "", op)
                    yield self.col
                    if write or reopened:  # a read on an open client leaves the index files as it found them
                        self._settle(hold, write)
                except BaseException as exc:
                    if not from_chroma(exc):
                        raise
                    self.close()
                    raise failure(f"ChromaDB failed during {op} on the style library at {self.location}", self.location,
                                  self.url, exc) from None
        finally:
            self.mutex.release()

    def check_writable(self, op: str) -> None:
        """Raise the read-only LibraryError now if the last session found the folder read-only (before any work
        that only a write could use); the write's own session checks again."""
        if self.read_only and not self.url:
            raise self._read_only_error(op, self.read_only)

    def _sync(self, hold: _Hold) -> bool:
        """Reopen the client if another process wrote, the database or index files changed, or it was never
        opened; True if it did."""
        token = read_token(hold.fd) if hold.fd is not None else None
        reopen = (self.col is None or token != self.token or bool(hold.read_only) != bool(self.read_only)
                  or self._stamp(hold.read_only) != self.stamp or self._index_changed(hold))
        if reopen:
            self._reopen(hold.read_only)
            self.token = token
        self.read_only = hold.read_only
        return reopen

    def _index_changed(self, hold: _Hold) -> bool:
        """Whether the index files differ from how our last operation left them (a process killed while chroma
        saved them, for one): then they are checked again before chroma reads them."""
        return not (self.url or hold.read_only) and (self.record or {}).get("files") != index.stamps(self.location)

    def _settle(self, hold: _Hold, write: bool) -> None:
        """After an operation that completed: record the index files as they are now, and compact the log once it
        has outgrown the data (then the client is closed, so chroma reads the compacted log afresh)."""
        if self.url or hold.read_only or self.record is None:
            return
        try:
            record = {**self.record, "files": index.stamps(self.location)}
            if write and index.outgrown(self.location, record.get("log", {})):
                log = index.log_state(self.location, COLLECTION)
                if log["rows"] > index.LOG_GROWTH * log["live"] + index.LOG_FLOOR:
                    log = self._compact(vacuum=False)[1]
                record["log"] = log
            if record != self.record:
                index.write_record(self.location, record)
                self.record = record
        except index.ERRORS:  # a full disk (StorageError is an OSError), the folder gone, a locked database
            # The operation itself completed: a record left unwritten only makes the next open rebuild the index.
            self.record = None

    def _stamp(self, read_only: str) -> tuple | None:
        """Which database file is there (and, for a read-only copy, which state of it); None for a server."""
        if self.url:
            return None
        try:
            st = os.stat(os.path.join(self.location, DB_FILE))
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) if read_only else (st.st_dev, st.st_ino)

    def _reopen(self, read_only: str) -> None:
        self.close()
        path = self._private_copy() if read_only else self.location
        try:
            if not self.url:
                record = index.prepare(path, COLLECTION, source=self.location)
                self.record = None if read_only else record
            self._open_when_released(path)
        except BaseException as exc:  # chromadb raises many types for a bad folder or an absent server, and panics
            if not is_failure(exc):
                raise
            self.close()
            if isinstance(exc, LibraryError):  # index.py's own, with its fix
                raise
            raise failure(f"Cannot open the style library at {self.location}", self.location, self.url, exc) from None
        self.stamp = self._stamp(read_only)

    def _open_when_released(self, path: str) -> None:
        """`_open`, tried again while chroma's SQLite says the database is locked: a client of this process that
        failed or closed on the folder lets go of its SQLite connections in the background (chroma's pool), later on
        a busy machine. The library's lock keeps other sdrag processes out, so a lock that outlasts the waits is
        another program's. (sdrag's own SQLite calls, `sqlite3.Error`, already wait up to 30 s themselves.)"""
        for wait in (*_RELEASE_WAITS_S, None):
            try:
                return self._open(path)
            except BaseException as exc:
                if wait is None or self.url or not is_locked(exc) or isinstance(exc, sqlite3.Error):
                    raise
            forget_system(path)
            time.sleep(wait)

    def _open(self, path: str) -> None:
        chromadb = load_chromadb()
        from chromadb.config import Settings

        # Telemetry off: sdrag promises zero network calls offline.
        settings = Settings(anonymized_telemetry=False, allow_reset=False)
        if self.url:
            parts = urlsplit(self.url)
            https = parts.scheme == "https"
            client = chromadb.HttpClient(host=parts.hostname or "localhost", port=parts.port or (443 if https else 80),
                                         ssl=https, settings=settings)
        else:
            index.keep_log(path)
            self._path = path
            new = not os.path.isfile(os.path.join(path, DB_FILE)) or not os.path.getsize(os.path.join(path, DB_FILE))
            cached = cached_system(path)
            try:
                client = chromadb.PersistentClient(path=path, settings=settings)
            except BaseException:
                if not cached:  # the broken system its failed start left behind is ours alone
                    forget_system(path, force=True)
                raise
        try:
            col = client.get_or_create_collection(
                COLLECTION, embedding_function=None,
                configuration={"hnsw": {"space": "cosine", "sync_threshold": index.SYNC_THRESHOLD}},
                metadata={"embedder": self.embedder_name},
            )
            hnsw = (getattr(col, "configuration_json", None) or {}).get("hnsw") or {}
            if not self.url and hnsw.get("sync_threshold") != index.SYNC_THRESHOLD:  # made by an older sdrag
                col.modify(configuration={"hnsw": {"sync_threshold": index.SYNC_THRESHOLD}})
        except BaseException:
            with no_failure():
                client.close()
            raise
        if not self.url and new:
            # chroma made the database with its log purge on, and reads that setting only when it starts: start
            # it again, turned off.
            with no_failure():
                client.close()
            forget_system(path)
            self._open(path)
            return
        self.client, self.col = client, col

    def compact(self) -> dict[str, int]:
        """Within a write session: drop the log rows a rebuild no longer needs and give their space back."""
        db = os.path.join(self.location, DB_FILE)
        before = os.path.getsize(db)
        removed, log = self._compact(vacuum=True)
        self.record = {**(self.record or {}), "log": log}
        return {"log_rows_removed": removed, "log_rows": log["rows"], "styles": log["live"], "bytes_before": before,
                "bytes_after": os.path.getsize(db)}

    def _compact(self, vacuum: bool) -> tuple[int, dict[str, int]]:
        """Compact the log with the client closed (chroma reads it afresh); the rows removed and the log after."""
        self.close()
        removed = index.compact(self.location, COLLECTION, vacuum=vacuum)
        return removed, index.log_state(self.location, COLLECTION)

    def _private_copy(self) -> str:
        """Copy the read-only folder into a fresh temp folder (removed on the next reopen or at exit)."""
        tmp = tempfile.mkdtemp(prefix="sdrag-read-only-library-")
        self._copy = weakref.finalize(self, shutil.rmtree, tmp, True)
        dest = os.path.join(tmp, "library")
        try:
            copy_tree(self.location, dest)
        except OSError as exc:
            raise LibraryError(
                f"Cannot read the read-only style library at {self.location} ({exc.strerror or exc}: {exc.filename})."
                " Fix: make its files readable to you, or copy it somewhere writable and use that folder."
            ) from None
        return dest

    def close(self) -> None:
        """Drop the client (the next session opens a fresh one), and a read-only library's private copy."""
        if self.client is not None:
            with no_failure():
                self.client.close()
        self.client = self.col = None
        if self._path is not None:
            forget_system(self._path)
            self._path = None
        if self._copy is not None:
            self._copy()
            self._copy = None

    @contextlib.contextmanager
    def _file_lock(self, op: str, deadline: float, timeout: float) -> Iterator[_Hold]:
        if self.url:
            yield _Hold(None)  # a server serialises its clients itself
            return
        read_only = read_only_reason(self.location)
        if fcntl is None:
            warnings.warn(f"No file locks on this system: run only one process on the style library at {self.location}"
                          " at a time, or serve it with `chroma run`.", RuntimeWarning, stacklevel=5)
            yield _Hold(None, read_only)
            return
        lock = Path(self.location) / LOCK_FILE
        fd, read_only = self._open_lock(lock, read_only)
        if fd is None:
            yield _Hold(None, read_only)
            return
        # Shared where the folder is read-only: it keeps writers out all the same, and some file systems (NFS)
        # give an exclusive lock only to a file opened for writing.
        mode = fcntl.LOCK_SH if read_only else fcntl.LOCK_EX
        try:
            delay = 0.001
            while True:
                try:
                    fcntl.flock(fd, mode | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise self._busy(op, holder(fd), timeout) from None
                    time.sleep(delay)
                    delay = min(delay * 2, 0.05)
                except OSError as exc:
                    if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.EBADF):
                        raise
                    warnings.warn(f"The file system of {lock} does not support locks ({exc.strerror}): run only one"
                                  " process on this style library at a time.", RuntimeWarning, stacklevel=5)
                    break
            yield _Hold(fd, read_only)
        finally:
            os.close(fd)  # releases the lock, also on a crash or kill

    def _open_lock(self, lock: Path, read_only: str) -> tuple[int | None, str]:
        """The lock file, opened for writing where the folder is writable and read-only where it is not (flock
        works on either); None where a read-only folder has none, as then no writer of sdrag's can be using it
        either. Also returns why the folder is read-only ('' where it is writable)."""
        if not read_only:
            try:
                return os.open(lock, os.O_RDWR | os.O_CREAT, 0o666), ""
            except OSError as exc:
                if exc.errno not in READ_ONLY_ERRNOS:
                    raise self._lock_error(lock, exc) from None
                read_only = f"{lock} cannot be opened for writing: {exc.strerror}"
        try:
            return os.open(lock, os.O_RDONLY), read_only
        except FileNotFoundError:
            return None, read_only
        except OSError as exc:
            raise self._lock_error(lock, exc) from None

    def _lock_error(self, lock: Path, exc: OSError) -> LibraryError:
        if not os.path.isdir(self.location):
            return LibraryError(f"The style library folder {self.location} is missing or not a folder"
                                f" ({exc.strerror}). Fix: use a writable folder that only sdrag's ChromaDB uses.")
        return LibraryError(f"Cannot open the library lock file {lock}: {exc.strerror}. Fix: use a library folder"
                            " you can read and write.")

    def _busy(self, op: str, holder: str, timeout: float) -> LibraryError:
        return LibraryError(
            f"The style library at {self.location} is busy: {holder} has held it for more than {timeout:g} s,"
            f" so this {op} gave up. Fix: wait for that to finish and retry, stop it if it is stuck, or pass a longer"
            f" lock_timeout; for many processes writing at once, serve the folder with `chroma run --path"
            f" {self.location} --port 8000` and use 'http://127.0.0.1:8000' as the library."
        )

    def _read_only_error(self, op: str, why: str) -> LibraryError:
        return LibraryError(
            f"The style library at {self.location} is read-only ({why}), so this {op} cannot write to it; searching"
            f" and reading it work. Fix: copy it somewhere writable (`cp -r {self.location} NEW_FOLDER`) and use"
            " that folder as the library, or make this one writable."
        )


_STORES: dict[str, Store] = {}
_STORES_LOCK = threading.Lock()


def store_for(location: str, url: str | None, embedder_name: str) -> Store:
    """The one Store of this process for `location`."""
    with _STORES_LOCK:
        store = _STORES.get(location)
        if store is None:
            store = _STORES[location] = Store(location, url, embedder_name)
        return store
