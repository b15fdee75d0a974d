"""Hybrid retrieval: BM25 over names, captions and tags fused with CLIP, every hit explained, the lexical index
in step with the library (in this process and across processes) and rebuilt when missing, stale or damaged."""

import json
import subprocess
import sys
import textwrap

import pytest
from PIL import Image

from sdrag import LibraryError
from sdrag.models.tiny import TINY_VERSION
from sdrag.retrieval import entries
from sdrag.retrieval.lexical import INDEX_FILE, terms
from sdrag.retrieval.library import StyleLibrary
from sdrag.retrieval.ranking import RRF_K, explain

NAME = f"tiny-v{TINY_VERSION}"  # what a tiny Workbench calls its embedder


@pytest.fixture
def ingested(lib):
    """The starter styles in a fresh library."""
    library, folder = lib
    library.ingest(folder, progress=False)
    return library


def test_terms_drop_stop_words_case_and_punctuation():
    assert terms("A Watercolour-wash, of the 8-bit ERA!") == ["watercolour", "wash", "bit", "era"]


def test_the_issue_query_finds_the_watercolour_style_and_says_why(ingested):
    # Reported on tiny: dense alone retrieved "Astronaut portrait" for this prompt.
    (hit, *_) = ingested.search("a watercolour cottage in a meadow", k=3)
    assert hit.name == "Watercolour wash"
    why = hit.explanation
    assert why["method"] == "hybrid" and why["lexical"]["rank"] == 1 and why["lexical"]["terms"] == ["watercolour"]
    assert why["dense"]["rank"] is not None and hit.score == pytest.approx(why["fused"], abs=1e-6)
    assert "watercolour" in explain(hit)


def test_lexical_finds_only_styles_sharing_a_word_and_respects_tags(ingested):
    hits = ingested.search("photo of a rocket", k=10, method="lexical")
    assert hits[0].name == "Rocket launch" and all(h.explanation["lexical"]["terms"] for h in hits)
    assert all({"photo", "rocket"} & set(terms(f"{h.name} {h.caption} {' '.join(h.tags)}")) for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    tagged = ingested.search("photo", k=20, method="lexical", tags=["dark"])
    assert tagged and all("dark" in h.tags for h in tagged)
    assert ingested.search("zzzqqq", k=3, method="lexical") == []


def test_fusion_is_reciprocal_rank_with_the_users_weights(ingested):
    dense = ingested.search("neon glowing lines", k=11, method="dense")
    lexical = ingested.search("neon glowing lines", k=11, method="lexical")
    hybrid = ingested.search("neon glowing lines", k=11)
    d_rank = {h.id: n + 1 for n, h in enumerate(dense)}
    l_rank = {h.id: n + 1 for n, h in enumerate(lexical)}
    for h in hybrid:
        expected = 1 / (RRF_K + d_rank[h.id]) + (1 / (RRF_K + l_rank[h.id]) if h.id in l_rank else 0)
        assert h.explanation["fused"] == pytest.approx(expected, abs=1e-6)
    only_dense = ingested.search("neon glowing lines", k=11, weights={"dense": 1.0, "lexical": 0.0})
    assert [h.id for h in only_dense] == [h.id for h in dense]
    only_words = ingested.search("neon glowing lines", k=len(lexical), weights=(0, 1))
    assert [h.id for h in only_words] == [h.id for h in lexical]


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"method": "bm25"}, "Unknown search method"),
    ({"weights": {"dense": -1, "lexical": 1}}, "non-negative"),
    ({"weights": (0, 0)}, "not all zero"),
    ({"weights": {"clip": 1}}, "Search weights"),
    ({"weights": "1,1"}, "Search weights"),
    ({"k": "3"}, "k must be a whole number"),
    ({"k": 0, "method": "lexical"}, "k must be a whole number"),
])
def test_bad_methods_and_weights_are_one_clear_error(ingested, kwargs, needle):
    with pytest.raises(LibraryError, match=needle):
        ingested.search("neon", **kwargs)


def test_an_image_query_ranks_by_clip_and_lexical_refuses_it(ingested):
    style = ingested.list()[0]
    hit = ingested.search(Image.open(style.path), k=1)[0]
    assert hit.id == style.id and hit.explanation["method"] == "dense"
    with pytest.raises(LibraryError, match="an image has none"):
        ingested.search(Image.open(style.path), method="lexical")


def test_the_index_follows_adds_updates_and_removals(ingested, tmp_path):
    img = tmp_path / "zebra.png"
    Image.new("RGB", (32, 32), "gray").save(img)
    added = ingested.add(img, name="Zebra", caption="bold black and white stripes")
    assert ingested.search("stripes", k=1, method="lexical")[0].id == added.id
    ingested.add(img, name="Zebra", caption="a herd on the savanna")  # same file, new caption: an update
    assert ingested.search("stripes", k=1, method="lexical") == []
    assert ingested.search("savanna", k=1, method="lexical")[0].id == added.id
    ingested.remove(added.id)
    assert ingested.search("savanna", k=1, method="lexical") == []


def test_another_process_writing_is_seen_and_the_index_file_is_rebuilt_when_stale_gone_or_damaged(ingested, tmp_path):
    ingested.search("rocket", method="lexical")
    index_file = ingested.path / INDEX_FILE
    saved = json.loads(index_file.read_text())
    assert saved["state"] and len(saved["ids"]) == len(ingested)
    img = tmp_path / "kite.png"
    Image.new("RGB", (32, 32), "red").save(img)
    script = textwrap.dedent(f"""
        import sdrag
        wb = sdrag.Workbench.from_preset("tiny", library_dir={str(ingested.path)!r})
        wb.library.add({str(img)!r}, name="Kite", caption="a paper kite in the wind")
    """)
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=120)
    assert ingested.search("kite wind", k=1, method="lexical")[0].name == "Kite"  # this process's index was stale
    for damage in (b"", b"{not json", json.dumps({"state": "old", "ids": [], "metas": []}).encode()):
        index_file.write_bytes(damage)
        other = StyleLibrary(ingested.path, ingested._embedder_factory, NAME)
        assert other.search("kite wind", k=1, method="lexical")[0].name == "Kite"
    index_file.unlink()
    other = StyleLibrary(ingested.path, ingested._embedder_factory, NAME)
    assert other.search("kite wind", k=1, method="lexical")[0].name == "Kite" and index_file.is_file()


def test_metadata_is_read_a_page_at_a_time(ingested, monkeypatch):
    real = entries.all_metadata
    calls = []

    def small_pages(col, where=None, page=5000):
        calls.append(page)
        return real(col, where=where, page=3)

    monkeypatch.setattr("sdrag.retrieval.library.all_metadata", small_pages)
    names = [s.name for s in ingested.list()]
    assert len(names) == len(set(names)) == len(ingested) and calls
    ingested._lexical = None
    (ingested.path / INDEX_FILE).unlink(missing_ok=True)
    assert len(ingested.search("photo", k=50, method="lexical")) >= 5


def test_hits_table_shows_each_methods_rank_and_the_words(ingested):
    from sdrag.retrieval.ranking import hits_table

    table = hits_table(ingested.search("a watercolour cottage in a meadow", k=3))
    assert list(table["name"])[0] == "Watercolour wash" and table["matched words"].iloc[0] == "watercolour"
    assert table["dense rank"].notna().all() and table["lexical rank"].iloc[0] == 1
