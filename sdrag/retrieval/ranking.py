"""Putting rankings together: reciprocal-rank fusion of dense and lexical search, a text to avoid, diversity (MMR),
and each hit's explanation."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

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


def check_rerank(avoid: Any, diversity: Any) -> tuple[str | None, float]:
    """The text to avoid (None for none) and the diversity weight in [0, 1]; one LibraryError for bad values."""
    if avoid is not None and not isinstance(avoid, str):
        raise LibraryError(f"avoid must be a text (or None), got {type(avoid).__name__}. Fix: e.g. avoid='dark'.")
    if isinstance(diversity, bool) or not isinstance(diversity, (int, float)) or not 0 <= diversity <= 1:
        raise LibraryError(f"diversity must be a number from 0 (rank by relevance) to 1 (spread out only), got"
                           f" {diversity!r}.")
    return (avoid.strip() or None) if avoid else None, float(diversity)


def rerank(pool: list[Style], k: int, avoid: tuple[str, list[Style]] | None, vectors: np.ndarray | None,
           diversity: float) -> list[Style]:
    """The top `k` of the ranked `pool`: a style the avoided text ranks loses that rank's reciprocal-rank share, then
    with `diversity` > 0 maximal marginal relevance picks among them (needs the pool's `vectors`)."""
    text, avoided = avoid or ("", [])
    penalty = {s.id: (n + 1, 1 / (RRF_K + n + 1)) for n, s in enumerate(avoided)}
    relevance = np.array([1 / (RRF_K + n + 1) - penalty.get(s.id, (None, 0.0))[1] for n, s in enumerate(pool)])
    order = sorted(range(len(pool)), key=lambda i: -relevance[i])  # stable: equal ones keep their rank
    picks, closest = mmr(order, relevance, vectors, k, diversity) if diversity and vectors is not None \
        else (order[:k], {})
    hits = []
    for i in picks:
        why = dict(pool[i].explanation or {})
        if avoid:
            rank, cost = penalty.get(pool[i].id, (None, 0.0))
            why["avoid"] = {"text": text, "rank": rank, "penalty": round(cost, 6)}
        if diversity:
            why["diversity"] = {"weight": diversity, "closest": closest.get(i)}
        hits.append(replace(pool[i], explanation=why))
    return hits


def mmr(order: list[int], relevance: np.ndarray, vectors: np.ndarray, k: int,
        diversity: float) -> tuple[list[int], dict[int, float]]:
    """Maximal marginal relevance (Carbonell & Goldstein 1998): pick, one at a time, the candidate that best trades
    relevance (scaled to [0, 1]) against its cosine to the closest pick so far; returns picks and those cosines."""
    low, high = float(relevance.min()), float(relevance.max())
    scaled = (relevance - low) / (high - low) if high > low else np.ones_like(relevance)
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    similar = unit @ unit.T
    picks: list[int] = []
    closest: dict[int, float] = {}
    left = list(order)
    while left and len(picks) < k:
        near = {i: float(similar[i, picks].max()) if picks else 0.0 for i in left}
        best = max(left, key=lambda i: (1 - diversity) * scaled[i] - diversity * near[i])  # first of equals
        if picks:
            closest[best] = round(near[best], 4)
        picks.append(best)
        left.remove(best)
    return picks, closest


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
    avoid, diverse = why.get("avoid") or {}, why.get("diversity") or {}
    if isinstance(avoid.get("rank"), int) and isinstance(avoid.get("penalty"), (int, float)):
        parts.append(f"like avoided {str(avoid.get('text'))[:40]!r} #{avoid['rank']} (-{avoid['penalty']:.4f})")
    if isinstance(diverse.get("closest"), (int, float)):
        parts.append(f"diverse pick ({diverse['closest']:.2f} to the closest earlier pick)")
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
                     "avoided rank": (why.get("avoid") or {}).get("rank"),
                     "cosine to closest pick": (why.get("diversity") or {}).get("closest"),
                     "caption": s.caption, "id": s.id})
    return pd.DataFrame(rows)
