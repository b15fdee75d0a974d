"""Thumbnails in a run folder: small JPEGs of its cells and styles, named by the content they show.

A name taken from the image's sha256 means a thumbnail can never show a cell's earlier image: a remade cell
gets a new name, and an old thumbnail is simply unused.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..errors import SdragError
from ..files import atomic_write_bytes, image_bytes
from ..images import load_image
from .folder import RunFolder
from .schema import SHA256
from .spec import SweepError

THUMB_PX = 192


def _thumbs_dir(folder: RunFolder) -> Path:
    """The thumbs/ folder, made if missing; a link or a file there is refused (nothing is written outside)."""
    path = folder.path / "thumbs"
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise SweepError(f"{path} is a link or a file; sdrag writes only inside the run folder. Fix: remove it and"
                         " write the report again.")
    path.mkdir(exist_ok=True)
    return path


def _thumbnail(source: Path, target: Path, side: int) -> bool:
    """Write a JPEG of `source` at most `side` px a side to `target`; False when the source cannot be read."""
    if target.is_file() and not target.is_symlink():
        return True
    try:
        img = load_image(source).convert("RGB")
    except (SdragError, OSError, ValueError):
        return False
    img.thumbnail((side, side))
    atomic_write_bytes(target, image_bytes(img, "JPEG", quality=85))
    return True


def cell_thumbnail(folder: RunFolder, row: dict, side: int = THUMB_PX) -> str | None:
    """The path (relative to the folder) of an ok row's thumbnail, made if missing; None if its image is gone."""
    sha = row.get("image_sha256")
    if not isinstance(sha, str) or not SHA256.fullmatch(sha):
        return None
    name = f"thumbs/{sha[:24]}-{side}.jpg"
    try:
        source = folder.cell_file(row["image"])
    except SweepError:
        return None
    try:
        made = _thumbnail(source, _thumbs_dir(folder) / Path(name).name, side)
    except OSError:  # a folder that is read-only to us: the full image serves instead
        return row["image"]
    return name if made else None


def style_thumbnail(folder: RunFolder, sid: str, side: int = THUMB_PX) -> str | None:
    """The path (relative to the folder) of a kept style image's thumbnail; None if the folder holds no copy."""
    source = folder.style_file(sid)
    if source is None:
        return None
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    name = f"thumbs/style-{digest[:24]}-{side}.jpg"
    try:
        made = _thumbnail(source, _thumbs_dir(folder) / Path(name).name, side)
    except OSError:  # read-only to us
        return source.relative_to(folder.path).as_posix()
    return name if made else None
