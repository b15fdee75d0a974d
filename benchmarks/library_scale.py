"""How the style library scales: sdrag's StyleLibrary against raw ChromaDB on the same vectors, per library size.

The vectors are synthetic 512-d unit vectors with a realistic spread (a mixture of 200 gaussian clusters of
uneven size around a shared direction: the mean pairwise cosine is printed, about 0.3, where tiny CLIP's are
near-duplicates at 0.99), plus a small subset that tiny CLIP embedded from images (its own throughput is timed
apart). tiny CLIP is 32-d, so its vectors are carried into 512-d by a fixed isometry (cosines unchanged): text
queries then run end to end, embedding included. Raw ChromaDB gets default settings (cosine space, so both rank
alike) in its own folder, and the same upsert batches.

Per size and system: open + count and open + first query (each in a fresh process, imports not counted), upsert
throughput of precomputed vectors (sdrag through `StyleLibrary.add_vectors`), search p50/p95 for vector queries
and (sdrag only) text queries, recall@10 against exact numpy search, and the folder's size. The last line is the
ratio sdrag/raw for open and query. Each size's summary line also times an open that has to rebuild sdrag's index
from its log (as after a kill -9 during a save).

    python benchmarks/library_scale.py [--sizes 1000,10000,100000] [--quick] [--queries 200] [--batch 1000]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

DIM = 512
CLUSTERS = 200
NAME = "library-scale-512"  # the embedder name the benchmark's libraries are made with
COLLECTION = "library_scale"
WORDS = ("watercolour wash ink charcoal oil gouache pastel pencil neon pixel mosaic woodcut etching fresco glitch"
         " vapor noir pop bauhaus baroque gothic ukiyo collage stencil sepia cyan ochre crimson teal amber misty"
         " stormy sunlit moonlit forest harbour city desert meadow cottage portrait robot dragon lighthouse").split()
TAGS = ("paint", "photo", "ink", "digital", "vintage", "bold", "soft", "dark", "light", "texture")
TEXTS = ("a watercolour cottage in a meadow", "neon city at night", "charcoal portrait", "stormy harbour in oil",
         "pixel art robot", "misty forest etching", "bold pop collage", "sepia lighthouse photo")


# -- data -----------------------------------------------------------------------------------------------


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def synthetic(n: int, seed: int, dim: int = DIM) -> np.ndarray:
    """`n` unit vectors drawn from one fixed mixture of CLUSTERS gaussians of uneven weight (seed picks the draw)."""
    world = np.random.default_rng(12345)  # the same mixture for the library and its queries
    shared = world.standard_normal(dim) / np.sqrt(dim)
    centres = world.standard_normal((CLUSTERS, dim)) / np.sqrt(dim)
    weights = world.dirichlet(np.full(CLUSTERS, 0.7))
    rng = np.random.default_rng(seed)
    which = rng.choice(CLUSTERS, size=n, p=weights)
    noise = rng.standard_normal((n, dim)) * (0.9 / np.sqrt(dim))
    return _unit(0.9 * shared + centres[which] + noise)


def mean_pairwise_cosine(rows: np.ndarray, sample: int = 1000, seed: int = 0) -> float:
    """The mean cosine between distinct rows of a random sample of unit vectors."""
    pick = rows[np.random.default_rng(seed).choice(len(rows), size=min(sample, len(rows)), replace=False)]
    sims = pick @ pick.T
    m = len(pick)
    return float((sims.sum() - np.trace(sims)) / (m * (m - 1)))


def styles(n: int, seed: int = 0) -> tuple[list[str], list[dict]]:
    """Ids and metadata (as `entries.metadata` makes them) of `n` synthetic styles with a few words each."""
    from sdrag.retrieval.entries import metadata

    rng = np.random.default_rng(seed)
    ids, metas = [], []
    for i in range(n):
        sha = hashlib.sha256(f"library-scale {seed} {i}".encode()).hexdigest()
        words = rng.choice(WORDS, size=5, replace=False)
        info = {"name": f"{words[0]} {i}", "caption": " ".join(words[1:]), "licence": "CC0-1.0", "source": "",
                "tags": sorted(set(rng.choice(TAGS, size=2).tolist()))}
        ids.append(sha[:16])
        metas.append(metadata(info, Path(f"/styles/s{i:06d}.png"), sha, SimpleNamespace(width=512, height=512)))
    return ids, metas


class Projected:
    """tiny CLIP's vectors carried into DIM dimensions by a fixed isometry, so its queries search 512-d vectors."""

    def __init__(self, clip):
        """Wrap a ClipEmbedder."""
        self.clip = clip
        self.dim = DIM
        basis, _ = np.linalg.qr(np.random.default_rng(7).standard_normal((DIM, clip.dim)))
        self.basis = basis.T.astype(np.float32)  # orthonormal rows: norms and cosines are kept

    def embed_text(self, texts):
        """Text rows in DIM dimensions."""
        return self.clip.embed_text(texts) @ self.basis

    def embed_images(self, images):
        """Image rows in DIM dimensions."""
        return self.clip.embed_images(images) @ self.basis


def tiny_clip():
    """The tiny preset's CLIP embedder, built as a Workbench builds it."""
    from sdrag.models.device import pick_device, pick_dtype
    from sdrag.models.plan import plan
    from sdrag.models.presets import get_spec
    from sdrag.retrieval.embed import ClipEmbedder

    device = pick_device()
    dtype = pick_dtype(device)
    return ClipEmbedder(plan(get_spec("tiny"), dtype)["clip"], device, dtype)


def clip_subset(embedder: Projected, n: int) -> tuple[np.ndarray, dict]:
    """`n` small noise images embedded by tiny CLIP (as 512-d rows), and the embedding throughput."""
    from PIL import Image

    rng = np.random.default_rng(3)
    datas = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(buf, "PNG")
        datas.append(buf.getvalue())
    embedder.embed_images(datas[:4])  # warm up
    start = time.perf_counter()
    rows = embedder.embed_images(datas)
    images_s = n / (time.perf_counter() - start)
    texts = [f"{a} {b}" for a, b in zip(rng.choice(WORDS, n), rng.choice(WORDS, n))]
    start = time.perf_counter()
    embedder.embed_text(texts)
    return rows, {"clip_images_per_s": images_s, "clip_texts_per_s": n / (time.perf_counter() - start)}


# -- building both libraries ----------------------------------------------------------------------------


def raw_collection(folder: Path):
    """Raw ChromaDB at `folder` with default settings (cosine space), as a fresh client."""
    import chromadb
    from chromadb.config import Settings

    client = chromadb.PersistentClient(path=str(folder), settings=Settings(anonymized_telemetry=False))
    return client, client.get_or_create_collection(COLLECTION, embedding_function=None,
                                                   configuration={"hnsw": {"space": "cosine"}})


def fill(write, ids: list[str], rows: np.ndarray, metas: list[dict], batch: int) -> dict:
    """Write everything with `write(ids, rows, metas)` a batch at a time: overall and last-10% styles/s."""
    times = []
    for start in range(0, len(ids), batch):
        end = start + batch
        began = time.perf_counter()
        write(ids[start:end], rows[start:end], metas[start:end])
        times.append((len(ids[start:end]), time.perf_counter() - began))
    tail = times[-max(1, len(times) // 10):]
    return {"upsert_per_s": len(ids) / sum(t for _, t in times),
            "upsert_tail_per_s": sum(n for n, _ in tail) / sum(t for _, t in tail)}


def build(folder: Path, embedder: Projected, ids, rows, metas, batch: int) -> tuple[dict, dict, object, object]:
    """Both libraries of the same data: (sdrag figures, raw figures, the sdrag library, the raw collection)."""
    from sdrag.retrieval.library import StyleLibrary

    library = StyleLibrary(folder / "sdrag", lambda: embedder, NAME)
    mine = fill(lambda i, r, m: library.add_vectors(i, r, m, batch_size=batch), ids, rows, metas, batch)
    _, col = raw_collection(folder / "raw")
    raw = fill(lambda i, r, m: col.upsert(ids=i, embeddings=r, metadatas=m), ids, rows, metas, batch)
    return mine, raw, library, col


# -- measuring ------------------------------------------------------------------------------------------


def percentiles(times: list[float]) -> tuple[float, float]:
    """p50 and p95 of `times`, in milliseconds."""
    return float(np.percentile(times, 50) * 1e3), float(np.percentile(times, 95) * 1e3)


def timed(call, items) -> tuple[list, list[float]]:
    """Results and seconds of `call(item)` for each item (after two warm-up calls)."""
    for item in items[:2]:
        call(item)
    results, times = [], []
    for item in items:
        start = time.perf_counter()
        results.append(call(item))
        times.append(time.perf_counter() - start)
    return results, times


def recall(found: list[list[str]], exact: list[list[str]]) -> float:
    """Mean share of the exact top-k found."""
    return float(np.mean([len(set(f) & set(e)) / len(e) for f, e in zip(found, exact)]))


def exact_top(rows: np.ndarray, ids: list[str], queries: np.ndarray, k: int = 10) -> list[list[str]]:
    """The exact top-k ids by cosine (the rows are unit vectors)."""
    sims = queries @ rows.T
    best = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return [[ids[j] for j in row] for row in best]


def searches(library, col, queries: np.ndarray, texts: list[str]) -> dict:
    """Search latencies of both systems, their top-10 ids, and sdrag's text latencies (dense and hybrid)."""
    mine, mine_t = timed(lambda q: [s.id for s in library.search_vector(q, k=10)], list(queries))
    raw, raw_t = timed(lambda q: col.query(query_embeddings=[q.tolist()], n_results=10,
                                           include=["metadatas", "distances"])["ids"][0], list(queries))
    start = time.perf_counter()
    library.search(texts[0], k=10)  # the first hybrid search builds (and saves) the lexical index
    lexical_build = time.perf_counter() - start
    _, dense_t = timed(lambda t: library.search(t, k=10, method="dense"), texts)
    _, hybrid_t = timed(lambda t: library.search(t, k=10), texts)
    _, count_t = timed(lambda _: len(library), texts)  # what every search paid before it stopped counting first
    return {"count_ms": percentiles(count_t), "sdrag_ids": mine, "raw_ids": raw, "sdrag_vector_ms": percentiles(mine_t),
            "raw_vector_ms": percentiles(raw_t), "text_dense_ms": percentiles(dense_t),
            "text_hybrid_ms": percentiles(hybrid_t), "lexical_build_s": lexical_build}


OPEN_CHILD = """
import json, sys, tempfile, time
import numpy as np
sys.path.insert(0, sys.argv[4])
import chromadb
from chromadb.api.shared_system_client import SharedSystemClient
import library_scale as bench
from sdrag.retrieval.library import StyleLibrary
system, folder, query = sys.argv[1], sys.argv[2], np.load(sys.argv[3])
bench.raw_collection(tempfile.mkdtemp())[0].close()  # chroma's one-time start in a process, not counted either
SharedSystemClient.clear_system_cache()
out = {}
for what in ("count", "query"):
    start = time.perf_counter()
    if system == "sdrag":
        library = StyleLibrary(folder, lambda: None, bench.NAME)
        n = len(library) if what == "count" else len(library.search_vector(query, k=10))
        out[what] = time.perf_counter() - start
        library._store.close()
    else:
        client, col = bench.raw_collection(folder)
        n = col.count() if what == "count" else len(col.query(query_embeddings=[query.tolist()], n_results=10)["ids"])
        out[what] = time.perf_counter() - start
        client.close()
    SharedSystemClient.clear_system_cache()
print(json.dumps(out))
"""


def open_times(system: str, folder: Path, query: np.ndarray) -> dict:
    """Seconds to open + count and open + first query, in a fresh process (imports not counted)."""
    qfile = folder.parent / "query.npy"
    np.save(qfile, query)
    args = [sys.executable, "-c", OPEN_CHILD, system, str(folder), str(qfile), str(Path(__file__).parent)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    got = json.loads(out.stdout.strip().splitlines()[-1])
    return {"open_count_s": got["count"], "open_query_s": got["query"]}


def folder_mb(folder: Path) -> float:
    """Size of every file under `folder`, in MB."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def run_size(n: int, embedder: Projected, work: Path, queries: int = 200, batch: int = 1000,
             clip_n: int = 64) -> dict:
    """Every figure for a library of `n` styles (the last `clip_n` of them embedded by tiny CLIP)."""
    clip_rows, clip_rates = clip_subset(embedder, clip_n)
    rows = np.concatenate([synthetic(n - clip_n, seed=n), clip_rows]).astype(np.float32)
    ids, metas = styles(n)
    mine, raw, library, col = build(work, embedder, ids, rows, metas, batch)
    query_rows = synthetic(queries, seed=10**9 + n)
    found = searches(library, col, query_rows, [TEXTS[i % len(TEXTS)] for i in range(max(20, queries // 4))])
    exact = exact_top(rows, ids, query_rows)
    result = {"n": n, "mean_cos": mean_pairwise_cosine(rows[:n - clip_n]), **clip_rates, "sdrag": mine, "raw": raw,
              **found, "sdrag_recall": recall(found["sdrag_ids"], exact), "raw_recall": recall(found["raw_ids"], exact),
              "same_ids": float(np.mean([a == b for a, b in zip(found["sdrag_ids"], found["raw_ids"])]))}
    library._store.close()  # the open timings start from disk, as another process would
    for system in ("sdrag", "raw"):
        result[system]["folder_mb"] = folder_mb(work / system)
        result[system].update(open_times(system, work / system, query_rows[0]))
    # Without its record sdrag cannot vouch for the saved index: the open rebuilds it from the log, as after a kill
    # -9 during a save.
    (work / "sdrag" / "sdrag.index").unlink()
    result["sdrag"]["rebuild_s"] = open_times("sdrag", work / "sdrag", query_rows[0])["open_count_s"]
    return result


# -- the report -----------------------------------------------------------------------------------------

HEAD = ("| styles | system | open + count | open + 1st query | upsert styles/s (last 10%) | vector query p50 / p95 |"
        " text p50 / p95 dense, hybrid | recall@10 | folder |\n|---|---|---|---|---|---|---|---|---|")


def rows_of(r: dict) -> list[str]:
    """The table rows of one size's result."""
    lines = []
    for system in ("sdrag", "raw"):
        s = r[system]
        opened = f"{s['open_count_s']:.2f} s | {s['open_query_s']:.2f} s"
        vec = r[f"{system}_vector_ms"]
        text = (f"{r['text_dense_ms'][0]:.1f} / {r['text_dense_ms'][1]:.1f}, {r['text_hybrid_ms'][0]:.1f} /"
                f" {r['text_hybrid_ms'][1]:.1f} ms" if system == "sdrag" else "-")
        lines.append(f"| {r['n']:,} | {system} | {opened} | {s['upsert_per_s']:,.0f} ({s['upsert_tail_per_s']:,.0f}) |"
                     f" {vec[0]:.1f} / {vec[1]:.1f} ms | {text} | {r[f'{system}_recall']:.3f} |"
                     f" {s['folder_mb']:.0f} MB |")
    return lines


def ratio_line(results: list[dict]) -> str:
    """sdrag/raw for open + count, open + first query and vector query p50, per size."""
    parts = []
    for r in results:
        s, w = r["sdrag"], r["raw"]
        parts.append(f"{r['n']:,}: open+count {s['open_count_s'] / w['open_count_s']:.1f}x, open+query"
                     f" {s['open_query_s'] / w['open_query_s']:.1f}x, vector query p50"
                     f" {r['sdrag_vector_ms'][0] / r['raw_vector_ms'][0]:.1f}x")
    return "ratio sdrag/raw: " + "; ".join(parts)


def main(argv: list[str] | None = None) -> None:
    """Run the sizes asked for and print the table, then the ratio line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--quick", action="store_true", help="1,000 styles, 50 queries (under 30 s)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args(argv)
    sizes = [1000] if args.quick else [int(s) for s in args.sizes.split(",")]
    queries = 50 if args.quick else args.queries
    embedder = Projected(tiny_clip())
    results = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="sdrag-library-scale-") as tmp:
            started = time.perf_counter()
            results.append(run_size(n, embedder, Path(tmp), queries=queries, batch=args.batch))
            r = results[-1]
            print(f"{n:,} styles in {time.perf_counter() - started:.0f} s: mean pairwise cosine {r['mean_cos']:.3f};"
                  f" tiny CLIP {r['clip_images_per_s']:.0f} images/s, {r['clip_texts_per_s']:.0f} texts/s; lexical"
                  f" index built in {r['lexical_build_s']:.2f} s; one count p50 {r['count_ms'][0]:.1f} ms; same top-10"
                  f" as raw for {r['same_ids']:.0%} of queries; an open that rebuilds the index from the log"
                  f" {r['sdrag']['rebuild_s']:.1f} s", flush=True)
    print(HEAD)
    for r in results:
        print("\n".join(rows_of(r)))
    print(ratio_line(results))


if __name__ == "__main__":
    main()
