"""Several processes on one library (sdrag/retrieval/store.py): a file lock serialises them, a kill -9 loses nothing
finished, and a `chroma run` server takes many writers through the same StyleLibrary code."""

import os
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import free_port, noise_styles
from PIL import Image

import sdrag
from sdrag.models.device import pick_device, pick_dtype
from sdrag.models.plan import plan
from sdrag.models.presets import get_spec
from sdrag.models.tiny import TINY_VERSION
from sdrag.retrieval.embed import ClipEmbedder
from sdrag.retrieval.library import StyleLibrary

NAME = f"tiny-v{TINY_VERSION}"  # what a tiny Workbench calls its embedder (its libraries are opened with it)

# A child process that ingests one folder into one library with the tiny embedder, then prints its report.
INGEST = """
import sys
from sdrag.models.device import pick_device, pick_dtype
from sdrag.models.plan import plan
from sdrag.models.presets import get_spec
from sdrag.retrieval.embed import ClipEmbedder
from sdrag.retrieval.library import StyleLibrary
device = pick_device()
dtype = pick_dtype(device)
embedder = ClipEmbedder(plan(get_spec("tiny"), dtype)["clip"], device, dtype)
library = StyleLibrary(sys.argv[1], lambda: embedder, sys.argv[4])
len(library)  # load and open before signalling, so a kill lands in the ingest itself
print("ready", flush=True)
if len(sys.argv) > 5:  # announce each embedded batch, so a test can kill it at a chosen point of the ingest
    embed = embedder.embed_images
    def announced(images):
        vectors = embed(images)
        print("batch", flush=True)
        return vectors
    embedder.embed_images = announced
report = library.ingest(sys.argv[2], batch_size=int(sys.argv[3]), progress=False)
print(len(report.added), len(report.updated), len(report.skipped), flush=True)
"""


@pytest.fixture(scope="module")
def clip():
    """The tiny preset's CLIP embedder, built as a Workbench builds it, without loading the generator."""
    device = pick_device()
    dtype = pick_dtype(device)
    return ClipEmbedder(plan(get_spec("tiny"), dtype)["clip"], device, dtype)


def _ingest(library: Path | str, folder: Path, batch: int = 2, announce: bool = False) -> subprocess.Popen:
    args = [sys.executable, "-c", INGEST, str(library), str(folder), str(batch), NAME] + ["announce"] * announce
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_ready(proc: subprocess.Popen) -> None:
    line = proc.stdout.readline()
    assert line.strip() == "ready", proc.stderr.read()


def test_two_processes_ingesting_into_one_folder_lose_nothing(tmp_path, clip):
    a, b = noise_styles(tmp_path / "a", 30, 1), noise_styles(tmp_path / "b", 30, 2)
    db = tmp_path / "db"
    # Two notebooks ingesting the same folder, and a third process another one, all at once.
    procs = [_ingest(db, a), _ingest(db, b), _ingest(db, a)]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err
    counts = [tuple(map(int, out.split()[-3:])) for out, _ in outs]
    assert all(updated == 0 for _, updated, _ in counts) and all(sum(c) == 30 for c in counts)
    # Each file of the shared folder was added by exactly one of its two ingests (the other found it stored).
    assert counts[1][0] == 30 and counts[0][0] + counts[2][0] == 30
    library = StyleLibrary(db, lambda: clip, NAME)
    assert len(library) == 60 and len({s.id for s in library.list()}) == 60
    again = library.ingest(a, progress=False)
    assert not again.added and not again.updated and len(library) == 60


def test_kill_9_during_ingest_then_the_library_reopens_and_reingest_completes(tmp_path, clip):
    folder, db = noise_styles(tmp_path / "styles", 120, 4), tmp_path / "db"
    seed = random.randrange(10**6)
    rng = random.Random(seed)
    stored = [0]
    for _ in range(3):
        proc = _ingest(db, folder, batch=1, announce=True)
        _wait_ready(proc)
        batches = rng.randint(5, 30)
        for _ in range(batches):
            assert proc.stdout.readline().strip() == "batch", proc.stderr.read()
        time.sleep(rng.uniform(0, 0.05))  # then mid-upsert, mid-commit or between batches
        proc.kill()
        proc.communicate(timeout=60)
        library = StyleLibrary(db, lambda: clip, NAME)
        # Every batch but the last one embedded is stored, and whatever was stored is whole and searchable.
        assert len(library) >= stored[-1] + batches - 1, f"a kill lost stored styles (random seed {seed})"
        stored.append(len(library))
        first = library.list()[0]
        assert library.search_vector(library.vectors([first.id])[0], k=1)[0].id == first.id
    assert stored[-1] < 120
    report = library.ingest(folder, progress=False)
    assert len(report.added) == 120 - stored[-1] and len(library) == 120
    assert {s.id for s in library.list()} == {i.id for i in report.added} | {i.id for i in report.skipped}


def test_a_process_holding_the_lock_makes_another_wait_then_refuse_with_the_fix(tmp_path, clip):
    db = tmp_path / "db"
    StyleLibrary(db, lambda: clip, NAME)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR);"
         " fcntl.flock(fd, fcntl.LOCK_EX); os.pwrite(fd, b'x\\n4242 ingest 2026-01-01 10:00:00\\n', 0);"
         " print('held', flush=True); time.sleep(60)", str(db / "sdrag.lock")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        with pytest.raises(sdrag.LibraryError, match=r"busy: process 4242 \(ingest.*Fix: wait.*chroma run"):
            len(StyleLibrary(db, lambda: clip, NAME, lock_timeout=0.5))
        assert time.monotonic() - start < 5
    finally:
        holder.kill()
        holder.wait()
    # The holder died holding the lock: the kernel released it, nothing is left to clean up.
    assert len(StyleLibrary(db, lambda: clip, NAME, lock_timeout=0.5)) == 0


@pytest.fixture
def chroma_server(tmp_path):
    """A `chroma run` server on a free localhost port, stopped after the test."""
    chroma = shutil.which("chroma") or str(Path(sys.executable).with_name("chroma"))
    port = free_port()
    log = open(tmp_path / "chroma.log", "w")
    env = {**os.environ, "ANONYMIZED_TELEMETRY": "False"}
    proc = subprocess.Popen([chroma, "run", "--path", str(tmp_path / "server-db"), "--host", "127.0.0.1",
                             "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "chroma.log").read_text()
            time.sleep(0.2)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(30)
    log.close()


def test_many_writers_through_a_chroma_server_selected_by_configuration(tmp_path, clip, chroma_server,
                                                                        monkeypatch):
    folders = [noise_styles(tmp_path / f"w{i}", 12, 10 + i) for i in range(3)]
    procs = [_ingest(chroma_server, f) for f in folders]
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
        assert out.split()[-3:] == ["12", "0", "0"]
    # The same URL through the workbench's configuration: SDRAG_LIBRARY, no folder anywhere.
    monkeypatch.setenv("SDRAG_LIBRARY", chroma_server)
    bench = sdrag.Workbench.from_preset("tiny")
    assert bench.library_dir == chroma_server and bench.library.path == chroma_server
    assert bench.embedder_name == NAME
    bench._embedder = clip
    assert len(bench.library) == 36
    query = Image.open(next(folders[1].iterdir()))
    assert bench.library.search(query, k=1)[0].name.startswith("s11")
    assert not (tmp_path / "sdrag.lock").exists() and not list(tmp_path.glob("w0/*.sqlite3"))
    with pytest.raises(sdrag.LibraryError, match="purges its own log. Fix: .*`chroma vacuum --path DIR`"):
        bench.library.compact()  # the server's folder is the server's: sdrag neither keeps nor compacts its log


def test_an_unreachable_server_gives_one_clear_error(clip):
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(sdrag.LibraryError, match=r"Cannot open the style library at http://127\.0\.0\.1.*"
                                                  r"Fix: start the server \(`chroma run"):
        StyleLibrary(url, lambda: clip, NAME)


def test_without_file_locks_the_library_works_and_warns(tmp_path, clip, monkeypatch):
    import sdrag.retrieval.store

    monkeypatch.setattr(sdrag.retrieval.store, "fcntl", None)  # as on Windows
    folder = noise_styles(tmp_path / "styles", 3, 5)
    with pytest.warns(RuntimeWarning, match="only one process.*chroma run"):
        library = StyleLibrary(tmp_path / "db", lambda: clip, NAME)
        assert len(library.ingest(folder, progress=False).added) == 3
    assert not (tmp_path / "db" / "sdrag.lock").exists()
