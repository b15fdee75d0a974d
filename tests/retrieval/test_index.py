"""The saved vector index (sdrag/retrieval/index.py): chroma saves it, sdrag vouches for it, rebuilds it from the
log when it cannot, and keeps the log compact — without losing a style or bringing a removed one back."""

import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from test_library import NAME, _vector_styles

from sdrag import LibraryError
from sdrag.retrieval import index
from sdrag.retrieval.library import StyleLibrary
from sdrag.retrieval.store import COLLECTION

DIM = 32  # tiny CLIP's; these libraries hold precomputed rows only


def _library(folder: Path) -> StyleLibrary:
    """A tiny-CLIP library that is only given precomputed rows (so needs no CLIP, only its width)."""
    return StyleLibrary(folder, lambda: SimpleNamespace(dim=DIM), NAME)


def _sql(folder: Path, query: str, args: tuple = ()) -> list:
    con = sqlite3.connect(folder / "chroma.sqlite3")
    try:
        return con.execute(query, args).fetchall()
    finally:
        con.close()


def _segment(folder: Path) -> Path:
    return next(p for p in folder.iterdir() if index._UUID.fullmatch(p.name))


def _close(library: StyleLibrary) -> None:
    """Let go of the folder as a process that ended would (the next library on it starts from disk)."""
    library._store.close()
    library._store.record = None


def _assert_finds_each(library: StyleLibrary, ids: list[str], rows: np.ndarray) -> None:
    """Every style is stored with its own vector, nothing else is: a search for a row finds that row's style."""
    assert sorted(s.id for s in library.list()) == sorted(ids)
    for i in range(0, len(ids), max(1, len(ids) // 40)):
        hits = library.search_vector(rows[i], k=3)
        assert hits[0].id == ids[i] and hits[0].score > 0.999, (i, [(h.id, h.score) for h in hits])


@pytest.fixture
def saved(tmp_path):
    """A library of 2,500 styles whose index chroma has saved (every 1,000 records), closed: (folder, ids, rows)."""
    ids, rows, metas = _vector_styles(2500, DIM, seed=3)
    library = _library(tmp_path / "db")
    library.add_vectors(ids, rows, metas, batch_size=250)
    _close(library)
    return tmp_path / "db", ids, rows


def test_a_new_library_keeps_its_log_and_records_its_saved_index(saved):
    folder, ids, rows = saved
    config = json.loads(_sql(folder, "SELECT config_json_str FROM embeddings_queue_config")[0][0])
    assert config["automatically_purge"] is False  # chroma's default for a new database is True
    assert _sql(folder, "SELECT COUNT(*) FROM embeddings_queue")[0][0] == 2500  # every record, none purged
    saved_at = dict(_sql(folder, "SELECT s.scope, m.seq_id FROM max_seq_id m JOIN segments s ON s.id = m.segment_id"))
    assert saved_at["VECTOR"] == 2000  # the index files hold the first 2,000; the log the last 500
    record = index.read_record(str(folder))
    assert record["files"] == index.stamps(str(folder)) and any(k.endswith("data_level0.bin") for k in record["files"])
    _assert_finds_each(_library(folder), ids, rows)


def _scribble(path: Path, rng: random.Random) -> None:
    with open(path, "r+b") as fh:
        fh.seek(min(64, path.stat().st_size // 2))
        fh.write(rng.randbytes(4000))


# The ways the index files can differ from the record: a save cut short leaves any of them.
CHANGES = {
    "data_level0.bin scribbled": lambda seg, rng: _scribble(seg / "data_level0.bin", rng),
    "data_level0.bin truncated": lambda seg, rng: os.truncate(seg / "data_level0.bin", 10),
    "link_lists.bin scribbled": lambda seg, rng: _scribble(seg / "link_lists.bin", rng),
    "header.bin garbage": lambda seg, rng: (seg / "header.bin").write_bytes(rng.randbytes(100)),
    "id map truncated": lambda seg, rng: os.truncate(seg / "index_metadata.pickle", 7),
    "index folder removed": lambda seg, rng: shutil.rmtree(seg),
    "record removed": lambda seg, rng: (seg.parent / index.RECORD_FILE).unlink(),
    "record garbage": lambda seg, rng: (seg.parent / index.RECORD_FILE).write_bytes(rng.randbytes(50)),
}
# Opening runs in a child process: were the check to miss, chroma's C++ could crash the whole process.
OPEN_CHILD = """
import sys
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/.."]
from test_index import _library, _assert_finds_each
from test_library import _vector_styles
ids, rows, _ = _vector_styles(2500, 32, seed=3)
for folder in sys.argv[2:]:
    _assert_finds_each(_library(folder), ids, rows)
    print("ok", flush=True)
"""


def test_index_files_that_differ_from_the_record_are_rebuilt_from_the_log(saved, tmp_path):
    folders = []
    for case, change in CHANGES.items():
        folders.append(tmp_path / case.replace(" ", "-"))
        shutil.copytree(saved[0], folders[-1])
        change(_segment(folders[-1]), random.Random(case))
    child = subprocess.run([sys.executable, "-c", OPEN_CHILD, str(Path(__file__).parent), *map(str, folders)],
                           capture_output=True, text=True, timeout=300)
    opened = child.stdout.split().count("ok")
    assert child.returncode == 0, f"failed on {list(CHANGES)[opened]}: {child.stderr[-3000:]}"
    for folder in folders:
        # The rebuilt index was saved again and recorded: the next open trusts it.
        record = index.read_record(str(folder))
        assert record["files"] == index.stamps(str(folder)) and record["files"], folder.name
        assert not [p for p in folder.iterdir() if p.name.startswith(".discarded-")]


# Adds 4,000 styles in batches of 10, with chroma saving the index every 20 records, until it is killed.
KILLED_WRITER = """
import sys
sys.path[:0] = [sys.argv[2], sys.argv[2] + "/.."]
from sdrag import LibraryError
from sdrag.retrieval import index
index.SYNC_THRESHOLD = 20  # a save every other batch: a kill often lands in one
from test_index import _library
from test_library import _vector_styles
ids, rows, metas = _vector_styles(4000, 32, seed=4)
library = _library(sys.argv[1])
print("ready", flush=True)
for start in range(int(sys.argv[3]), 4000, 10):
    library.add_vectors(ids[start:start + 10], rows[start:start + 10], metas[start:start + 10])
    print(start + 10, flush=True)
"""


def _kill_when_the_index_changes(proc, folder: Path, rng: random.Random) -> int:
    """Let the writer finish some batches, then kill it as soon as chroma starts saving the index files; returns
    how many styles it said it had written."""
    lines = [proc.stdout.readline() for _ in range(rng.randint(3, 30))]
    before = index.stamps(str(folder))
    deadline = time.monotonic() + 60
    while index.stamps(str(folder)) == before and time.monotonic() < deadline:
        pass
    proc.kill()
    lines += proc.stdout.read().split()
    proc.wait(timeout=60)
    return int(lines[-1])


def test_kill_9_while_chroma_saves_its_index_loses_at_most_the_batch_in_flight(tmp_path):
    folder = tmp_path / "db"
    ids, rows, _ = _vector_styles(4000, DIM, seed=4)
    seed = random.randrange(10**6)
    rng = random.Random(seed)
    done, cut_short = 0, 0
    for _ in range(2):
        proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(folder), str(Path(__file__).parent),
                                 str(done)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        done = _kill_when_the_index_changes(proc, folder, rng)
        cut_short += index.read_record(str(folder)).get("files") != index.stamps(str(folder))
        library = _library(folder)
        stored = len(library)
        assert stored in (done, done + 10), f"{stored} stored, {done} reported (seed {seed})"
        _assert_finds_each(library, ids[:stored], rows[:stored])
        _close(library)
        done = stored
    assert cut_short >= 1, f"no kill landed in a save (seed {seed})"


def _churn(library: StyleLibrary, ids, metas, times: int, seed: int) -> np.ndarray:
    """Rewrite the first 300 styles `times` times, each time with new vectors; returns the last ones."""
    for r in range(times):
        rows = _vector_styles(300, DIM, seed=seed + r)[1]
        library.add_vectors(ids[:300], rows, metas[:300], batch_size=100)
    return rows


def test_rewrites_compact_the_log_and_a_rebuild_from_it_still_finds_every_current_vector(tmp_path, monkeypatch):
    monkeypatch.setattr(index, "LOG_FLOOR", 200)
    folder = tmp_path / "db"
    ids, rows, metas = _vector_styles(1200, DIM, seed=5)
    library = _library(folder)
    library.add_vectors(ids, rows, metas, batch_size=400)
    rows[:300] = _churn(library, ids, metas, 12, seed=50)
    library.remove(ids[1100:])  # removed styles must not come back from the log
    rows[:300] = _churn(library, ids, metas, 3, seed=90)
    live = ids[:1100]
    log_rows = _sql(folder, "SELECT COUNT(*) FROM embeddings_queue")[0][0]
    written = 1200 + 15 * 300 + 100
    assert log_rows <= 2 * 1100 + 200 + 400 < written  # compacted along the way (the last batches may be pending)
    _assert_finds_each(library, live, rows[:1100])
    _close(library)
    # The compacted log alone rebuilds the index: the current vectors, none removed, none older.
    (folder / index.RECORD_FILE).unlink()
    library = _library(folder)
    _assert_finds_each(library, live, rows[:1100])


def test_compact_gives_the_space_back_and_changes_no_result(tmp_path):
    folder = tmp_path / "db"
    ids, rows, metas = _vector_styles(1500, DIM, seed=6)
    library = _library(folder)
    library.add_vectors(ids, rows, metas, batch_size=500)
    rows[:300] = _churn(library, ids, metas, 3, seed=60)  # 900 rows the log no longer needs (under the floor)
    before = (folder / "chroma.sqlite3").stat().st_size
    report = library.compact()
    assert report["log_rows_removed"] > 0 and report["log_rows"] < 1500 + 900
    assert report["bytes_after"] < before and (folder / "chroma.sqlite3").stat().st_size == report["bytes_after"]
    _assert_finds_each(library, ids, rows)
    assert library.compact()["log_rows_removed"] == 0  # nothing more to drop


# Compacts a library over and over until it is killed.
KILLED_COMPACTION = """
import sys
sys.path[:0] = [sys.argv[2], sys.argv[2] + "/.."]
from test_index import _library
library = _library(sys.argv[1])
print("ready", flush=True)
while True:
    library.compact()
"""


def test_kill_9_during_compaction_leaves_every_style(tmp_path):
    folder = tmp_path / "db"
    ids, rows, metas = _vector_styles(1500, DIM, seed=7)
    library = _library(folder)
    library.add_vectors(ids, rows, metas, batch_size=500)
    rows[:300] = _churn(library, ids, metas, 2, seed=70)
    _close(library)
    proc = subprocess.Popen([sys.executable, "-c", KILLED_COMPACTION, str(folder), str(Path(__file__).parent)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    time.sleep(random.uniform(0, 0.3))
    proc.kill()
    proc.communicate(timeout=60)
    _assert_finds_each(_library(folder), ids, rows)


def test_a_library_chroma_made_with_its_defaults_is_switched_over_and_keeps_working(tmp_path):
    import chromadb
    from chromadb.config import Settings

    folder = tmp_path / "db"
    ids, rows, metas = _vector_styles(1500, DIM, seed=8)
    client = chromadb.PersistentClient(path=str(folder), settings=Settings(anonymized_telemetry=False))
    col = client.create_collection(COLLECTION, embedding_function=None, metadata={"embedder": NAME},
                                   configuration={"hnsw": {"space": "cosine", "sync_threshold": 10**8}})
    col.upsert(ids=ids[:1000], embeddings=rows[:1000], metadatas=metas[:1000])
    client.close()
    library = _library(folder)  # an older sdrag's library: never saved, purge on, no record
    library.add_vectors(ids[1000:], rows[1000:], metas[1000:])
    assert json.loads(_sql(folder, "SELECT config_json_str FROM embeddings_queue_config")[0][0]) == {
        "automatically_purge": False, "_type": "EmbeddingsQueueConfigurationInternal"}
    with library._session("check") as col:
        assert col.configuration_json["hnsw"]["sync_threshold"] == index.SYNC_THRESHOLD
    assert index.read_record(str(folder))["files"] == index.stamps(str(folder))
    _close(library)
    _assert_finds_each(_library(folder), ids, rows)


def test_a_chroma_database_layout_sdrag_does_not_know_is_refused_with_the_fix(saved):
    folder = saved[0]
    con = sqlite3.connect(folder / "chroma.sqlite3")
    con.execute("ALTER TABLE embeddings_queue DROP COLUMN vector")  # as a future chromadb might lay it out
    con.commit()
    con.close()
    with pytest.raises(LibraryError) as caught:
        _library(folder)
    text = str(caught.value)
    assert text.count("Fix:") == 1 and "database layout sdrag does not know" in text and "'vector'" in text, text


def test_a_record_that_cannot_be_written_fails_no_operation_and_the_next_open_rebuilds(tmp_path, monkeypatch):
    from sdrag import StorageError

    def full_disk(folder, record):
        raise StorageError("Could not write sdrag.index: No space left on device.")

    folder = tmp_path / "db"
    ids, rows, metas = _vector_styles(1200, DIM, seed=9)
    library = _library(folder)
    monkeypatch.setattr(index, "write_record", full_disk)
    assert library.add_vectors(ids, rows, metas, batch_size=600) == 1200  # chroma saved its index: unrecorded
    assert index.read_record(str(folder)).get("files") != index.stamps(str(folder))
    monkeypatch.undo()
    _close(library)
    _assert_finds_each(_library(folder), ids, rows)
    assert index.read_record(str(folder))["files"] == index.stamps(str(folder))
