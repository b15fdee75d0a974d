"""Lexical search over what users wrote about each style (name, caption, tags): BM25, by bm25s.

The collection's metadata is the truth; this index is derived from it. It is kept in the library folder as one
file written atomically (`lexical.json`: the texts and the library state they were read at), and it is rebuilt
whenever the library changed since (another state), the file is missing or damaged, or the library is a
server (no state to compare). A kill at any moment therefore leaves either a current index or one that is
rebuilt on next use, never a wrong one.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..files import atomic_write_json
from .entries import flat

INDEX_FILE = "lexical.json"
_WORD = re.compile(r"[^\W_]{2,}")
# The texts kept per style: what BM25 reads and what a hit shows.
_KEPT = ("name", "caption", "tags", "path", "licence", "source", "sha256")


def terms(text: str) -> list[str]:
    """The words of `text` that carry meaning: lower-cased, two or more letters or digits, no stop words."""
    from bm25s.stopwords import STOPWORDS_EN

    return [w for w in _WORD.findall(text.lower()) if w not in STOPWORDS_EN]


def document(meta: dict) -> str:
    """The text of one style that lexical search reads: its name, caption and tags."""
    tags = str(meta.get("tags") or "").replace(",", " ")  # stored comma-joined (chroma keeps scalars only)
    return f"{meta.get('name', '')} {meta.get('caption', '')} {tags}"


@dataclass
class LexicalIndex:
    """BM25 over the styles' texts, for one state of the library."""

    state: str | None
    ids: list[str]
    metas: list[dict]
    _terms: list[set[str]] = field(default_factory=list, repr=False)
    _model: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        import bm25s

        tokens = [terms(document(m)) for m in self.metas]
        self._terms = [set(t) for t in tokens]
        if tokens:
            self._model = bm25s.BM25()
            self._model.index(tokens, show_progress=False)

    @classmethod
    def from_metadata(cls, state: str | None, found: dict[str, dict]) -> LexicalIndex:
        """Build the index from the collection's metadata by id."""
        ids = sorted(found)
        fields = {i: flat(found[i]) for i in ids}
        return cls(state, ids, [{k: fields[i][k] for k in _KEPT if k in fields[i]} for i in ids])

    def search(self, query: str, k: int, tags: list[str] | None = None) -> list[tuple[int, float, list[str]]]:
        """The best `k` styles for `query` that share a word with it: (position in `ids`, BM25 score, matched
        words), best first; only styles with all `tags` when given."""
        words = terms(query)
        if self._model is None or not words:
            return []
        scores = np.asarray(self._model.get_scores(words), dtype=np.float64)
        if tags:
            wanted_tags = set(tags)
            scores[[n for n, m in enumerate(self.metas)
                    if not wanted_tags <= set(str(m.get("tags") or "").split(","))]] = 0.0
        hits = np.flatnonzero(scores > 0)
        best = hits[np.lexsort((hits, -scores[hits]))][:k]
        wanted = set(words)
        return [(int(n), float(scores[n]), sorted(wanted & self._terms[n])) for n in best]

    def save(self, folder: Path) -> None:
        """Keep the index's texts beside the collection (atomically), for the next process at this state."""
        atomic_write_json(folder / INDEX_FILE, {"state": self.state, "ids": self.ids, "metas": self.metas})


def load(folder: Path, state: str | None) -> LexicalIndex | None:
    """The saved index if it was built at `state` and reads back whole; None otherwise (rebuild it)."""
    if state is None:
        return None
    try:
        saved = json.loads((folder / INDEX_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    ok = (isinstance(saved, dict) and saved.get("state") == state and isinstance(saved.get("ids"), list)
          and isinstance(saved.get("metas"), list) and len(saved["ids"]) == len(saved["metas"])
          and all(isinstance(i, str) for i in saved["ids"]) and all(isinstance(m, dict) for m in saved["metas"]))
    return LexicalIndex(state, saved["ids"], saved["metas"]) if ok else None
