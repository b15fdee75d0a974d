"""Retrieval evaluation: recall@k, reciprocal rank and nDCG of `StyleLibrary.search` over labelled queries.

A labelled set (styles/queries.yaml is the bundled one) pairs query text with the styles a designer would accept
for it. Every search method runs every query once, as deep as the largest cut-off (and at least `MIN_DEPTH`), and
each ranking is scored against its labels; `evaluate` averages the scores per method.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import LibraryError, ParameterError, StyleNotFoundError
from .entries import Style, short, short_path, shown
from .ranking import METHODS

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "CUTOFFS", "METHODS", "MIN_DEPTH", "Labelled", "Searchable", "evaluate", "evaluate_queries", "load_queries",
    "ndcg_at_k", "recall_at_k", "reciprocal_rank", "summary",
]

CUTOFFS = (1, 3, 5)
# MRR should see a first hit below the shallow cut-offs (rank 7 still earns 1/7), so rankings go at least this deep.
MIN_DEPTH = 10
_KEYS = ("query", "relevant", "note")
_FIX = "Fix: give each entry 'query: <text>' and 'relevant: [<style name or id>, ...]' (see styles/queries.yaml)."


class Searchable(Protocol):
    """What evaluation needs of a library (a StyleLibrary has it)."""

    def search(self, query: Any, k: int = 3, tags: Any = None, method: str = "hybrid",
               weights: Any = None) -> list[Style]:
        """Return the top-k styles for `query` by `method`."""

    def get(self, key: str) -> Style:
        """Return a style by id or by (unique) name."""


@dataclass(frozen=True)
class Labelled:
    """One labelled query: its text and the names or ids of the styles relevant to it."""

    query: str
    relevant: tuple[str, ...]


# -- metrics ------------------------------------------------------------------------------------------------


def recall_at_k(ranked_ids: Sequence[str], relevant: Iterable[str], k: int) -> float:
    """Share of the relevant ids that appear among the first k of the ranking."""
    wanted = _wanted(relevant)
    return len(wanted.intersection(list(ranked_ids)[:_cutoff(k)])) / len(wanted)


def reciprocal_rank(ranked_ids: Sequence[str], relevant: Iterable[str]) -> float:
    """1 / the rank of the first relevant id in the ranking; 0.0 when none is ranked."""
    wanted = _wanted(relevant)
    return next((1.0 / rank for rank, sid in enumerate(ranked_ids, 1) if sid in wanted), 0.0)


def ndcg_at_k(ranked_ids: Sequence[str], relevant: Iterable[str], k: int) -> float:
    """Binary-relevance nDCG of the first k: DCG with a log2(rank + 1) discount over the ideal DCG."""
    wanted = _wanted(relevant)
    k = _cutoff(k)
    seen: set[str] = set()
    dcg = 0.0
    for rank, sid in enumerate(list(ranked_ids)[:k], 1):
        # A repeated id earns nothing the second time, so a ranking cannot score above the ideal one.
        if sid in wanted and sid not in seen:
            seen.add(sid)
            dcg += 1.0 / math.log2(rank + 1)
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(k, len(wanted)) + 1))
    return dcg / ideal


def _wanted(relevant: Iterable[str]) -> set[str]:
    wanted = set(relevant)
    if not wanted:
        raise ParameterError("A query needs at least one relevant id to be scored. Fix: label it.")
    return wanted


def _cutoff(k: Any) -> int:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ParameterError(f"A cut-off k must be a whole number of at least 1, got {short(k)}.")
    return k


# -- the evaluation -----------------------------------------------------------------------------------------


def evaluate(library: Searchable, queries: Any, methods: Sequence[str] | str = METHODS,
             k: Sequence[int] | int = CUTOFFS) -> pd.DataFrame:
    """Return one row per search method: mean recall@k per cut-off, MRR, nDCG@max(k) and the query count."""
    return summary(evaluate_queries(library, queries, methods, k))


def evaluate_queries(library: Searchable, queries: Any, methods: Sequence[str] | str = METHODS,
                     k: Sequence[int] | int = CUTOFFS) -> pd.DataFrame:
    """Return one row per method and query: the ranked ids, the relevant ids and each metric of that ranking."""
    import pandas as pd

    cutoffs = _cutoffs(k)
    names = _methods(methods)
    labelled = _resolve(library, load_queries(queries))
    depth = max(max(cutoffs), MIN_DEPTH)
    rows = []
    for method in names:
        for item, relevant in labelled:
            ranked = [s.id for s in library.search(item.query, k=depth, method=method)]
            rows.append(_scores(method, item.query, relevant, ranked, cutoffs))
    return pd.DataFrame(rows)


def summary(per_query: pd.DataFrame) -> pd.DataFrame:
    """Average an `evaluate_queries` frame per method (rows in first-seen order), with a `queries` count."""
    metrics = [c for c in per_query.columns if c.startswith(("recall@", "ndcg@")) or c == "rr"]
    grouped = per_query.groupby("method", sort=False)
    table = grouped[metrics].mean().rename(columns={"rr": "mrr"})
    table["queries"] = grouped.size()
    order = [c for c in table.columns if c.startswith("recall@")] + ["mrr"]
    return table[order + [c for c in table.columns if c not in order]]


def _scores(method: str, query: str, relevant: frozenset[str], ranked: list[str], cutoffs: list[int]) -> dict:
    row: dict[str, Any] = {"method": method, "query": query, "relevant": sorted(relevant), "ranked": ranked}
    row.update({f"recall@{c}": recall_at_k(ranked, relevant, c) for c in cutoffs})
    row["rr"] = reciprocal_rank(ranked, relevant)
    row[f"ndcg@{max(cutoffs)}"] = ndcg_at_k(ranked, relevant, max(cutoffs))
    return row


def _cutoffs(k: Any) -> list[int]:
    values = [k] if isinstance(k, int) else k
    try:
        cutoffs = sorted({_cutoff(c) for c in values})
    except TypeError:
        cutoffs = []
    if not cutoffs:
        raise ParameterError(f"k must be a cut-off or a list of cut-offs (whole numbers >= 1), got {short(k)}.")
    return cutoffs


def _methods(methods: Any) -> list[str]:
    names = [methods] if isinstance(methods, str) else methods
    try:
        names = list(dict.fromkeys(names))
    except TypeError:
        names = []
    if not names or not all(isinstance(m, str) and m for m in names):
        raise ParameterError(f"methods must be search method names such as {list(METHODS)}, got {short(methods)}.")
    return names


def _resolve(library: Searchable, items: list[Labelled]) -> list[tuple[Labelled, frozenset[str]]]:
    """Each query with the ids of its relevant styles; every name that matches no one style in one error."""
    ids: dict[str, str] = {}
    unknown: list[str] = []
    for key in dict.fromkeys(key for item in items for key in item.relevant):
        try:
            ids[key] = library.get(key).id
        except StyleNotFoundError:
            unknown.append(key)
    if unknown:
        raise LibraryError(
            f"{len(unknown)} style name(s) in the labelled queries match no single style in the library:"
            f" {', '.join(short(k) for k in unknown)}. Fix: use names or ids from wb.library.table() (an ambiguous"
            " name needs its id), or ingest the missing styles first."
        )
    return [(item, frozenset(ids[key] for key in item.relevant)) for item in items]


# -- reading a labelled set ---------------------------------------------------------------------------------


def load_queries(queries: Any) -> list[Labelled]:
    """Read and check a labelled set: a YAML file's path, or a list of {query, relevant} dicts."""
    where = "The labelled queries"
    if isinstance(queries, (str, Path)):
        where = f"The labelled queries file {short_path(queries)}"
        entries = _read_yaml(queries)
    else:
        entries = queries
    if isinstance(entries, dict) and set(entries) == {"queries"}:
        entries = entries["queries"]
    if not isinstance(entries, (list, tuple)) or not entries:
        got = f"a mapping with keys {short(list(entries))}" if isinstance(entries, dict) else short(entries)
        raise LibraryError(f"{where} must hold a non-empty list of queries (or one under 'queries:'), got {got}."
                           f" {_FIX}")
    problems = [p for p in (_entry_problem(n, e) for n, e in enumerate(entries, 1)) if p]
    if problems:
        raise LibraryError(f"{where} has malformed entries: {'; '.join(problems[:10])}"
                           f"{' (and more)' if len(problems) > 10 else ''}. {_FIX}")
    return [Labelled(e["query"].strip(), _names(e["relevant"])) for e in entries]


def _read_yaml(path: str | Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(Path(path).expanduser().read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError, yaml.YAMLError) as exc:
        raise LibraryError(
            f"Cannot read the labelled queries {short_path(path)} ({shown(exc)[:300]}). Fix: pass the path of a"
            " UTF-8 YAML file such as styles/queries.yaml."
        ) from None


def _entry_problem(number: int, entry: Any) -> str:
    """What is wrong with one entry, naming it by number (and query text where it has one); '' if nothing."""
    if not isinstance(entry, dict):
        return f"entry {number} is {short(entry)}, not a mapping"
    label = f"entry {number}"
    if isinstance(entry.get("query"), str) and entry["query"].strip():
        label += f" ({short(entry['query'])})"
    extra = [k for k in entry if k not in _KEYS]
    if extra:
        return f"{label} has unknown key(s) {short(extra)} (allowed: {', '.join(_KEYS)})"
    query = entry.get("query")
    if not isinstance(query, str) or not query.strip():
        return f"{label} needs 'query' as non-empty text, got {short(query)}"
    if "note" in entry and not isinstance(entry["note"], str):
        return f"{label} has a 'note' that is not text: {short(entry['note'])}"
    relevant = entry.get("relevant")
    if _names(relevant) is None:
        return f"{label} needs 'relevant' as a non-empty list of style names or ids, got {short(relevant)}"
    return ""


def _names(relevant: Any) -> tuple[str, ...] | None:
    """A `relevant` value as a tuple of names (one name may stand alone); None if it is not one."""
    names = [relevant] if isinstance(relevant, str) else relevant
    if not isinstance(names, list) or not names:
        return None
    if not all(isinstance(n, str) and n.strip() for n in names):
        return None
    return tuple(dict.fromkeys(n.strip() for n in names))
