"""The style library: reference images, CLIP-embedded, in a persistent ChromaDB collection (cosine space)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from .errors import InputError, LibraryError, SdragError, StyleNotFoundError
from .images import load_image

COLLECTION = "sdrag_styles"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
MANIFEST_NAMES = ("manifest.yaml", "manifest.yml", "manifest.json")
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

    def __init__(self, path: str | Path, embedder: Callable[[], Any], embedder_name: str):
        """Open (or create) the library folder. `embedder` is called lazily to get a ClipEmbedder."""
        import chromadb
        from chromadb.config import Settings

        self.path = Path(path).expanduser().resolve()
        self._embedder_factory = embedder
        self.embedder_name = embedder_name
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            # Telemetry off: sdrag promises zero network calls offline.
            self._client = chromadb.PersistentClient(
                path=str(self.path), settings=Settings(anonymized_telemetry=False, allow_reset=False)
            )
            self._col = self._client.get_or_create_collection(
                COLLECTION, embedding_function=None, configuration={"hnsw": {"space": "cosine"}},
                metadata={"embedder": embedder_name},
            )
        except Exception as exc:  # chromadb raises many types for a bad folder
            raise LibraryError(
                f"Cannot open the style library at {self.path}: {exc}. Fix: use a writable folder that only"
                " sdrag's ChromaDB uses."
            ) from None
        built_with = (self._col.metadata or {}).get("embedder")
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
        return self._col.count()

    # -- ingest -----------------------------------------------------------------------------------------

    def ingest(self, folder: str | Path, batch_size: int = 32, progress: bool = True) -> IngestReport:
        """Add a folder of images (with an optional manifest.yaml) idempotently.

        Ids are content hashes, so re-ingesting adds nothing; a changed file replaces its old entry; an
        edited manifest updates metadata. A file that cannot be read is skipped with its reason.
        """
        folder = Path(folder).expanduser().resolve()
        if not folder.is_dir():
            raise LibraryError(f"Style folder not found: {folder}. Fix: pass a folder of images.")
        report = IngestReport()
        entries = _read_manifest(folder, report)
        existing = self._all_metadata()
        by_path = {meta["path"]: sid for sid, meta in existing.items()}
        seen: dict[str, str] = {}
        current: dict[str, str] = {}  # path -> id of the bytes there now
        todo: list[tuple[str, dict, Path]] = []
        for file, info in entries.items():
            item = IngestItem(path=str(file), name=info["name"])
            try:
                data = file.read_bytes()
                image = load_image(data)
            except (OSError, SdragError) as exc:
                item.reason = f"unreadable: {exc}"
                report.skipped.append(item)
                continue
            sha = hashlib.sha256(data).hexdigest()
            sid = item.id = sha[:16]
            if sid in seen:
                item.reason = f"duplicate of {seen[sid]} (same bytes)"
                report.skipped.append(item)
                continue
            seen[sid] = str(file)
            current[str(file)] = sid
            meta = _metadata(info, file, sha, image)
            if sid in existing:
                if existing[sid] == meta:
                    item.reason = "unchanged"
                    report.skipped.append(item)
                else:
                    self._col.update(ids=[sid], metadatas=[meta])
                    item.reason = "metadata changed"
                    report.updated.append(item)
                continue
            # Images are decoded again at embedding time, so a big folder is never held in memory at once.
            todo.append((sid, meta, file))
            old = by_path.get(str(file))
            if old is not None:
                item.reason = f"file changed (replaces {old})"
                report.updated.append(item)
            else:
                report.added.append(item)
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="embedding styles", unit="img", disable=not (progress and todo))
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            vectors = self.embedder.embed_images([file for *_, file in chunk])
            self._write([sid for sid, *_ in chunk], vectors, [meta for _, meta, _ in chunk])
            bar.update(len(chunk))
        bar.close()
        # Entries whose file now holds other bytes are dropped only after their replacements are stored, so
        # a crash in between leaves a stale entry that the next ingest removes, never a missing one.
        stale = [sid for sid, meta in existing.items() if current.get(meta["path"], sid) != sid]
        if stale:
            self._col.delete(ids=stale)
        return report

    def add(self, path: str | Path, name: str | None = None, caption: str = "", tags: Sequence[str] = (),
            licence: str = "unknown", source: str = "") -> Style:
        """Add (or update) one image file with its metadata; returns the stored Style."""
        file = Path(path).expanduser().resolve()
        image = load_image(file)
        sha = hashlib.sha256(file.read_bytes()).hexdigest()
        info = {**_defaults(file), "caption": caption, "licence": licence, "source": source,
                "tags": sorted({t.strip().lower() for t in tags} - {""})}
        if name:
            info["name"] = name
        self._write([sha[:16]], self.embedder.embed_images([image]), [_metadata(info, file, sha, image)])
        return self.get(sha[:16])

    def _write(self, ids: list[str], vectors: np.ndarray, metas: list[dict]) -> None:
        step = max(1, self._client.get_max_batch_size())
        for i in range(0, len(ids), step):
            self._col.upsert(ids=ids[i:i + step], embeddings=vectors[i:i + step].tolist(),
                             metadatas=metas[i:i + step])

    # -- read -------------------------------------------------------------------------------------------

    def search(self, query: Any, k: int = 3, tags: Sequence[str] | str | None = None) -> list[Style]:
        """Return the top-k styles for a text (str) or an image (PIL image, array or pathlib.Path)."""
        if isinstance(query, str):
            if not query.strip():
                raise LibraryError("Empty search text. Fix: describe the style you want, e.g. 'neon city'.")
            vector = self.embedder.embed_text([query])[0]
        else:
            vector = self.embedder.embed_images([query])[0]
        return self.search_vector(vector, k=k, tags=tags)

    def search_vector(self, vector: np.ndarray, k: int = 3, tags: Sequence[str] | str | None = None) -> list[Style]:
        """Return the top-k styles nearest to an embedding."""
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise LibraryError(f"k must be a whole number of at least 1, got {k!r}.")
        where = _tag_filter(tags)
        n = min(k, len(self))
        if n == 0:
            raise LibraryError(
                f"The style library at {self.path} is empty. Fix: wb.library.ingest('styles/') first."
            )
        res = self._col.query(query_embeddings=[np.asarray(vector, dtype=np.float32).tolist()], n_results=n,
                              where=where, include=["metadatas", "distances"])
        hits = []
        for sid, meta, dist in zip(res["ids"][0], res["metadatas"][0], res["distances"][0]):
            hits.append(_style(sid, meta, score=1.0 - float(dist)))
        if not hits and where:
            raise LibraryError(f"No style has all tags {list(_as_list(tags))}. Fix: check wb.library.table().")
        return hits

    def get(self, key: str) -> Style:
        """Return a style by id or by (unique) name."""
        res = self._col.get(ids=[key], include=["metadatas"])
        if res["ids"]:
            return _style(res["ids"][0], res["metadatas"][0])
        matches = [sid for sid, meta in self._all_metadata().items() if meta.get("name") == key]
        if len(matches) == 1:
            return self.get(matches[0])
        if matches:
            raise StyleNotFoundError(f"Style name {key!r} is ambiguous (ids {matches}). Fix: use one of the ids.")
        raise StyleNotFoundError(
            f"No style with id or name {key!r} in {self.path}. Fix: pick one from wb.library.table()."
        )

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        """Return the stored embeddings of `ids`, in order."""
        res = self._col.get(ids=list(ids), include=["embeddings"])
        found = dict(zip(res["ids"], res["embeddings"]))
        missing = [i for i in ids if i not in found]
        if missing:
            raise StyleNotFoundError(f"No style with id(s) {missing}.")
        return np.asarray([found[i] for i in ids], dtype=np.float32)

    def list(self, tags: Sequence[str] | str | None = None) -> list[Style]:
        """Return every style (optionally only those with all `tags`), sorted by name."""
        res = self._col.get(where=_tag_filter(tags), include=["metadatas"])
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
        keys = [ids] if isinstance(ids, str) else list(ids)
        resolved = [self.get(k).id for k in keys]
        self._col.delete(ids=resolved)
        return len(set(resolved))

    def _all_metadata(self) -> dict[str, dict]:
        res = self._col.get(include=["metadatas"])
        return dict(zip(res["ids"], res["metadatas"]))


# -- manifest and metadata helpers ----------------------------------------------------------------------


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
    for file in sorted(folder.rglob("*")):
        rel = file.relative_to(folder)
        if file.suffix.lower() in IMAGE_SUFFIXES and file.is_file() and not any(
            part.startswith(".") for part in rel.parts
        ) and file.resolve() not in entries:
            entries[file.resolve()] = _defaults(file)
    return entries


def _parse_manifest(mf: Path) -> list:
    import yaml

    try:
        text = mf.read_text(encoding="utf-8")
        data = json.loads(text) if mf.suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        raise LibraryError(f"Cannot read the manifest {mf}: {exc}. Fix: correct its syntax.") from None
    items = data.get("styles") if isinstance(data, dict) else data
    if items is None:
        return []
    if not isinstance(items, list):
        raise LibraryError(f"The manifest {mf} must hold a list under 'styles:'. Fix: see styles/manifest.yaml.")
    return items


def _entry(item: Any, folder: Path, report: IngestReport) -> tuple[Path, dict] | None:
    """Validate one manifest entry; a bad one is reported as skipped, never fatal."""
    if not isinstance(item, dict) or not isinstance(item.get("file"), str) or not item["file"].strip():
        report.skipped.append(IngestItem(path=str(folder), reason=f"manifest entry without a 'file': {item!r}"))
        return None
    file = (folder / item["file"]).resolve()
    if not file.is_relative_to(folder):
        report.skipped.append(IngestItem(path=item["file"], reason="manifest file path leaves the style folder"))
        return None
    if not file.is_file():
        report.skipped.append(IngestItem(path=str(file), name=item.get("name"), reason="listed in the manifest"
                                         " but not found"))
        return None
    info = _defaults(file)
    for key in ("name", "caption", "licence", "source"):
        if item.get(key) is not None:
            info[key] = str(item[key])
    if item.get("license") is not None and item.get("licence") is None:
        info["licence"] = str(item["license"])
    tags = item.get("tags") or []
    info["tags"] = sorted({str(t).strip().lower() for t in ([tags] if isinstance(tags, str) else tags)} - {""})
    return file, info


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


def _style(sid: str, meta: dict, score: float | None = None) -> Style:
    tags = [t for t in str(meta.get("tags", "")).split(",") if t]
    return Style(id=sid, name=meta.get("name", sid), path=meta.get("path", ""), caption=meta.get("caption", ""),
                 tags=tags, licence=meta.get("licence", ""), source=meta.get("source", ""),
                 sha256=meta.get("sha256", ""), score=score)


def _as_list(tags: Sequence[str] | str | None) -> list[str]:
    if tags is None:
        return []
    return [tags] if isinstance(tags, str) else list(tags)


def _tag_filter(tags: Sequence[str] | str | None) -> dict | None:
    wanted = [t.strip().lower() for t in _as_list(tags) if t.strip()]
    if not wanted:
        return None
    clauses = [{_TAG + t: True} for t in wanted]
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}
