"""One library entry: the `Style` a caller gets back, and the metadata stored for it in ChromaDB.

Shared by a folder ingest (`ingest.py`) and the single-file add and reads of `library.py`: reading an image file
within limits, the metadata dict chroma stores (`name` and `path`, which are looked up, one boolean key per tag, so
tags are filterable, and the rest packed in one JSON text), the checks that keep text chroma cannot store out, and
bounded, printable text for messages.
"""

from __future__ import annotations

import json
import os
import re
import reprlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from PIL import Image

from ..errors import InputError, LibraryError, StyleNotFoundError
from ..images import load_image

__all__ = [
    "IMAGE_SUFFIXES", "MAX_ASPECT", "MAX_FILE_BYTES", "Style", "as_style", "defaults", "existing_path", "flat",
    "image_files", "key_list", "metadata", "read_limited", "replacing", "short", "short_path", "shown", "tag_filter",
    "tag_list", "text_problem", "usable",
]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
MAX_FILE_BYTES = 256 * 2**20
# CLIP resizes the short side and centre-crops a square: beyond this the crop is a sliver, and a 1 x 80M-pixel
# strip (small as a PNG) would be resized to gigapixels.
MAX_ASPECT = 50.0
_TAG = "tag:"
# Every stored key is an indexed SQLite row: the fields nobody filters on share one key (docs/benchmarks.md: the
# 100k ingest is ~20% faster).
_PACKED = "style"
_PACKED_FIELDS = ("caption", "licence", "source", "tags", "sha256", "width", "height")
_SID = re.compile(r"[0-9a-f]{16}")
_SHA = re.compile(r"[0-9a-f]{64}")


@dataclass
class Style:
    """One library entry; `score` (cosine similarity) is set on search hits."""

    id: str
    name: str
    path: str
    caption: str = ""
    tags: list[str] = field(default_factory=list)
    licence: str = ""
    source: str = ""
    sha256: str = ""
    score: float | None = None
    # How a search hit ranked in each method: {"method", "dense": {rank, score}, "lexical": {rank, score, terms},
    # "fused"}; None outside search results.
    explanation: dict | None = None

    def image(self) -> Image.Image:
        """Load the reference image."""
        try:
            return load_image(self.path)
        except InputError as exc:
            raise self._unreadable(exc) from None

    def image_bytes(self) -> bytes:
        """The reference image file's bytes (to send where the library's files cannot be read)."""
        try:
            return read_limited(Path(self.path))
        except (OSError, InputError) as exc:
            raise self._unreadable(exc) from None

    def _unreadable(self, exc: Exception) -> LibraryError:
        return LibraryError(f"Style {self.name!r} [{self.id}] cannot be read from {self.path} ({shown(exc)}). Fix:"
                            " re-ingest its folder from where it lives now, or remove the style.")

    def to_dict(self) -> dict:
        """Return a JSON-serialisable dict."""
        return asdict(self)


def all_metadata(col: Any, where: dict | None = None, page: int = 5000) -> dict[str, dict]:
    """Every entry's metadata by id, read a page at a time (one unpaged read fails past ~32,000 entries: SQLite
    allows that many variables per statement)."""
    found: dict[str, dict] = {}
    while True:
        res = col.get(where=where, include=["metadatas"], limit=page, offset=len(found))
        found.update({sid: meta or {} for sid, meta in zip(res["ids"], res["metadatas"])})
        if len(res["ids"]) < page:
            return found


def flat(meta: dict | None) -> dict:
    """A stored entry's fields as one dict (name, path, caption, licence, source, comma-joined tags, sha256, width,
    height), whether it was stored packed or one key per field (as libraries made before the packed form hold it)."""
    meta = meta or {}
    if _PACKED not in meta:
        return {k: v for k, v in meta.items() if not k.startswith(_TAG)}
    try:
        packed = json.loads(meta[_PACKED]) if isinstance(meta[_PACKED], str) else {}
    except ValueError:
        packed = {}  # edited by hand: the fields read as missing, as an old entry without them does
    packed = packed if isinstance(packed, dict) else {}
    fields = {k: packed[k] for k in _PACKED_FIELDS if k in packed}
    if isinstance(fields.get("tags"), list):
        fields["tags"] = ",".join(map(str, fields["tags"]))
    return {**fields, **{k: meta[k] for k in ("name", "path") if k in meta}}


def as_style(sid: str, meta: dict | None, score: float | None = None) -> Style:
    """The Style of a stored entry: its id and its chroma metadata (and a search hit's score)."""
    meta = flat(meta)
    tags = [t for t in str(meta.get("tags", "")).split(",") if t]
    return Style(id=sid, name=meta.get("name", sid), path=meta.get("path", ""), caption=meta.get("caption", ""),
                 tags=tags, licence=meta.get("licence", ""), source=meta.get("source", ""),
                 sha256=meta.get("sha256", ""), score=score)


# -- files ----------------------------------------------------------------------------------------------


def existing_path(path: Any, folder: bool) -> Path | None:
    """`path` resolved if it names an existing folder (or file); None for anything unusable, NUL bytes included."""
    try:
        resolved = Path(path).expanduser().resolve()
        return resolved if (resolved.is_dir() if folder else resolved.is_file()) else None
    except (OSError, ValueError, TypeError, RuntimeError):
        return None


def image_files(folder: Path) -> Iterator[tuple[Path, Path]]:
    """Each image file under `folder` (none under a hidden name) and what it resolves to, in name order."""
    for file in sorted(folder.rglob("*")):
        rel = file.relative_to(folder)
        if file.suffix.lower() not in IMAGE_SUFFIXES or any(part.startswith(".") for part in rel.parts):
            continue
        try:
            if not file.is_file():
                continue
            target = file.resolve()
        except (OSError, RuntimeError):
            continue
        yield file, target


def read_limited(file: Path) -> bytes:
    """The bytes of `file`; InputError if it holds more than MAX_FILE_BYTES."""
    with open(file, "rb") as fh:
        data = fh.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise InputError(f"{shown(file.name)} is larger than {MAX_FILE_BYTES >> 20} MB. Fix: downscale or"
                         " re-compress it.")
    return data


def usable(image: Image.Image, label: str) -> Image.Image:
    """`image` if CLIP can see it as a style; InputError for a strip longer than MAX_ASPECT:1."""
    aspect = max(image.width, image.height) / max(1, min(image.width, image.height))
    if aspect > MAX_ASPECT:
        raise InputError(
            f"{shown(label)} is {image.width}x{image.height} pixels; CLIP sees only a centred square, so a strip"
            f" longer than {MAX_ASPECT:g}:1 cannot be a style. Fix: crop it to the part that shows the style."
        )
    return image


# -- metadata -------------------------------------------------------------------------------------------


def defaults(file: Path) -> dict:
    """The metadata of an image nobody described: its name from the file name, licence unknown."""
    return {"name": file.stem.replace("_", " ").replace("-", " "), "caption": "", "tags": [],
            "licence": "unknown", "source": ""}


def tag_list(value: Any) -> list[str]:
    """Normalise tags given as a list, a comma-separated string or a scalar: lower-case, unique, sorted."""
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple, set, frozenset)) else [value]
    return sorted({t.strip().lower() for v in items for t in str(v).split(",")} - {""})


def metadata(info: dict, file: Path, sha: str, image: Image.Image) -> dict:
    """What chroma stores for `file`: `info` (name, caption, licence, source, tags), path, hash and size."""
    packed = {"caption": info["caption"], "licence": info["licence"], "source": info["source"],
              "tags": list(info["tags"]), "sha256": sha, "width": image.width, "height": image.height}
    # `name` and `path` are looked up with `where`, so they stay keys of their own; chroma metadata holds scalars
    # only, so one boolean key per tag makes tags filterable.
    meta = {"name": info["name"], "path": str(file), _PACKED: json.dumps(packed, sort_keys=True, ensure_ascii=False)}
    meta.update({_TAG + t: True for t in info["tags"]})
    return meta


def replacing(old: dict | None, new: dict) -> dict:
    """`new` as an update of `old`: chroma merges metadata on update and upsert, so dropped keys (a removed
    tag) must be deleted explicitly, with None."""
    return {**{key: None for key in (old or {}) if key not in new}, **new}


def text_problem(meta: dict) -> str:
    """Why chroma would refuse this metadata (text it cannot store as UTF-8), or ''."""
    try:  # every text as stored (the packed one holds the others): the common case, checked cheaply
        for key, value in meta.items():
            key.encode("utf-8")
            if isinstance(value, str):
                value.encode("utf-8")
        return ""
    except UnicodeEncodeError:
        pass
    # Named by field; the path first: a bad file name also spoils the name derived from it.
    fields = {**flat(meta), **{key: value for key, value in meta.items() if key.startswith(_TAG)}}
    for key, value in sorted(fields.items(), key=lambda kv: kv[0] != "path"):
        for text in (key, value):
            if isinstance(text, str):
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    if key == "path":
                        return "its file name is not valid UTF-8. Fix: rename the file"
                    field_name = "a tag" if key.startswith(_TAG) else f"its {key}"
                    return f"{field_name} is not valid text (a lone surrogate). Fix: correct the manifest"
    return ""


def tag_filter(tags: Sequence[str] | str | None) -> dict | None:
    """The chroma `where` clause for entries holding all `tags`; None for no tags."""
    wanted = tag_list(tags)
    if not wanted:
        return None
    if text_problem({_TAG + t: True for t in wanted}):
        raise LibraryError(f"The tags {short(tags)} are not valid text. Fix: pass plain tag names.")
    clauses = [{_TAG + t: True} for t in wanted]
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def key_list(ids: Any) -> list:
    """Style ids (or names) given as one string or an iterable, as a list."""
    if isinstance(ids, str):
        return [ids]
    try:
        return list(ids)
    except TypeError:
        raise StyleNotFoundError(
            f"Style ids must be a string or a list of strings, got {short(ids)}. Fix: pick ids from"
            " wb.library.table()."
        ) from None


# -- text for messages ----------------------------------------------------------------------------------


def shown(value: Any) -> str:
    """`value` as printable text: undecodable file-name bytes become U+FFFD instead of breaking print()."""
    text = str(value)
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a lone surrogate that no file name produced
        return text.encode("utf-8", "replace").decode("utf-8")


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 80
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxtuple = 3, 4, 4, 4


def short(value: Any) -> str:
    """A bounded repr for messages: a hostile value (huge, deeply nested, aliased) cannot flood them."""
    text = shown(_REPR.repr(value))
    return text if len(text) <= 200 else text[:197] + "..."


def short_path(value: Any) -> str:
    """`short` of a path given as text or a path-like object."""
    return short(os.fspath(value) if isinstance(value, os.PathLike) else value)


# -- precomputed vectors (StyleLibrary.add_vectors) ----------------------------------------------------------


def vector_batch(ids: Any, vectors: Any, metas: Any) -> tuple[list[str], np.ndarray, list[dict]]:
    """`add_vectors`' inputs checked: unique 16-hex ids, one finite row and one well-formed metadata dict each."""
    keys = key_list(ids)
    bad = [sid for sid in keys if not isinstance(sid, str) or not _SID.fullmatch(sid)]
    if bad or len(set(keys)) != len(keys):
        raise InputError(f"Style ids must be unique, 16 lower-case hex digits (the start of the image's sha256); got"
                         f" {short(bad or keys)}. Fix: use hashlib.sha256(image_bytes).hexdigest()[:16].")
    try:
        rows = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError):
        rows = np.zeros((0, 0), np.float32)
    if rows.ndim != 2 or rows.shape[0] != len(keys) or not rows.shape[1] or not np.isfinite(rows).all():
        raise InputError(f"The vectors must be one row of finite numbers per id ({len(keys)} rows), got"
                         f" {short(vectors)}. Fix: pass an (n, dim) array such as wb.embedder.embed_images(...).")
    checked = list(metas) if isinstance(metas, (list, tuple)) else []
    if len(checked) != len(keys):
        raise InputError(f"Give one metadata dict per id ({len(keys)}), got {short(metas)}.")
    for sid, meta in zip(keys, checked):
        problem = meta_problem(sid, meta)
        if problem:
            raise InputError(f"Cannot add style {sid}: {problem}.")
    return keys, rows, checked


def meta_problem(sid: str, meta: Any) -> str:
    """Why `meta` is not what `entries.metadata` makes for style `sid`, or ''."""
    texts = ("name", "caption", "licence", "source", "tags", "path", "sha256")
    fields = flat(meta) if isinstance(meta, dict) and _PACKED in meta else {}
    if (not all(isinstance(fields.get(key), str) for key in texts)
            or not all(type(fields.get(key)) is int and fields[key] > 0 for key in ("width", "height"))):
        return (f"its metadata must hold text {', '.join(texts)} and positive whole width and height, got"
                f" {short(meta)}. Fix: build it with sdrag.retrieval.entries.metadata")
    if not _SHA.fullmatch(fields["sha256"]) or fields["sha256"][:16] != sid:
        return "its id must be the first 16 digits of its sha256 (64 lower-case hex digits)"
    info = {key: fields[key] for key in ("name", "caption", "licence", "source")}
    info["tags"] = tag_list(fields["tags"])
    size = SimpleNamespace(width=fields["width"], height=fields["height"])
    if metadata(info, fields["path"], fields["sha256"], size) != meta:
        return ("its tags must be lower-case, unique and sorted, with one 'tag:NAME': True key each and no other"
                " keys. Fix: build it with sdrag.retrieval.entries.metadata")
    return text_problem(meta)
