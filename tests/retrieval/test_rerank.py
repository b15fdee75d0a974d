"""A text to avoid and diversity (MMR) on top of the ranking: pinned arithmetic on hand-made candidates, then the
real library, the Params knob and the workbench that passes them on."""

import numpy as np
import pytest

from sdrag import LibraryError, ParameterError, Params
from sdrag.retrieval.entries import Style
from sdrag.retrieval.ranking import RRF_K, explain, hits_table, rerank


def _pool(n: int) -> list[Style]:
    return [Style(id=f"{i:016x}", name=f"s{i}", path="", score=1.0 - i / 10, explanation={"method": "dense"})
            for i in range(n)]


def test_avoid_costs_each_style_the_reciprocal_rank_share_of_its_place_in_the_avoided_ranking():
    pool = _pool(4)
    hits = rerank(pool, 4, ("dark", [pool[0], pool[3]]), None, 0.0)
    # s0: 1/61 - 1/61 = 0 falls below s1 (1/62) and s2 (1/63); s3: 1/64 - 1/62 < 0 goes last.
    assert [h.name for h in hits] == ["s1", "s2", "s0", "s3"]
    assert hits[2].explanation["avoid"] == {"text": "dark", "rank": 1, "penalty": round(1 / (RRF_K + 1), 6)}
    assert hits[0].explanation["avoid"]["rank"] is None and hits[0].score == pool[1].score  # scores stay the method's
    assert "like avoided 'dark' #1 (-0.0164)" in explain(hits[2])
    assert list(hits_table(hits)["avoided rank"].fillna(0)) == [0, 0, 1, 2]


def test_mmr_trades_relevance_for_difference_as_diversity_rises():
    pool = _pool(3)
    vectors = np.array([[1.0, 0.0], [0.99, 0.141], [0.0, 1.0]], np.float32)  # s1 nearly repeats s0; s2 differs
    plain = rerank(pool, 2, None, vectors, 0.0)
    assert [h.name for h in plain] == ["s0", "s1"] and "diversity" not in plain[0].explanation
    spread = rerank(pool, 2, None, vectors, 0.6)
    # s1: 0.4 * 0.5 - 0.6 * 0.99 < s2: 0.4 * 0 - 0.6 * 0 (relevance scaled to [0, 1] over the pool).
    assert [h.name for h in spread] == ["s0", "s2"]
    assert spread[0].explanation["diversity"] == {"weight": 0.6, "closest": None}
    assert spread[1].explanation["diversity"]["closest"] == 0.0
    assert "diverse pick (0.00 to the closest earlier pick)" in explain(spread[1])
    assert [h.name for h in rerank(pool, 2, None, vectors, 0.3)] == ["s0", "s1"]  # 0.7*0.5-0.3*0.99 > 0


@pytest.fixture
def ingested(lib):
    library, folder = lib
    library.ingest(folder, progress=False)
    return library


def test_avoiding_a_word_demotes_the_styles_it_names(ingested):
    query = "a watercolour wash landscape"
    assert ingested.search(query, k=1)[0].name == "Watercolour wash"
    hits = ingested.search(query, k=len(ingested), avoid="watercolour")
    assert hits[0].name != "Watercolour wash"
    (demoted,) = [h for h in hits if h.name == "Watercolour wash"]
    assert demoted.explanation["avoid"]["rank"] == 1 and demoted.explanation["lexical"]["rank"] == 1
    # Blank avoid text is no avoid at all.
    assert [h.id for h in ingested.search(query, k=3, avoid="  ")] == [h.id for h in ingested.search(query, k=3)]


def test_diversity_spreads_a_blend_over_less_similar_styles(ingested):
    def spread(hits):
        vectors = ingested.vectors([h.id for h in hits])
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        return float((unit @ unit.T)[np.triu_indices(len(hits), 1)].mean())

    plain = ingested.search("ink drawing", k=3, method="dense")
    diverse = ingested.search("ink drawing", k=3, method="dense", diversity=0.9)
    assert diverse[0].id == plain[0].id  # the most relevant stays first
    assert spread(diverse) < spread(plain)
    assert all(h.explanation["diversity"]["weight"] == 0.9 for h in diverse)


@pytest.mark.parametrize("bad", [{"diversity": 1.5}, {"diversity": -0.1}, {"diversity": "high"},
                                 {"diversity": True}, {"avoid": 5}, {"avoid": ["dark"]}])
def test_bad_avoid_or_diversity_is_one_library_error(ingested, bad):
    with pytest.raises(LibraryError, match="avoid must be a text|diversity must be a number"):
        ingested.search("ink", **bad)


def test_the_params_carry_avoid_and_diversity_to_retrieval(wb, sketch):
    with pytest.raises(ParameterError, match="diversity"):
        Params(diversity=2.0).resolved()
    r = wb.run(sketch, "a watercolour wash landscape", avoid="watercolour", top_k=2, diversity=0.5, size=64, steps=2)
    assert len(r.hits) == 2 and all(h.explanation["avoid"]["text"] == "watercolour" for h in r.hits)
    assert all(h.explanation["diversity"]["weight"] == 0.5 for h in r.hits)
    assert r.params["avoid"] == "watercolour" and r.params["diversity"] == 0.5
