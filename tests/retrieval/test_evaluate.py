"""Retrieval evaluation (sdrag/retrieval/evaluate.py): the metrics on hand-made rankings, the labelled set's checks,
and the bundled styles/queries.yaml scored on the tiny preset, where dense CLIP scores are noise (random weights)
and only the text metadata can rank."""

import math
import re

import pytest
import yaml
from conftest import STYLES

from sdrag import LibraryError
from sdrag.errors import ParameterError
from sdrag.retrieval.evaluate import (
    MIN_DEPTH,
    evaluate,
    evaluate_queries,
    load_queries,
    ndcg_at_k,
    recall_at_k,
    reciprocal_rank,
    summary,
)

QUERIES = STYLES / "queries.yaml"
LOG3 = math.log2(3)  # the discount at rank 2
RANKED = ["a", "b", "c", "d", "e"]


# -- metrics, by hand ---------------------------------------------------------------------------------------


def test_recall_at_k():
    assert recall_at_k(RANKED, ["a"], 1) == 1.0
    assert recall_at_k(RANKED, ["c"], 2) == 0.0
    assert recall_at_k(RANKED, ["b", "d"], 3) == 0.5  # b in the top 3, d not
    assert recall_at_k(RANKED, ["b", "d", "z"], 5) == pytest.approx(2 / 3)  # z never retrieved
    assert recall_at_k(RANKED, {"e"}, 50) == 1.0  # k beyond the ranking looks at all of it
    assert recall_at_k([], ["a"], 3) == 0.0
    assert recall_at_k(["a", "a", "a"], ["a", "b"], 3) == 0.5  # a repeated hit counts once


def test_reciprocal_rank():
    assert reciprocal_rank(RANKED, ["a"]) == 1.0
    assert reciprocal_rank(RANKED, ["c"]) == pytest.approx(1 / 3)
    assert reciprocal_rank(RANKED, ["e", "b"]) == 0.5  # the first relevant one counts
    assert reciprocal_rank(RANKED, ["z"]) == 0.0
    assert reciprocal_rank([], ["a"]) == 0.0


def test_ndcg_at_k():
    assert ndcg_at_k(RANKED, ["a"], 5) == 1.0
    assert ndcg_at_k(RANKED, ["b"], 5) == pytest.approx(1 / LOG3)  # 0.6309
    assert ndcg_at_k(RANKED, ["a", "b"], 2) == 1.0
    # b at rank 2, d at rank 4 (cut off at 3); ideal: two hits at ranks 1 and 2.
    assert ndcg_at_k(RANKED, ["b", "d"], 3) == pytest.approx((1 / LOG3) / (1 + 1 / LOG3))  # 0.3869
    assert ndcg_at_k(RANKED, ["b", "d"], 5) == pytest.approx((1 / LOG3 + 1 / math.log2(5)) / (1 + 1 / LOG3))
    # The ideal DCG only counts min(k, relevant) hits: one hit at rank 1 of k=1 is perfect though 3 are relevant.
    assert ndcg_at_k(RANKED, ["a", "y", "z"], 1) == 1.0
    # Three relevant, one retrieved at rank 1, k past the end: 1 / (1 + 1/log2 3 + 1/log2 4) = 0.4367.
    assert ndcg_at_k(RANKED, ["a", "y", "z"], 10) == pytest.approx(1 / (1 + 1 / LOG3 + 0.5))
    assert ndcg_at_k(RANKED, ["z"], 5) == 0.0
    assert ndcg_at_k(["a", "a"], ["a", "b"], 2) == pytest.approx(1 / (1 + 1 / LOG3))  # a repeat earns nothing


@pytest.mark.parametrize("k", [0, -1, 1.5, True, "3", None])
def test_metrics_refuse_a_bad_cutoff(k):
    with pytest.raises(ParameterError, match="cut-off"):
        recall_at_k(RANKED, ["a"], k)
    with pytest.raises(ParameterError, match="cut-off"):
        ndcg_at_k(RANKED, ["a"], k)


def test_metrics_refuse_an_unlabelled_query():
    for metric in (lambda r: recall_at_k(RANKED, r, 3), lambda r: reciprocal_rank(RANKED, r),
                   lambda r: ndcg_at_k(RANKED, r, 3)):
        with pytest.raises(ParameterError, match="relevant"):
            metric([])


def test_summary_averages_per_method():
    rows = evaluate_rows([("dense", 0.0, 0.5), ("dense", 1.0, 1.0), ("hybrid", 1.0, 1.0)])
    table = summary(rows)
    assert list(table.index) == ["dense", "hybrid"]
    assert list(table.columns) == ["recall@1", "mrr", "ndcg@1", "queries"]
    assert table.loc["dense"].tolist() == [0.5, 0.75, 0.5, 2]
    assert table.loc["hybrid", "queries"] == 1


def evaluate_rows(rows):
    import pandas as pd

    return pd.DataFrame([{"method": m, "query": "q", "recall@1": r, "rr": rr, "ndcg@1": r} for m, r, rr in rows])


# -- the bundled labelled set -------------------------------------------------------------------------------


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def test_bundled_queries_are_labelled_by_known_names():
    manifest = yaml.safe_load((STYLES / "manifest.yaml").read_text())["styles"]
    names = {s["name"] for s in manifest}
    vocabulary = set().union(*(_words(" ".join([s["name"], s["caption"], *s["tags"]])) for s in manifest))
    items = load_queries(QUERIES)
    assert len(items) >= 30
    assert len({i.query.lower() for i in items}) == len(items)
    assert {n for i in items for n in i.relevant} == names  # every style is somebody's answer
    assert sum(len(i.relevant) > 1 for i in items) >= 5
    # Synonyms only: a ranker that reads the metadata cannot find these.
    assert sum(not _words(i.query) & vocabulary for i in items) >= 10


@pytest.fixture(scope="module")
def per_query(wb):
    return evaluate_queries(wb.library, QUERIES)


def test_evaluate_has_one_row_per_method_in_unit_range(per_query):
    table = summary(per_query)
    assert list(table.index) == ["dense", "lexical", "hybrid"]
    assert list(table.columns) == ["recall@1", "recall@3", "recall@5", "mrr", "ndcg@5", "queries"]
    metrics = table.drop(columns="queries")
    assert ((metrics >= 0) & (metrics <= 1)).all().all()
    assert (table["queries"] == len(load_queries(QUERIES))).all()
    # Monotone in k, and the rankings went MIN_DEPTH deep (past the deepest cut-off) so MRR sees late hits.
    assert (table["recall@1"] <= table["recall@3"]).all() and (table["recall@3"] <= table["recall@5"]).all()
    assert (per_query[per_query.method == "dense"]["ranked"].map(len) == MIN_DEPTH).all()


def test_hybrid_beats_dense_on_the_bundled_set_with_random_clip(per_query):
    table = summary(per_query)
    assert table.loc["hybrid", "recall@3"] > table.loc["dense", "recall@3"]
    assert table.loc["hybrid", "mrr"] > table.loc["dense", "mrr"]
    assert table.loc["lexical", "mrr"] > table.loc["dense", "mrr"]


def test_names_and_ids_label_alike(wb):
    cat = wb.library.get("Chelsea the cat")
    by_name = evaluate(wb.library, [{"query": "tabby cat", "relevant": ["Chelsea the cat"]}], "lexical", 3)
    by_id = evaluate(wb.library, [{"query": "tabby cat", "relevant": cat.id}], ["lexical"], [3])
    assert by_name.equals(by_id) and by_name.loc["lexical", "queries"] == 1


# -- one error, naming what is wrong ------------------------------------------------------------------------


def test_unknown_names_are_one_error_listing_each(wb):
    queries = [{"query": "neon", "relevant": ["Neon lines", "Neon signs"]},
               {"query": "cat", "relevant": ["Dog", "Chelsea the cat"]}]
    with pytest.raises(LibraryError) as err:
        evaluate(wb.library, queries)
    text = str(err.value)
    assert "'Neon signs'" in text and "'Dog'" in text and "Neon lines" not in text
    assert "Fix:" in text and "table()" in text


@pytest.mark.parametrize("entries, named", [
    ([{"query": "ok", "relevant": ["Blueprint"]}, "just text"], "entry 2 is 'just text'"),
    ([{"query": "", "relevant": ["Blueprint"]}], "entry 1 needs 'query'"),
    ([{"query": 8, "relevant": ["Blueprint"]}], "entry 1 needs 'query'"),
    ([{"query": "blue", "relevant": []}], "entry 1 ('blue') needs 'relevant'"),
    ([{"query": "blue", "relevant": [3]}], "entry 1 ('blue') needs 'relevant'"),
    ([{"query": "blue"}], "entry 1 ('blue') needs 'relevant'"),
    ([{"query": "blue", "relevent": ["Blueprint"]}], "unknown key(s) ['relevent']"),
    ([], "non-empty list"),
    ({"query": "blue", "relevant": ["Blueprint"]}, "non-empty list"),
    (None, "non-empty list"),
])
def test_malformed_entries_are_one_error_naming_them(wb, entries, named):
    with pytest.raises(LibraryError) as err:
        evaluate(wb.library, entries)
    assert named in str(err.value) and "Fix:" in str(err.value)


def test_every_malformed_entry_is_named_at_once():
    with pytest.raises(LibraryError) as err:
        load_queries([{"query": "a", "relevant": 5}, {"query": "b", "relevant": ["x"]}, 7])
    assert "entry 1 ('a')" in str(err.value) and "entry 3" in str(err.value) and "entry 2" not in str(err.value)


@pytest.mark.parametrize("text, named", [
    ("queries: [{query: a, relevant: [x]\n", "Cannot read"),
    ("42\n", "non-empty list"),
    ("queries:\n  - query: 1984\n    relevant: [x]\n", "entry 1 needs 'query'"),
    ("", "non-empty list"),
])
def test_an_edited_yaml_file_is_checked(tmp_path, text, named):
    path = tmp_path / "queries.yaml"
    path.write_text(text)
    with pytest.raises(LibraryError) as err:
        load_queries(path)
    assert named in str(err.value) and "Fix:" in str(err.value)


def test_a_missing_file_or_bad_options_are_one_error(tmp_path, wb):
    with pytest.raises(LibraryError, match="Cannot read the labelled queries"):
        load_queries(str(tmp_path / "nope.yaml"))
    good = [{"query": "blue", "relevant": ["Blueprint"]}]
    with pytest.raises(ParameterError, match="cut-off"):
        evaluate(wb.library, good, k=[1, 0])
    with pytest.raises(ParameterError, match="methods"):
        evaluate(wb.library, good, methods=[])
