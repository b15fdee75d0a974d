"""Files: atomic writes (a crash never leaves a half-written file), plain names, image bytes and hashes, and
where sdrag keeps its cache. The foundation every layer writes through."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from PIL import Image

from .errors import ParameterError, StorageError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` via a temp file in the same folder and a rename."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp makes 0600 files; give the result the permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, StorageError):
            raise StorageError(
                f"Could not write {path}: {exc.strerror or exc}. The file was left as it was. Fix: free disk space"
                " or fix the folder's permissions, then run again."
            ) from exc
        raise
    return path


def atomic_write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write `data` as indented UTF-8 JSON, atomically."""
    return atomic_write_bytes(path, (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode())


def image_bytes(image: Image.Image, format: str = "PNG", **save_kwargs: Any) -> bytes:
    """The encoded file of a PIL image (PNG unless told), as bytes."""
    buf = io.BytesIO()
    image.save(buf, format=format, **save_kwargs)
    return buf.getvalue()


def pixels_sha256(image: Image.Image) -> str:
    """sha256 of an image's decoded pixels: equal for equal pictures whatever file they were read from."""
    return hashlib.sha256(image.tobytes()).hexdigest()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    """A file's bytes (a PNG unless told) as a data URI, so an HTML page or widget shows it with nothing fetched."""
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def atomic_save_image(image: Image.Image, path: str | os.PathLike, **save_kwargs: Any) -> Path:
    """Save a PIL image (format from the suffix), atomically."""
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    return atomic_write_bytes(path, image_bytes(image, fmt, **save_kwargs))


def canonical(value: Any) -> str:
    """One JSON text per value (keys sorted), so equal values compare, group and hash alike."""
    return json.dumps(value, sort_keys=True, default=str)


def safe_name(name: str, what: str = "name") -> str:
    """Return `name` if it is a plain file name (no separators, no '..', no NUL); else raise."""
    if (not isinstance(name, str) or not name.strip() or name in (".", "..") or "\x00" in name
            or "/" in name or "\\" in name or Path(name).is_absolute()):
        raise ParameterError(f"{what} {name!r} is not a plain name. Fix: use letters, digits, '-', '_' or '.'.")
    return name


def project_root(start: str | os.PathLike | None = None) -> Path:
    """The sdrag checkout holding `start` (the folder with styles/ and experiments/), else `start` itself.

    Notebooks run with their own folder as working directory in Jupyter and with the caller's under
    papermill; resolving paths from the project root makes both work the same.
    """
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "styles").is_dir() and (folder / "experiments").is_dir():
            return folder
    return here


def cache_root() -> Path:
    """sdrag's cache folder (`$SDRAG_CACHE`, else `~/.cache/sdrag`): tiny builds, libraries, hash memos."""
    return Path(os.environ.get("SDRAG_CACHE") or Path.home() / ".cache" / "sdrag").expanduser()
