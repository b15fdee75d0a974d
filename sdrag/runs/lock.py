"""One writer per folder: an exclusive, non-blocking `flock` that names its holder to whoever is refused."""

from __future__ import annotations

import os
import time
from pathlib import Path

from .spec import SweepError

try:
    import fcntl
except ImportError:  # Windows: no flock; one writer per folder is then the user's to keep
    fcntl = None


class FolderLock:
    """Held by a `with` block; a second holder (another process or thread) is refused at once, not queued."""

    def __init__(self, path: Path):
        """`path` is the lock file (created if missing, never removed: its presence marks the folder)."""
        self.path = path
        self._fd: int | None = None

    def __enter__(self) -> FolderLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode("ascii", "replace").strip() or "another process"
                os.close(fd)
                raise SweepError(f"Another sweep is writing to {self.path.parent} ({holder}); two writers would"
                                 " spoil each other's files. Fix: wait for it to finish, or pass another out_dir."
                                 ) from None
        record = f"process {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, record, 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock (also when the process dies)
            self._fd = None
