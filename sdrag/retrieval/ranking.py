"""Putting the dense and lexical rankings together: reciprocal-rank fusion, and each hit's explanation."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..errors import LibraryError
from .entries import Style

if TYPE_CHECKING:
    import pandas as pd

METHODS = ("dense", "lexical", "hybrid")
# The usual RRF constant (Cormack et al. 2009): how fast a rank's weight falls; 60 keeps deep ranks relevant.
RRF_K = 60


def check_method(method: Any, weights: Any) -> dict[str, float]:
    """The method's fusion weights {"dense": w, "lexical": w}; one LibraryError for a bad method or weights."""
    if method not in METHODS:
        raise LibraryError(f"Unknown search method {method!r}. Fix: use one of {', '.join(METHODS)}.")
    if weights is None:
        return {"dense": 1.0, "lexical": 1.0}
    if isinstance(weights, (tuple, list)) and len(weights) == 2:
        weights = dict(zip(("dense", "lexical"), weights))
    ok = isinstance(weights, dict) and set(weights) <= {"dense", "lexical"} and all(
        isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w >= 0
        for w in weights.values())
    if not ok or not any(weights.values()):
        raise LibraryError(f"Search weights must be {{'dense': w, 'lexical': w}} (or a pair) of non-negative numbers,"
                           f" not all zero; got {weights!r}.")
    return {"dense": float(weights.get("dense", 0.0)), "lexical": float(weights.get("lexical", 0.0))}


def fuse(method: str, dense: list[Style], lexical: list[tuple[Style, float, list[str]]], weights: dict[str, float],
         k: int) -> list[Style]:
    """The top `k` of one method, or of their reciprocal-rank fusion, each hit explaining its place in both."""
    seen: dict[str, Style] = {}
    dense_at = {s.id: (n + 1, s.score) for n, s in enumerate(dense)}
    lexical_at = {s.id: (n + 1, score, words) for n, (s, score, words) in enumerate(lexical)}
    for style in [s for s, _, _ in lexical] + dense:
        seen.setdefault(style.id, style)

    def fused(sid: str) -> float:
        total = weights["dense"] / (RRF_K + dense_at[sid][0]) if sid in dense_at else 0.0
        return total + (weights["lexical"] / (RRF_K + lexical_at[sid][0]) if sid in lexical_at else 0.0)

    if method == "dense":
        order = [s.id for s in dense]
    elif method == "lexical":
        order = [s.id for s, _, _ in lexical]
    else:
        deep = len(dense) + len(lexical)
        order = sorted(seen, key=lambda sid: (-fused(sid), dense_at.get(sid, (deep,))[0], sid))
    hits = []
    for sid in order[:k]:
        d_rank, d_score = dense_at.get(sid, (None, None))
        l_rank, l_score, words = lexical_at.get(sid, (None, None, []))
        why = {"method": method, "dense": {"rank": d_rank, "score": d_score},
               "lexical": {"rank": l_rank, "score": l_score, "terms": words},
               "fused": round(fused(sid), 6) if method == "hybrid" else None}
        score = {"dense": d_score, "lexical": l_score}.get(method, why["fused"])
        hits.append(replace(seen[sid], score=score, explanation=why))
    return hits


def explain(hit: Style | dict | None) -> str:
    """One line saying why a search hit (or its recorded `explanation`) ranked where it did."""
    why = (hit.explanation if isinstance(hit, Style) else hit) or {}
    dense, lexical = why.get("dense") or {}, why.get("lexical") or {}
    parts = []
    if isinstance(dense.get("rank"), int) and isinstance(dense.get("score"), (int, float)):
        parts.append(f"CLIP #{dense['rank']} ({dense['score']:.3f})")
    if isinstance(lexical.get("rank"), int) and isinstance(lexical.get("score"), (int, float)):
        words = [t for t in lexical.get("terms") or [] if isinstance(t, str)]
        parts.append(f"words #{lexical['rank']} ({lexical['score']:.2f}: {', '.join(words)})")
    elif why.get("method") in ("lexical", "hybrid"):
        parts.append("no word in common")
    return " · ".join(parts) or "no explanation"


def hits_table(hits: list[Style]) -> pd.DataFrame:
    """Search hits as a DataFrame: score, each method's rank and score, the matched words, caption and id."""
    import pandas as pd

    rows = []
    for s in hits:
        why = s.explanation or {}
        dense, lexical = why.get("dense") or {}, why.get("lexical") or {}
        rows.append({"name": s.name, "score": s.score, "dense rank": dense.get("rank"),
                     "CLIP cosine": dense.get("score"), "lexical rank": lexical.get("rank"),
                     "BM25": lexical.get("score"), "matched words": ", ".join(lexical.get("terms") or []),
                     "caption": s.caption, "id": s.id})
    return pd.DataFrame(rows)
