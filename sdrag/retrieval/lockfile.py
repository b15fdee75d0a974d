"""A library folder's lock file (`sdrag.lock`): its record of writes and holders; and what makes a folder read-only.

store.py takes the lock; this module only reads and writes what the lock file says, and tells why a folder cannot
be written.
"""

from __future__ import annotations

import errno
import os
import shutil
import time

from .faults import DB_FILE

LOCK_FILE = "sdrag.lock"
RECORD_BYTES = 128
READ_ONLY_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS)


# -- lock file ------------------------------------------------------------------------------------------
# One fixed-size record: a token that every write changes (so other processes know to reopen), then who holds
# the lock now (for the message when another process waits too long). Only a writable folder's is written.


def read_token(fd: int) -> str:
    """The write token in the lock file's record."""
    return os.pread(fd, RECORD_BYTES, 0).decode("ascii", "replace").split("\n", 1)[0].strip()


def write_record(fd: int, token: str, op: str) -> None:
    """Record the write token and who holds the lock now."""
    record = f"{token}\n{os.getpid()} {op} {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode()
    os.pwrite(fd, record[:RECORD_BYTES].ljust(RECORD_BYTES, b" "), 0)


def holder(fd: int) -> str:
    """Who holds the lock, in words, from its record."""
    try:
        pid, op, day, clock = os.pread(fd, RECORD_BYTES, 0).decode("ascii", "replace").split("\n")[1].split()
    except (OSError, ValueError, IndexError):
        return "another process"
    if pid == str(os.getpid()):
        return f"another thread of this process ({op}, since {clock})"
    return f"process {pid} ({op}, since {day} {clock})"


# -- read-only folders ----------------------------------------------------------------------------------


def read_only_reason(folder: str) -> str:
    """Why sdrag cannot write the library folder (a read-only file system, no write permission), or ''."""
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return f"{folder} is on a read-only file system"
    except (OSError, AttributeError):  # no folder (reported by the lock), or no statvfs (Windows)
        pass
    for path in (folder, os.path.join(folder, DB_FILE)):
        if os.path.exists(path) and not os.access(path, os.W_OK):
            return f"no write permission on {path}"
    return ""


def copy_tree(src: str, dest: str) -> None:
    """Copy a library folder (not its lock file) with fresh, writable permissions; any unreadable part raises."""
    def fail(exc: OSError) -> None:
        raise exc

    for root, _dirs, files in os.walk(src, onerror=fail):
        rel = os.path.relpath(root, src)
        os.makedirs(os.path.join(dest, rel), exist_ok=True)
        for name in files:
            if not (rel == "." and name == LOCK_FILE):
                shutil.copyfile(os.path.join(root, name), os.path.join(dest, rel, name))
