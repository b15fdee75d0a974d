"""The library scale benchmark (benchmarks/library_scale.py) at 1,000 styles: its figures are sound, and sdrag
finds what raw ChromaDB and exact search find. The 10k and 100k runs stay out of the test suite."""

import sys

from conftest import REPO

from sdrag.retrieval.entries import flat

sys.path.insert(0, str(REPO / "benchmarks"))
import library_scale as bench  # noqa: E402


def test_the_1k_run_recalls_like_exact_search_and_matches_raw_chroma(tmp_path, clip):
    embedder = bench.Projected(clip)
    result = bench.run_size(1000, embedder, tmp_path, queries=30, batch=250, clip_n=32)
    # Realistic spread, not near-duplicates; and tiny CLIP's rows really were embedded into the library.
    assert 0.1 < result["mean_cos"] < 0.6
    assert result["clip_images_per_s"] > 0 and result["clip_texts_per_s"] > 0
    assert result["sdrag_recall"] >= 0.95 and result["raw_recall"] >= 0.95
    assert result["same_ids"] >= 0.9 and len(result["sdrag_ids"]) == 30
    assert all(len(ids) == 10 for ids in result["sdrag_ids"])
    for system in ("sdrag", "raw"):
        figures = result[system]
        assert figures["upsert_per_s"] > 0 and figures["folder_mb"] > 0
        assert 0 < figures["open_count_s"] < 60 and 0 < figures["open_query_s"] < 60
    lines = bench.rows_of(result)
    assert len(lines) == 2 and lines[0].startswith("| 1,000 | sdrag |") and lines[1].startswith("| 1,000 | raw |")
    assert bench.ratio_line([result]).startswith("ratio sdrag/raw: 1,000: open+count ")


def test_text_queries_search_the_512_d_library_end_to_end(clip):
    embedder = bench.Projected(clip)
    texts = embedder.embed_text(["a watercolour cottage", "neon city"])
    direct = clip.embed_text(["a watercolour cottage", "neon city"])
    # The isometry keeps norms and cosines: the 512-d rows rank as tiny CLIP's own would.
    assert texts.shape == (2, bench.DIM)
    assert abs(float(texts[0] @ texts[1]) - float(direct[0] @ direct[1])) < 1e-5
    ids, metas = bench.styles(3)
    assert len(set(ids)) == 3 and all(flat(m)["sha256"].startswith(i) for i, m in zip(ids, metas))
