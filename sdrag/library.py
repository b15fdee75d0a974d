"""The style library: reference images, CLIP-embedded, in a persistent ChromaDB collection (cosine space).

Where the collection lives (a folder shared under a file lock, or a `chroma run` server) is `store.py`'s concern.
"""

from __future__ import annotations

import hashlib
import json
import os
import reprlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from .errors import InputError, LibraryError, SdragError, StyleNotFoundError
from .images import load_image
from .store import LOCK_TIMEOUT_S, server_url, store_for

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
MANIFEST_NAMES = ("manifest.yaml", "manifest.yml", "manifest.json")
MAX_FILE_BYTES = 256 * 2**20
MAX_MANIFEST_BYTES = 16 * 2**20
# CLIP resizes the short side and centre-crops a square: beyond this the crop is a sliver, and a 1 x 80M-pixel
# strip (small as a PNG) would be resized to gigapixels.
MAX_ASPECT = 50.0
_TAG = "tag:"


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

    def image(self) -> Image.Image:
        """Load the reference image."""
        try:
            return load_image(self.path)
        except InputError as exc:
            raise LibraryError(
                f"Style {self.name!r} [{self.id}] cannot be read from {self.path} ({exc}). Fix: re-ingest its"
                " folder from where it lives now, or remove the style."
            ) from None

    def to_dict(self) -> dict:
        """Return a JSON-serialisable dict."""
        return asdict(self)


@dataclass
class IngestItem:
    """What happened to one file during an ingest."""

    path: str
    id: str | None = None
    name: str | None = None
    reason: str = ""


@dataclass
class IngestReport:
    """Files added, updated and skipped (each skipped one with its reason)."""

    added: list[IngestItem] = field(default_factory=list)
    updated: list[IngestItem] = field(default_factory=list)
    skipped: list[IngestItem] = field(default_factory=list)

    def table(self) -> pd.DataFrame:
        """One row per file with its outcome."""
        rows = [{"outcome": outcome, **asdict(item)}
                for outcome in ("added", "updated", "skipped") for item in getattr(self, outcome)]
        return pd.DataFrame(rows, columns=["outcome", "path", "id", "name", "reason"])

    def __str__(self) -> str:
        return f"{len(self.added)} added, {len(self.updated)} updated, {len(self.skipped)} skipped"


class StyleLibrary:
    """Style reference images in a persistent ChromaDB collection, searchable by text or image."""

    def __init__(self, path: str | Path, embedder: Callable[[], Any], embedder_name: str,
                 lock_timeout: float = LOCK_TIMEOUT_S):
        """Open (or create) the library: a folder, or a chroma server URL such as "http://127.0.0.1:8000".

        `embedder` is called lazily to get a ClipEmbedder. Operations wait up to `lock_timeout` seconds for
        another process using the same folder, then raise LibraryError.
        """
        self._embedder_factory = embedder
        self.embedder_name = embedder_name
        self.lock_timeout = float(lock_timeout)
        url = server_url(path)
        self.path: Path | str
        if url:
            self.path = location = url
        else:
            try:
                self.path = Path(path).expanduser().resolve()
                self.path.mkdir(parents=True, exist_ok=True)
            except (OSError, ValueError, TypeError, RuntimeError) as exc:
                raise LibraryError(
                    f"Cannot use {_short_path(path)} as a style library folder ({exc}). Fix: pass a writable folder"
                    " path (or a chroma server URL such as 'http://127.0.0.1:8000')."
                ) from None
            location = str(self.path)
        self._store = store_for(location, url, embedder_name)
        with self._session("open") as col:
            built_with = (col.metadata or {}).get("embedder")
        if built_with != embedder_name:
            raise LibraryError(
                f"The library at {self.path} was built with embedder {built_with!r}, but this workbench uses"
                f" {embedder_name!r}; their vectors are not comparable. Fix: pass another library_dir, or"
                " open it with the preset that built it."
            )

    @property
    def embedder(self):
        """The CLIP embedder (loaded on first use)."""
        return self._embedder_factory()

    def __len__(self) -> int:
        with self._session("count") as col:
            return col.count()

    def _session(self, op: str, write: bool = False):
        """Hold the library for one operation (see Store.session); yields the collection."""
        return self._store.session(op, write, self.lock_timeout)

    # -- ingest -----------------------------------------------------------------------------------------

    def ingest(self, folder: str | Path, batch_size: int = 32, progress: bool = True) -> IngestReport:
        """Add a folder of images (with an optional manifest.yaml) idempotently.

        Ids are content hashes, so re-ingesting adds nothing; a changed file replaces its old entry; an
        edited manifest updates metadata. A file that cannot be used is skipped with its reason. Embedding
        runs outside the library lock; each batch is written under it, so other processes can read and write
        in between, and a killed ingest keeps every batch it finished.
        """
        folder = _style_folder(folder)
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise LibraryError(f"batch_size must be a whole number of at least 1, got {batch_size!r}.")
        report = IngestReport()
        entries = _read_manifest(folder, report)
        with self._session("ingest") as col:
            existing = _all_metadata(col)
        by_path = {meta.get("path"): sid for sid, meta in existing.items()}
        seen: dict[str, str] = {}
        current: dict[str, str] = {}  # path -> id of the bytes there now
        updates: list[tuple[str, dict, IngestItem]] = []
        todo: list[tuple[str, dict, Path, IngestItem, list[IngestItem]]] = []
        for file, info in entries.items():
            item = IngestItem(path=_shown(file), name=_shown(info["name"]))
            try:
                data = _read_limited(file)
                image = _usable(load_image(data), file.name)
            except (OSError, SdragError) as exc:
                item.reason = f"unreadable: {_shown(exc)}"
                report.skipped.append(item)
                continue
            sha = hashlib.sha256(data).hexdigest()
            sid = item.id = sha[:16]
            meta = _metadata(info, file, sha, image)
            problem = _text_problem(meta)
            if problem:
                item.reason = problem
                report.skipped.append(item)
                continue
            if sid in seen:
                item.reason = f"duplicate of {seen[sid]} (same bytes)"
                report.skipped.append(item)
                continue
            seen[sid] = str(file)
            current[str(file)] = sid
            if sid in existing:
                if existing[sid] == meta:
                    item.reason = "unchanged"
                    report.skipped.append(item)
                else:
                    item.reason = "metadata changed"
                    report.updated.append(item)
                    updates.append((sid, meta, item))
                continue
            # Images are decoded again at embedding time, so a big folder is never held in memory at once.
            old = by_path.get(str(file))
            if old is not None:
                item.reason = f"file changed (replaces {old})"
                report.updated.append(item)
                todo.append((sid, meta, file, item, report.updated))
            else:
                report.added.append(item)
                todo.append((sid, meta, file, item, report.added))
        if updates:
            with self._session("ingest", write=True) as col:
                col.update(ids=[sid for sid, *_ in updates],
                           metadatas=[_replacing(existing[sid], meta) for sid, meta, _ in updates])
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="embedding styles", unit="img", disable=not (progress and todo))
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            datas: list[bytes] = []
            ready = []
            for entry in chunk:
                sid, meta, file, item, outcome = entry
                # Embed the very bytes that were hashed: a file rewritten since then would get a wrong id.
                try:
                    data = _read_limited(file)
                except OSError as exc:
                    data, why = None, f"unreadable: {_shown(exc)}"
                else:
                    why = "changed while being ingested. Fix: run the ingest again"
                if data is None or hashlib.sha256(data).hexdigest() != meta["sha256"]:
                    _move(item, outcome, report.skipped, why)
                    continue
                datas.append(data)
                ready.append(entry)
            vectors = self.embedder.embed_images(datas) if datas else None
            if ready:
                self._store_chunk(ready, vectors, report)
            bar.update(len(chunk))
        bar.close()
        # Entries whose file now holds other bytes are dropped only after their replacements are stored, so
        # a crash in between leaves a stale entry that the next ingest removes, never a missing one.
        with self._session("ingest") as col:
            stale = _stale(_all_metadata(col), current)
        if stale:
            with self._session("ingest", write=True) as col:
                stale = _stale(_all_metadata(col), current)  # again, under the write lock
                if stale:
                    col.delete(ids=stale)
        return report

    def _store_chunk(self, ready: list, vectors: np.ndarray, report: IngestReport) -> None:
        with self._session("ingest", write=True) as col:
            # Another process may have stored some of these since the plan was made (same folder at once).
            ids = [sid for sid, *_ in ready]
            have = col.get(ids=ids, include=["metadatas"])
            stored = dict(zip(have["ids"], have["metadatas"]))
            keep = []
            for k, (sid, meta, _file, item, outcome) in enumerate(ready):
                if stored.get(sid) == meta:
                    _move(item, outcome, report.skipped, "unchanged (stored meanwhile by another process)")
                else:
                    keep.append(k)
            if keep:
                self._write(col, [ids[k] for k in keep], vectors[keep], [ready[k][1] for k in keep], stored)

    def add(self, path: str | Path, name: str | None = None, caption: str = "", tags: Sequence[str] | str = (),
            licence: str = "unknown", source: str = "") -> Style:
        """Add (or update) one image file with its metadata; returns the stored Style."""
        file = _existing(path, folder=False)
        if file is None:
            raise InputError(f"Image file not found: {_short_path(path)}. Fix: check the path (it must be a file).")
        try:
            data = _read_limited(file)
        except OSError as exc:
            raise InputError(f"Cannot read {_shown(file)} ({_shown(exc)}). Fix: check its permissions.") from None
        image = _usable(load_image(data), file.name)
        sha = hashlib.sha256(data).hexdigest()
        info = {**_defaults(file), "caption": str(caption), "licence": str(licence), "source": str(source),
                "tags": _tags(tags)}
        if name is not None and str(name).strip():
            info["name"] = str(name)
        meta = _metadata(info, file, sha, image)
        problem = _text_problem(meta)
        if problem:
            raise InputError(f"Cannot add {_shown(file)}: {problem}.")
        vector = self.embedder.embed_images([image])
        with self._session("add", write=True) as col:
            self._write(col, [sha[:16]], vector, [meta])
            # As ingest does: the entry of this file's earlier bytes goes once the new one is stored.
            same_file = col.get(where={"path": meta["path"]}, include=[])["ids"]
            old = [sid for sid in same_file if sid != sha[:16]]
            if old:
                col.delete(ids=old)
        return _style(sha[:16], meta)

    def _write(self, col: Any, ids: list[str], vectors: np.ndarray, metas: list[dict],
               stored: dict[str, dict] | None = None) -> None:
        if stored is None:
            have = col.get(ids=ids, include=["metadatas"])
            stored = dict(zip(have["ids"], have["metadatas"]))
        metas = [_replacing(stored[sid], meta) if sid in stored else meta for sid, meta in zip(ids, metas)]
        step = max(1, self._store.client.get_max_batch_size())
        for i in range(0, len(ids), step):
            col.upsert(ids=ids[i:i + step], embeddings=vectors[i:i + step].tolist(), metadatas=metas[i:i + step])

    # -- read -------------------------------------------------------------------------------------------

    def search(self, query: Any, k: int = 3, tags: Sequence[str] | str | None = None) -> list[Style]:
        """Return the top-k styles for a text (str) or an image (PIL image, array, bytes or pathlib.Path)."""
        if isinstance(query, str):
            if not query.strip():
                raise LibraryError("Empty search text. Fix: describe the style you want, e.g. 'neon city'.")
            vector = self.embedder.embed_text([query])[0]
        else:
            image = _usable(load_image(query), "the query image")
            vector = self.embedder.embed_images([image])[0]
        return self.search_vector(vector, k=k, tags=tags)

    def search_vector(self, vector: np.ndarray, k: int = 3, tags: Sequence[str] | str | None = None) -> list[Style]:
        """Return the top-k styles nearest to an embedding."""
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise LibraryError(f"k must be a whole number of at least 1, got {k!r}.")
        try:
            vec = np.asarray(vector, dtype=np.float32)
        except (TypeError, ValueError):
            vec = np.zeros(0, np.float32)
        if vec.ndim != 1 or vec.size == 0 or not np.isfinite(vec).all():
            raise LibraryError(
                f"A query vector must be one row of finite numbers, got {_short(vector)}. Fix: pass one row of"
                " wb.embedder.embed_text([...]) or embed_images([...])."
            )
        where = _tag_filter(tags)
        with self._session("search") as col:
            n = min(k, col.count())
            if n == 0:
                raise LibraryError(
                    f"The style library at {self.path} is empty. Fix: wb.library.ingest('styles/') first."
                )
            try:
                res = col.query(query_embeddings=[vec.tolist()], n_results=n, where=where,
                                include=["metadatas", "distances"])
            except Exception as exc:
                if "dimension" not in str(exc):
                    raise
                raise LibraryError(
                    f"The query vector does not fit the library at {self.path} ({exc}). Fix: embed the query with"
                    " the embedder that built the library (wb.embedder)."
                ) from None
        hits = [_style(sid, meta, score=1.0 - float(dist))
                for sid, meta, dist in zip(res["ids"][0], res["metadatas"][0], res["distances"][0])]
        if not hits and where:
            raise LibraryError(f"No style has all tags {_tags(tags)}. Fix: check wb.library.table().")
        return hits

    def get(self, key: str) -> Style:
        """Return a style by id or by (unique) name."""
        with self._session("get") as col:
            return self._resolve(col, key)

    def _resolve(self, col: Any, key: Any) -> Style:
        if not isinstance(key, str) or not key or _text_problem({"key": key}):
            raise StyleNotFoundError(
                f"A style id or name must be non-empty text, got {_short(key)}. Fix: pick one from"
                " wb.library.table()."
            )
        res = col.get(ids=[key], include=["metadatas"])
        if res["ids"]:
            return _style(res["ids"][0], res["metadatas"][0])
        res = col.get(where={"name": key}, include=["metadatas"])
        if len(res["ids"]) == 1:
            return _style(res["ids"][0], res["metadatas"][0])
        if res["ids"]:
            raise StyleNotFoundError(
                f"Style name {_short(key)} is ambiguous (ids {sorted(res['ids'])}). Fix: use one of the ids."
            )
        raise StyleNotFoundError(
            f"No style with id or name {_short(key)} in {self.path}. Fix: pick one from wb.library.table()."
        )

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        """Return the stored embeddings of `ids`, in order."""
        keys = _keys(ids)
        if not keys:
            return np.zeros((0, 0), dtype=np.float32)
        with self._session("vectors") as col:
            res = col.get(ids=list(dict.fromkeys(keys)), include=["embeddings"])
        found = dict(zip(res["ids"], res["embeddings"]))
        missing = [i for i in keys if i not in found]
        if missing:
            raise StyleNotFoundError(f"No style with id(s) {missing}. Fix: pick ids from wb.library.table().")
        return np.asarray([found[i] for i in keys], dtype=np.float32)

    def list(self, tags: Sequence[str] | str | None = None) -> list[Style]:
        """Return every style (optionally only those with all `tags`), sorted by name."""
        with self._session("list") as col:
            res = col.get(where=_tag_filter(tags), include=["metadatas"])
        styles = [_style(sid, meta) for sid, meta in zip(res["ids"], res["metadatas"])]
        return sorted(styles, key=lambda s: (s.name.lower(), s.id))

    def table(self, tags: Sequence[str] | str | None = None) -> pd.DataFrame:
        """Return the styles as a DataFrame (one row per style)."""
        cols = [f for f in Style.__dataclass_fields__ if f != "score"]
        return pd.DataFrame([{c: getattr(s, c) for c in cols} for s in self.list(tags)], columns=cols)

    def snapshot(self) -> list[dict]:
        """Return [{id, sha256}] for every style: what a manifest records to pin the library state."""
        return [{"id": s.id, "sha256": s.sha256} for s in sorted(self.list(), key=lambda s: s.id)]

    def remove(self, ids: str | Sequence[str]) -> int:
        """Remove styles by id or name; returns how many were removed. Unknown keys raise first."""
        keys = _keys(ids)
        if not keys:
            return 0
        with self._session("remove", write=True) as col:
            resolved = sorted({self._resolve(col, k).id for k in keys})
            col.delete(ids=resolved)
        return len(resolved)


# -- manifest and metadata helpers ----------------------------------------------------------------------


def _existing(path: Any, folder: bool) -> Path | None:
    """`path` resolved if it names an existing folder (or file); None for anything unusable, NUL bytes included."""
    try:
        resolved = Path(path).expanduser().resolve()
        return resolved if (resolved.is_dir() if folder else resolved.is_file()) else None
    except (OSError, ValueError, TypeError, RuntimeError):
        return None


def _style_folder(folder: Any) -> Path:
    path = _existing(folder, folder=True)
    if path is None:
        raise LibraryError(f"Style folder not found: {_short_path(folder)}. Fix: pass a folder of images.")
    return path


def _read_manifest(folder: Path, report: IngestReport) -> dict[Path, dict]:
    """Map each image file to its metadata: manifest entries first, then unlisted images with defaults."""
    raw: list = []
    for name in MANIFEST_NAMES:
        mf = folder / name
        if mf.is_file():
            raw = _parse_manifest(mf)
            break
    entries: dict[Path, dict] = {}
    for item in raw:
        got = _entry(item, folder, report)
        if got is not None:
            entries.setdefault(got[0], got[1])
    reported = {item.path for item in report.skipped}
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
        if not target.is_relative_to(folder):
            if _shown(file) in reported:
                continue
            report.skipped.append(IngestItem(path=_shown(file), reason="a link to a file outside the style folder."
                                             " Fix: copy the file into the folder"))
        elif target not in entries:
            entries[target] = _defaults(file)
    return entries


def _parse_manifest(mf: Path) -> list:
    import yaml

    try:
        if mf.stat().st_size > MAX_MANIFEST_BYTES:
            raise LibraryError(f"The manifest {mf} is larger than {MAX_MANIFEST_BYTES >> 20} MB. Fix: list only"
                               " file names and short metadata in it.")
        text = mf.read_text(encoding="utf-8")
        data = json.loads(text) if mf.suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError, yaml.YAMLError) as exc:
        raise LibraryError(f"Cannot read the manifest {mf}: {_shown(exc)}. Fix: correct its syntax.") from None
    items = data.get("styles") if isinstance(data, dict) else data
    if items is None:
        return []
    if not isinstance(items, list):
        raise LibraryError(f"The manifest {mf} must hold a list under 'styles:'. Fix: see styles/manifest.yaml.")
    return items


def _entry(item: Any, folder: Path, report: IngestReport) -> tuple[Path, dict] | None:
    """Validate one manifest entry; None (and a skip reason in the report) if it is unusable."""
    if not isinstance(item, dict) or not isinstance(item.get("file"), str) or not item["file"].strip():
        report.skipped.append(IngestItem(path=str(folder), reason="manifest entry without a 'file':"
                                         f" {_short(item)}. Fix: give each entry a file name"))
        return None
    listed = item["file"]
    name = _shown(item["name"]) if item.get("name") is not None else None
    try:
        file = (folder / listed).resolve()
        inside = file.is_relative_to(folder)
        found = inside and file.is_file()
    except (OSError, ValueError, RuntimeError) as exc:  # NUL bytes, names too long, link loops
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc  # not the whole long name
        reason = f"manifest file path is not usable ({_shown(why)}). Fix: list plain paths relative to the style folder"
        report.skipped.append(IngestItem(path=_shown(folder / listed), name=name, reason=reason))
        return None
    if not inside:
        reason = "manifest file path leaves the style folder. Fix: list files inside it, as paths relative to it"
        report.skipped.append(IngestItem(path=_shown(folder / listed), name=name, reason=reason))
        return None
    if not found:
        report.skipped.append(IngestItem(path=_shown(file), name=name, reason="listed in the manifest but not found."
                                         " Fix: add the file or correct the manifest"))
        return None
    info = _defaults(file)
    for key in ("name", "caption", "licence", "source"):
        value = item.get(key)
        if value is not None and (key != "name" or str(value).strip()):
            info[key] = str(value)
    if item.get("license") is not None and item.get("licence") is None:
        info["licence"] = str(item["license"])
    info["tags"] = _tags(item.get("tags"))
    return file, info


def _tags(value: Any) -> list[str]:
    """Normalise tags given as a list, a comma-separated string or a scalar: lower-case, unique, sorted."""
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple, set, frozenset)) else [value]
    return sorted({t.strip().lower() for v in items for t in str(v).split(",")} - {""})


def _keys(ids: Any) -> list:
    if isinstance(ids, str):
        return [ids]
    try:
        return list(ids)
    except TypeError:
        raise StyleNotFoundError(
            f"Style ids must be a string or a list of strings, got {_short(ids)}. Fix: pick ids from"
            " wb.library.table()."
        ) from None


def _defaults(file: Path) -> dict:
    return {"name": file.stem.replace("_", " ").replace("-", " "), "caption": "", "tags": [],
            "licence": "unknown", "source": ""}


def _metadata(info: dict, file: Path, sha: str, image: Image.Image) -> dict:
    meta = {"name": info["name"], "caption": info["caption"], "licence": info["licence"],
            "source": info["source"], "tags": ",".join(info["tags"]), "path": str(file), "sha256": sha,
            "width": image.width, "height": image.height}
    # Chroma metadata holds scalars only: one boolean key per tag makes tags filterable.
    meta.update({_TAG + t: True for t in info["tags"]})
    return meta


def _replacing(old: dict | None, new: dict) -> dict:
    """`new` as an update of `old`: chroma merges metadata on update and upsert, so dropped keys (a removed
    tag) must be deleted explicitly, with None."""
    return {**{key: None for key in (old or {}) if key not in new}, **new}


def _text_problem(meta: dict) -> str:
    """Why chroma would refuse this metadata (text it cannot store as UTF-8), or ''."""
    # The path first: a bad file name also spoils the name derived from it.
    for key, value in sorted(meta.items(), key=lambda kv: kv[0] != "path"):
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


def _usable(image: Image.Image, label: str) -> Image.Image:
    aspect = max(image.width, image.height) / max(1, min(image.width, image.height))
    if aspect > MAX_ASPECT:
        raise InputError(
            f"{_shown(label)} is {image.width}x{image.height} pixels; CLIP sees only a centred square, so a strip"
            f" longer than {MAX_ASPECT:g}:1 cannot be a style. Fix: crop it to the part that shows the style."
        )
    return image


def _read_limited(file: Path) -> bytes:
    with open(file, "rb") as fh:
        data = fh.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise InputError(f"{_shown(file.name)} is larger than {MAX_FILE_BYTES >> 20} MB. Fix: downscale or"
                         " re-compress it.")
    return data


def _move(item: IngestItem, source: list[IngestItem], target: list[IngestItem], reason: str) -> None:
    source.remove(item)
    item.reason = reason
    target.append(item)


def _shown(value: Any) -> str:
    """`value` as printable text: undecodable file-name bytes become U+FFFD instead of breaking print()."""
    text = str(value)
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a lone surrogate that no file name produced
        return text.encode("utf-8", "replace").decode("utf-8")


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 80
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxtuple = 3, 4, 4, 4


def _short(value: Any) -> str:
    """A bounded repr for messages: a hostile value (huge, deeply nested, aliased) cannot flood them."""
    text = _shown(_REPR.repr(value))
    return text if len(text) <= 200 else text[:197] + "..."


def _short_path(value: Any) -> str:
    return _short(os.fspath(value) if isinstance(value, os.PathLike) else value)


def _style(sid: str, meta: dict | None, score: float | None = None) -> Style:
    meta = meta or {}
    tags = [t for t in str(meta.get("tags", "")).split(",") if t]
    return Style(id=sid, name=meta.get("name", sid), path=meta.get("path", ""), caption=meta.get("caption", ""),
                 tags=tags, licence=meta.get("licence", ""), source=meta.get("source", ""),
                 sha256=meta.get("sha256", ""), score=score)


def _stale(metas: dict[str, dict], current: dict[str, str]) -> list[str]:
    """Ids whose file was ingested just now with other bytes: their replacement is stored, so they go."""
    return [sid for sid, meta in metas.items() if current.get(meta.get("path"), sid) != sid]


def _all_metadata(col: Any) -> dict[str, dict]:
    res = col.get(include=["metadatas"])
    return {sid: meta or {} for sid, meta in zip(res["ids"], res["metadatas"])}


def _tag_filter(tags: Sequence[str] | str | None) -> dict | None:
    wanted = _tags(tags)
    if not wanted:
        return None
    if _text_problem({_TAG + t: True for t in wanted}):
        raise LibraryError(f"The tags {_short(tags)} are not valid text. Fix: pass plain tag names.")
    clauses = [{_TAG + t: True} for t in wanted]
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}
