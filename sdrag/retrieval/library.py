"""The style library: reference images, CLIP-embedded, in a persistent ChromaDB collection (cosine space).

Where the collection lives (a folder shared under a file lock, or a `chroma run` server) is `store.py`'s concern;
a folder ingest is `ingest.py`'s, and the entries and their metadata are `entries.py`'s.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError, LibraryError, StorageError, StyleNotFoundError
from ..images import load_image
from .entries import (
    Style,
    all_metadata,
    as_style,
    defaults,
    existing_path,
    key_list,
    metadata,
    read_limited,
    replacing,
    short,
    short_path,
    shown,
    tag_filter,
    tag_list,
    text_problem,
    usable,
    vector_batch,
)
from .evaluate import CUTOFFS
from .evaluate import evaluate as evaluate_search
from .ingest import IngestReport, LibraryAccess, ingest_folder
from .lexical import LexicalIndex
from .lexical import load as load_lexical
from .ranking import METHODS, check_method, check_rerank, fuse, rerank
from .store import LOCK_TIMEOUT_S, server_url, store_for

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["IngestReport", "Style", "StyleLibrary"]
# How deep each method looks before fusion: a style ranked 20th by one method can still win on the other.
CANDIDATES = 20


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
                    f"Cannot use {short_path(path)} as a style library folder ({exc}). Fix: pass a writable folder"
                    " path (or a chroma server URL such as 'http://127.0.0.1:8000')."
                ) from None
            location = str(self.path)
        self._store = store_for(location, url, embedder_name)
        self._lexical: LexicalIndex | None = None
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
        access = LibraryAccess(self._session, lambda datas: self.embedder.embed_images(datas), self._write,
                               lambda: self._store.check_writable("ingest"))
        return ingest_folder(access, folder, batch_size, progress)

    def add(self, path: str | Path, name: str | None = None, caption: str = "", tags: Sequence[str] | str = (),
            licence: str = "unknown", source: str = "") -> Style:
        """Add (or update) one image file with its metadata; returns the stored Style."""
        file = existing_path(path, folder=False)
        if file is None:
            raise InputError(f"Image file not found: {short_path(path)}. Fix: check the path (it must be a file).")
        try:
            data = read_limited(file)
        except OSError as exc:
            raise InputError(f"Cannot read {shown(file)} ({shown(exc)}). Fix: check its permissions.") from None
        image = usable(load_image(data), file.name)
        sha = hashlib.sha256(data).hexdigest()
        info = {**defaults(file), "caption": str(caption), "licence": str(licence), "source": str(source),
                "tags": tag_list(tags)}
        if name is not None and str(name).strip():
            info["name"] = str(name)
        meta = metadata(info, file, sha, image)
        problem = text_problem(meta)
        if problem:
            raise InputError(f"Cannot add {shown(file)}: {problem}.")
        self._store.check_writable("add")
        vector = self.embedder.embed_images([image])
        with self._session("add", write=True) as col:
            self._write(col, [sha[:16]], vector, [meta])
            # As ingest does: the entry of this file's earlier bytes goes once the new one is stored.
            same_file = col.get(where={"path": meta["path"]}, include=[])["ids"]
            old = [sid for sid in same_file if sid != sha[:16]]
            if old:
                col.delete(ids=old)
        return as_style(sha[:16], meta)

    def add_vectors(self, ids: Sequence[str], vectors: Any, metas: Sequence[dict], batch_size: int = 1000) -> int:
        """Store precomputed embeddings with their metadata (as `entries.metadata` makes it); returns how many."""
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise LibraryError(f"batch_size must be a whole number of at least 1, got {batch_size!r}.")
        keys, rows, checked = vector_batch(ids, vectors, metas)
        if not keys:
            return 0
        self._store.check_writable("add_vectors")
        with self._session("add_vectors") as col:
            stored = col.get(limit=1, include=["embeddings"])["embeddings"]
            # A batch is also one read by id: past chroma's batch size it would pass SQLite's variable limit.
            batch_size = min(batch_size, max(1, self._store.client.get_max_batch_size()))
        dim = len(stored[0]) if stored is not None and len(stored) else self.embedder.dim
        if rows.shape[1] != dim:
            raise InputError(f"The vectors have {rows.shape[1]} numbers per row, but the library at {self.path} holds"
                             f" {dim}. Fix: embed with the embedder that built it ({self.embedder_name}).")
        for start in range(0, len(keys), batch_size):
            end = start + batch_size
            # One locked write per batch, as an ingest makes: a kill -9 loses at most the batch in flight.
            with self._session("add_vectors", write=True) as col:
                self._write(col, keys[start:end], rows[start:end], checked[start:end])
        return len(keys)

    def _write(self, col: Any, ids: list[str], vectors: np.ndarray, metas: list[dict],
               stored: dict[str, dict] | None = None) -> None:
        if stored is None:
            have = col.get(ids=ids, include=["metadatas"])
            stored = dict(zip(have["ids"], have["metadatas"]))
        metas = [replacing(stored[sid], meta) if sid in stored else meta for sid, meta in zip(ids, metas)]
        step = max(1, self._store.client.get_max_batch_size())
        for i in range(0, len(ids), step):
            col.upsert(ids=ids[i:i + step], embeddings=vectors[i:i + step], metadatas=metas[i:i + step])

    # -- read -------------------------------------------------------------------------------------------

    # Seven arguments, past the six the lint allows: avoid and diversity are keyword-only knobs of the same one
    # query (as Params carries them), not state that belongs in an object.
    def search(self, query: Any, k: int = 3, tags: Sequence[str] | str | None = None,  # noqa: PLR0913
               method: str = "hybrid", weights: dict[str, float] | Sequence[float] | None = None, *,
               avoid: str | None = None, diversity: float = 0.0) -> list[Style]:
        """Return the top-k styles for a text (str) or an image (PIL image, array, bytes or pathlib.Path).

        `method`: "dense" (CLIP text->image, or image->image), "lexical" (BM25 over each style's name, caption
        and tags; only styles sharing a word with the text) or "hybrid" (reciprocal-rank fusion of both, weighted
        by `weights` {"dense": w, "lexical": w}; an image query has no words, so it ranks by CLIP alone).
        `avoid`: a text whose own ranking (same method) demotes the styles it finds ("dark"). `diversity` from 0 to
        1: how much the picks trade relevance for being unlike each other (maximal marginal relevance), for a
        blend of several styles. Each hit carries its `explanation`: its rank and score in each method, the words
        it matched, and what avoid and diversity did to it.
        """
        fusion = check_method(method, weights)
        _check_k(k)
        avoid, diversity = check_rerank(avoid, diversity)
        text = isinstance(query, str)
        if text and not query.strip():
            raise LibraryError("Empty search text. Fix: describe the style you want, e.g. 'neon city'.")
        if not text and method == "lexical":
            raise LibraryError("Lexical search reads words; an image has none. Fix: search the image with"
                               " method='dense' (or 'hybrid'), or describe it in words.")
        if not text:
            method = "dense"  # nothing to fuse: the scores stay CLIP cosines
        if not (avoid or diversity):
            return self._ranked(query, k, tags, method, fusion)
        pool = self._ranked(query, max(k, CANDIDATES), tags, method, fusion)
        avoided = (avoid, self._ranked(avoid, CANDIDATES, tags, method, fusion)) if avoid else None
        vectors = self.vectors([s.id for s in pool]) if diversity and pool else None
        return rerank(pool, k, avoided, vectors, diversity)

    def _ranked(self, query: Any, k: int, tags: Sequence[str] | str | None, method: str,
                fusion: dict[str, float]) -> list[Style]:
        """The top `k` for a checked query by one method or their fusion."""
        text = isinstance(query, str)
        depth = max(k, CANDIDATES) if method == "hybrid" else k
        dense = []
        if method != "lexical" and (not text or fusion["dense"] > 0 or method == "dense"):
            vector = self.embedder.embed_text([query])[0] if text else \
                self.embedder.embed_images([usable(load_image(query), "the query image")])[0]
            dense = self.search_vector(vector, k=depth, tags=tags)
        lexical = self._lexical_hits(query, depth, tags) if text and method != "dense" else []
        return fuse(method, dense, lexical, fusion, k)

    def evaluate(self, queries: Any, methods: Sequence[str] | str = METHODS,
                 k: Sequence[int] | int = CUTOFFS) -> pd.DataFrame:
        """Score search methods on labelled queries (a YAML path or {query, relevant} dicts): recall@k, MRR, nDCG."""
        return evaluate_search(self, queries, methods, k)

    def _lexical_hits(self, query: str, k: int, tags: Sequence[str] | str | None) -> list:
        """(Style, BM25 score, matched words) of the best `k` styles sharing a word with `query`."""
        with self._session("search") as col:
            index = self._lexical_index(col)
        if not index.ids:
            raise self._empty_error()
        found = index.search(query, k, tag_list(tags) if tags else None)
        return [(as_style(index.ids[n], index.metas[n]), score, words) for n, score, words in found]

    def _lexical_index(self, col: Any) -> LexicalIndex:
        """The lexical index of the library as it is now (held session): kept, read back, or rebuilt."""
        state = None if self._store.url else (self._store.token or None)
        if self._lexical is not None and state is not None and self._lexical.state == state:
            return self._lexical
        folder = None if self._store.url else Path(self.path)
        index = load_lexical(folder, state) if folder is not None else None
        if index is None:
            index = LexicalIndex.from_metadata(state, all_metadata(col))
            if folder is not None and state is not None and not self._store.read_only:
                try:
                    index.save(folder)
                except StorageError:  # a full disk costs the next process a rebuild, not this search
                    pass
        self._lexical = index
        return index

    def search_vector(self, vector: np.ndarray, k: int = 3, tags: Sequence[str] | str | None = None) -> list[Style]:
        """Return the top-k styles nearest to an embedding."""
        _check_k(k)
        try:
            vec = np.asarray(vector, dtype=np.float32)
        except (TypeError, ValueError):
            vec = np.zeros(0, np.float32)
        if vec.ndim != 1 or vec.size == 0 or not np.isfinite(vec).all():
            raise LibraryError(
                f"A query vector must be one row of finite numbers, got {short(vector)}. Fix: pass one row of"
                " wb.embedder.embed_text([...]) or embed_images([...])."
            )
        where = tag_filter(tags)
        with self._session("search") as col:
            # No count first: chroma 1.5 returns every match when k exceeds them, and a count cost as much as
            # the query itself at 100,000 styles. Only a failed or empty answer asks whether the library is empty.
            try:
                res = col.query(query_embeddings=[vec.tolist()], n_results=k, where=where,
                                include=["metadatas", "distances"])
            except Exception as exc:
                if "dimension" not in str(exc):
                    raise
                self._check_not_empty(col)
                raise LibraryError(
                    f"The query vector does not fit the library at {self.path} ({exc}). Fix: embed the query with"
                    " the embedder that built the library (wb.embedder)."
                ) from None
            if not res["ids"][0]:
                self._check_not_empty(col)
        hits = [as_style(sid, meta, score=1.0 - float(dist))
                for sid, meta, dist in zip(res["ids"][0], res["metadatas"][0], res["distances"][0])]
        if not hits and where:
            raise LibraryError(f"No style has all tags {tag_list(tags)}. Fix: check wb.library.table().")
        return hits

    def _check_not_empty(self, col: Any) -> None:
        if col.count() == 0:
            raise self._empty_error()

    def _empty_error(self) -> LibraryError:
        return LibraryError(f"The style library at {self.path} is empty. Fix: wb.library.ingest('styles/') first.")

    def get(self, key: str) -> Style:
        """Return a style by id or by (unique) name."""
        with self._session("get") as col:
            return self._resolve(col, key)

    def _resolve(self, col: Any, key: Any) -> Style:
        if not isinstance(key, str) or not key or text_problem({"key": key}):
            raise StyleNotFoundError(
                f"A style id or name must be non-empty text, got {short(key)}. Fix: pick one from"
                " wb.library.table()."
            )
        res = col.get(ids=[key], include=["metadatas"])
        if res["ids"]:
            return as_style(res["ids"][0], res["metadatas"][0])
        res = col.get(where={"name": key}, include=["metadatas"])
        if len(res["ids"]) == 1:
            return as_style(res["ids"][0], res["metadatas"][0])
        if res["ids"]:
            raise StyleNotFoundError(
                f"Style name {short(key)} is ambiguous (ids {sorted(res['ids'])}). Fix: use one of the ids."
            )
        raise StyleNotFoundError(
            f"No style with id or name {short(key)} in {self.path}. Fix: pick one from wb.library.table()."
        )

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        """Return the stored embeddings of `ids`, in order."""
        keys = key_list(ids)
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
            found = all_metadata(col, where=tag_filter(tags))
        styles = [as_style(sid, meta) for sid, meta in found.items()]
        return sorted(styles, key=lambda s: (s.name.lower(), s.id))

    def table(self, tags: Sequence[str] | str | None = None) -> pd.DataFrame:
        """Return the styles as a DataFrame (one row per style)."""
        import pandas as pd

        cols = [f for f in Style.__dataclass_fields__ if f not in ("score", "explanation")]
        return pd.DataFrame([{c: getattr(s, c) for c in cols} for s in self.list(tags)], columns=cols)

    def snapshot(self) -> list[dict]:
        """Return [{id, sha256}] for every style: what a manifest records to pin the library state."""
        return [{"id": s.id, "sha256": s.sha256} for s in sorted(self.list(), key=lambda s: s.id)]

    def remove(self, ids: str | Sequence[str]) -> int:
        """Remove styles by id or name; returns how many were removed. Unknown keys raise first."""
        keys = key_list(ids)
        if not keys:
            return 0
        with self._session("remove", write=True) as col:
            resolved = sorted({self._resolve(col, k).id for k in keys})
            col.delete(ids=resolved)
        return len(resolved)


    def compact(self) -> dict[str, int]:
        """Drop the log rows a rebuild of the index no longer needs and give their disk space back (writes also
        compact the log, without giving space back, once it outgrows the styles); returns what it did."""
        if self._store.url:
            raise LibraryError(f"The library at {self.path} is served by `chroma run`, which purges its own log."
                               " Fix: to give disk space back, stop the server and run `chroma vacuum --path DIR`.")
        self._store.check_writable("compact")
        with self._session("compact", write=True):
            return self._store.compact()


def _check_k(k: Any) -> None:
    """Refuse a result count that is not a whole number of at least 1 (before it reaches any arithmetic)."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise LibraryError(f"k must be a whole number of at least 1, got {k!r}.")
