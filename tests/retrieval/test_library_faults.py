"""Library faults (sdrag/retrieval/store.py): a damaged database, a Rust panic inside chroma, a read-only folder, a
missing folder and an unreachable server each give one LibraryError that names the library and the fix for that
fault; after the fix the library works again, in the same process.

The cases are generated: corruptions of chroma.sqlite3 (garbage, truncations, scrambled b-tree pages of each
table chroma reads, random bytes at seeded offsets), of a saved HNSW index, failures injected at each chroma
call the library makes, and each library operation on a read-only folder. Nothing here needs CLIP: a fake
embedder turns image bytes into fixed 8-d vectors.
"""

import errno
import hashlib
import json
import os
import random
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from conftest import noise_styles

from sdrag import LibraryError
from sdrag.retrieval import store
from sdrag.retrieval.library import StyleLibrary

NAME = "fake-8d"
N_STYLES = 6
DAMAGED = "Fix: move the folder aside"
AGAIN = "ingest the styles again (ids are content hashes"
READ_ONLY = "is read-only"
COPY_IT = "Fix: copy it somewhere writable"


def _unavailable(reason: str) -> None:
    """Skip where this machine cannot set the case up; on CI (which can) that is a failure, never a skip."""
    if os.environ.get("CI"):
        pytest.fail(f"cannot run on CI: {reason}")
    pytest.skip(reason)


class FakeEmbedder:
    """Unit 8-d vectors seeded by a hash of the image bytes (or the text): no model needed to drive chroma."""

    def embed_images(self, images):
        return np.stack([_vector(i if isinstance(i, bytes) else i.tobytes()) for i in images])

    def embed_text(self, texts):
        return np.stack([_vector(t.encode()) for t in texts])


def _vector(data: bytes) -> np.ndarray:
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(data).digest()[:8], "little"))
    v = rng.standard_normal(8)
    return (v / np.linalg.norm(v)).astype(np.float32)


EMBEDDER = FakeEmbedder()


def _open(path: Path) -> StyleLibrary:
    return StyleLibrary(path, lambda: EMBEDDER, NAME, lock_timeout=10)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A library of N_STYLES styles (closed), the folder they came from, and their ids."""
    root = tmp_path_factory.mktemp("template")
    styles = noise_styles(root / "styles", N_STYLES, 0, side=8)
    library = _open(root / "db")
    library.ingest(styles, progress=False)
    ids = sorted(s.id for s in library.list())
    library._store.close()
    return root / "db", styles, ids


@pytest.fixture
def db(tmp_path, template):
    """A fresh copy of the template library."""
    shutil.copytree(template[0], tmp_path / "db")
    return tmp_path / "db"


OPERATIONS = {
    "count": lambda lib, styles, ids: len(lib),
    "search": lambda lib, styles, ids: lib.search("ink", k=3),
    "list": lambda lib, styles, ids: lib.list(),
    "get": lambda lib, styles, ids: lib.get(ids[0]),
    "vectors": lambda lib, styles, ids: lib.vectors(ids[:2]),
    "snapshot": lambda lib, styles, ids: lib.snapshot(),
    "ingest": lambda lib, styles, ids: lib.ingest(styles, progress=False),
    "add": lambda lib, styles, ids: lib.add(styles / "s0_001.png", name="renamed"),
    "remove": lambda lib, styles, ids: lib.remove(ids[-1]),
}


def _run_everything(path: Path, styles: Path, ids: list[str]) -> list[LibraryError]:
    """Open the library and run each operation on it; return the errors. Anything but a LibraryError escapes."""
    errors: list[LibraryError] = []
    try:
        library = _open(path)
    except LibraryError as exc:
        return [exc]
    for operation in OPERATIONS.values():
        try:
            operation(library, styles, ids)
        except LibraryError as exc:
            errors.append(exc)
    return errors


def _assert_damaged(errors: list[LibraryError], path: Path, must_fail: bool = True) -> None:
    assert errors or not must_fail, "the damage went unnoticed"
    for exc in errors:
        assert type(exc) is LibraryError, repr(exc)
        text = str(exc)
        assert str(path) in text and "is damaged" in text and DAMAGED in text and AGAIN in text, text
        assert "writable folder" not in text, text


def _assert_recovers(path: Path, styles: Path) -> None:
    """Move the damaged folder aside and ingest again: the library works, in this same process."""
    shutil.move(path, path.with_name(path.name + ".damaged"))
    library = _open(path)
    report = library.ingest(styles, progress=False)
    assert len(report.added) == N_STYLES and len(library) == N_STYLES
    assert len(library.search("ink", k=3)) == 3


# -- a damaged chroma.sqlite3 ----------------------------------------------------------------------------

DB = "chroma.sqlite3"


def _page_header(table: str):
    """Scramble the b-tree header of `table`'s root page (its type byte made invalid): SQLite calls it malformed."""

    def damage(folder: Path, rng: random.Random) -> None:
        with sqlite3.connect(f"file:{folder / DB}?mode=ro", uri=True) as con:
            root, = con.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()
            page = con.execute("PRAGMA page_size").fetchone()[0]
        con.close()
        offset = (root - 1) * page + (100 if root == 1 else 0)
        _write_at(folder / DB, offset, bytes([rng.choice([0, 1, 3, 7, 9, 11, 255])]) + rng.randbytes(11))

    return damage


def _write_at(file: Path, offset: int, data: bytes) -> None:
    with open(file, "r+b") as fh:
        fh.seek(offset)
        fh.write(data)


def _truncate(length):
    return lambda folder, rng: os.truncate(folder / DB, length(os.path.getsize(folder / DB)))


def _garbage(folder: Path, rng: random.Random) -> None:
    (folder / DB).write_bytes(rng.randbytes(os.path.getsize(folder / DB)))


def _directory(folder: Path, rng: random.Random) -> None:
    (folder / DB).unlink()
    (folder / DB).mkdir()


# name -> (damage, whether some operation must notice it). Every case: only LibraryErrors, each with the fix.
CORRUPTIONS = {
    "garbage of the same size": (_garbage, True),
    "a short text file": (lambda folder, rng: (folder / DB).write_text("not a database\n"), True),
    "header scrambled": (lambda folder, rng: _write_at(folder / DB, 0, rng.randbytes(16)), True),
    "a folder in its place": (_directory, True),
    **{f"truncated to {n} bytes": (_truncate(lambda size, n=n: n), True) for n in (100, 1024, 4096, 20000, 65536)},
    "truncated to half": (_truncate(lambda size: size // 2), True),
    **{f"root page of {t} scrambled": (_page_header(t), True)
       for t in ("sqlite_autoindex_migrations_1", "migrations", "databases", "collections",
                 "collection_metadata", "segments", "embeddings", "embedding_metadata", "embeddings_queue",
                 "max_seq_id")},
    # Random bytes at seeded offsets: many land in free space and change nothing; none may escape as another type.
    **{f"64 random bytes at seeded offset #{seed}": (
        lambda folder, rng: _write_at(folder / DB, rng.randrange(os.path.getsize(folder / DB) - 64),
                                      rng.randbytes(64)), False) for seed in range(8)},
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_a_damaged_database_gives_one_library_error_with_the_fix(case, db, template):
    damage, must_fail = CORRUPTIONS[case]
    damage(db, random.Random(case))
    _assert_damaged(_run_everything(db, template[1], template[2]), db, must_fail)
    _assert_recovers(db, template[1])


def test_a_zero_length_database_is_an_empty_library(db, template):
    """SQLite reads a 0-byte file as an empty database, so chroma starts a new one: the library is empty and
    says so, and an ingest fills it again."""
    (db / DB).write_bytes(b"")
    library = _open(db)
    assert len(library) == 0
    with pytest.raises(LibraryError, match=r"at .*db is empty\. Fix: .*ingest") as got:
        library.search("ink")
    assert type(got.value) is LibraryError and str(db) in str(got.value)
    assert len(library.ingest(template[1], progress=False).added) == N_STYLES and len(library) == N_STYLES


# -- a damaged HNSW index ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_index(tmp_path_factory, template):
    """The template's styles in a library chroma made with its defaults: the index saved, the log purged of what it
    holds, and no record of sdrag's, so its index files are read on open and cannot be rebuilt."""
    import chromadb
    from chromadb.config import Settings

    settings = Settings(anonymized_telemetry=False, allow_reset=False)
    source = chromadb.PersistentClient(path=str(template[0]), settings=settings)
    data = source.get_collection(store.COLLECTION).get(include=["embeddings", "metadatas"])
    source.close()
    path = tmp_path_factory.mktemp("saved-index") / "db"
    client = chromadb.PersistentClient(path=str(path), settings=settings)
    col = client.create_collection(store.COLLECTION, embedding_function=None, metadata={"embedder": NAME},
                                   configuration={"hnsw": {"space": "cosine", "sync_threshold": 2, "batch_size": 2}})
    for i in range(0, N_STYLES, 2):
        col.upsert(ids=data["ids"][i:i + 2], embeddings=np.asarray(data["embeddings"][i:i + 2]).tolist(),
                   metadatas=data["metadatas"][i:i + 2])
    client.close()
    assert any(path.glob("*/data_level0.bin"))
    return path


def _segment(folder: Path) -> Path:
    return next(folder.glob("*/data_level0.bin")).parent


INDEX_DAMAGE = {
    "data_level0.bin random bytes": lambda seg, rng: _write_at(seg / "data_level0.bin", 0, rng.randbytes(2000)),
    "data_level0.bin truncated": lambda seg, rng: os.truncate(seg / "data_level0.bin", 10),
    "index folder removed": lambda seg, rng: shutil.rmtree(seg),
    "header.bin garbage": lambda seg, rng: (seg / "header.bin").write_bytes(rng.randbytes(100)),
    "length.bin truncated": lambda seg, rng: os.truncate(seg / "length.bin", 3),
    "link_lists.bin garbage": lambda seg, rng: (seg / "link_lists.bin").write_bytes(rng.randbytes(100)),
}
# A damaged saved index is read by chroma's HNSW code (C++), which may crash the whole process (a segmentation
# fault, which no Python code can catch) or misread memory, so each case runs in a child process.
INDEX_CHILD = """
import json, sys
sys.path[:0] = [sys.argv[4], sys.argv[4] + "/.."]  # this folder, and tests/ for conftest
from pathlib import Path
from test_library_faults import _run_everything
errors = _run_everything(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3].split(","))
print(json.dumps([[type(exc).__name__, str(exc)] for exc in errors]))
"""


@pytest.mark.parametrize("case", list(INDEX_DAMAGE))
def test_a_damaged_saved_index_gives_one_library_error_with_the_fix(case, tmp_path, saved_index, template):
    path = tmp_path / "db"
    shutil.copytree(saved_index, path)
    INDEX_DAMAGE[case](_segment(path), random.Random(case))
    child = subprocess.run([sys.executable, "-c", INDEX_CHILD, str(path), str(template[1]), ",".join(template[2]),
                            str(Path(__file__).parent)], capture_output=True, text=True, timeout=120)
    crashed = child.returncode < 0
    if not crashed:
        assert child.returncode == 0, child.stderr[-3000:]  # a panic or another type escaping fails here
        for kind, text in json.loads(child.stdout.splitlines()[-1]):
            assert kind == "LibraryError", text
            assert str(path) in text and "is damaged" in text and DAMAGED in text and AGAIN in text, text
    _assert_recovers(path, template[1])
    if crashed:
        pytest.xfail(f"chroma's HNSW code crashed the process (signal {-child.returncode}); not catchable")


def test_damaged_index_files_in_a_library_sdrag_made_are_rebuilt_so_nothing_changes(db, template):
    for file in _segment(db).iterdir():
        file.write_bytes(random.Random(file.name).randbytes(file.stat().st_size))
    library = _open(db)
    assert sorted(s.id for s in library.list()) == template[2]
    hit = library.search_vector(library.vectors([template[2][0]])[0], k=1)[0]
    assert hit.id == template[2][0]


# -- a failure at each chroma call the library makes -------------------------------------------------------


@pytest.fixture(scope="module")
def panic(tmp_path_factory, template):
    """A real `pyo3_runtime.PanicException` from chroma's bindings (a BaseException, not an Exception)."""
    for table in ("sqlite_autoindex_migrations_1", "migrations", "collections", "segments"):
        path = tmp_path_factory.mktemp("panic") / "db"
        shutil.copytree(template[0], path)
        _page_header(table)(path, random.Random(table))
        try:
            _open(path)
        except LibraryError as exc:
            cause = exc.__context__
            if cause is not None and not isinstance(cause, Exception) and type(cause).__name__ == "PanicException":
                return cause
    _unavailable("no damage found that makes this chromadb panic")


def _rust_api():
    from chromadb.api.rust import RustBindingsAPI

    return RustBindingsAPI


# the library operation -> the chroma call it makes (on chroma's Rust-bindings API, below chroma's own Python).
CALLS = {
    "open: starting the client": ("start", lambda lib, path, styles: _open(path)),
    "open: the client's identity": ("get_user_identity", lambda lib, path, styles: _open(path)),
    "open: the collection": ("get_or_create_collection", lambda lib, path, styles: _open(path)),
    "count": ("_count", lambda lib, path, styles: len(lib)),
    "list (get)": ("_get", lambda lib, path, styles: lib.list()),
    "search (query)": ("_query", lambda lib, path, styles: lib.search("ink", k=2)),
    "add (upsert)": ("_upsert", lambda lib, path, styles: lib.add(styles / "s0_001.png", name="renamed")),
    "add (batch size)": ("get_max_batch_size", lambda lib, path, styles: lib.add(styles / "s0_001.png", name="x")),
    "ingest (update)": ("_update", lambda lib, path, styles: lib.ingest(_moved(styles, path), progress=False)),
    "remove (delete)": ("_delete", lambda lib, path, styles: lib.remove(lib.list()[0].id)),
}


def _moved(styles: Path, path: Path) -> Path:
    """The same images in another folder: their metadata (the path) changes, so an ingest updates them."""
    folder = path.parent / "moved-styles"
    if not folder.exists():
        shutil.copytree(styles, folder)
    return folder


@pytest.mark.parametrize("call", list(CALLS))
def test_a_panic_at_any_chroma_call_is_one_library_error_and_the_library_recovers(call, db, template, panic,
                                                                                monkeypatch):
    method, operation = CALLS[call]
    library = _open(db)
    library._store.close()  # so the operation opens the client again: "open" cases fail there
    api = _rust_api()
    original = getattr(api, method)

    def panics(*args, **kwargs):
        raise type(panic)(*panic.args)

    monkeypatch.setattr(api, method, panics)
    with pytest.raises(BaseException) as got:
        operation(library, db, template[1])
    assert type(got.value) is LibraryError, repr(got.value)
    text = str(got.value)
    assert str(db) in text and "ChromaDB panicked" in text and DAMAGED in text and AGAIN in text, text
    monkeypatch.setattr(api, method, original)
    # Nothing was damaged: the same operation works now, the next session having opened a fresh client.
    operation(_open(db), db, template[1])
    assert len(_open(db)) >= N_STYLES - 1
    # And the client chroma caches for this folder follows a folder moved aside (none bound to the old file).
    _assert_recovers(db, template[1])


# chroma's words -> what the fix must say. Raised inside chroma's Python (below Collection.count).
FAILURES = {
    "InternalError: malformed": ("InternalError", "error returned from database: (code: 11) database disk image is"
                                 " malformed", DAMAGED),
    "InternalError: not a database": ("InternalError", "(code: 26) file is not a database", DAMAGED),
    "InternalError: hnsw logs": ("InternalError", "Failed to apply logs to the hnsw segment writer", DAMAGED),
    "InternalError: locked": ("InternalError", "(code: 5) database is locked", "Another program holds"),
    "InternalError: disk full": ("InternalError", "(code: 13) database or disk is full", "free some space"),
    "InternalError: read-only": ("InternalError", "(code: 8) attempt to write a readonly database", COPY_IT),
    "InternalError: unknown": ("InternalError", "something new", "Fix: retry; if it fails again"),
    "ValueError inside chroma": ("ValueError", "unexpected value in a stored record", "Fix: retry; if it fails"),
    "OSError inside chroma": ("OSError", "Input/output error", "Fix: retry; if it fails again"),
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_every_chroma_failure_is_one_library_error_with_the_fix_for_its_kind(case, db, monkeypatch):
    import chromadb.errors

    kind, words, fix = FAILURES[case]
    error = {"ValueError": ValueError, "OSError": OSError}.get(kind) or getattr(chromadb.errors, kind)
    library = _open(db)

    def fails(*args, **kwargs):
        raise error(words)

    monkeypatch.setattr(_rust_api(), "_count", fails)
    with pytest.raises(BaseException) as got:
        len(library)
    assert type(got.value) is LibraryError, repr(got.value)
    text = str(got.value)
    assert text.startswith(f"ChromaDB failed during count on the style library at {db}: {words}") and fix in text


def test_a_database_chroma_finds_locked_for_a_moment_is_waited_for_and_one_held_on_to_is_another_programs(
        db, template, monkeypatch):
    # What chroma says while a client this process just closed still lets go of its connections (seen on a busy
    # machine after a failed open); then a lock that never goes.
    import chromadb.errors

    original, refusals = _rust_api().get_or_create_collection, []

    def locked(times):
        def get_or_create_collection(*args, **kwargs):
            if len(refusals) < times:
                refusals.append(time.monotonic())
                raise chromadb.errors.InternalError("error returned from database: (code: 5) database is locked")
            return original(*args, **kwargs)
        return get_or_create_collection

    monkeypatch.setattr(_rust_api(), "get_or_create_collection", locked(3))
    assert sorted(s.id for s in _open(db).list()) == template[2] and len(refusals) == 3
    refusals.clear()
    monkeypatch.setattr(_rust_api(), "get_or_create_collection", locked(10**6))
    with pytest.raises(LibraryError) as got:
        len(_open(db))
    assert str(got.value).startswith(f"Cannot open the style library at {db}") and "Another program holds" in str(
        got.value)
    assert len(refusals) == 7 and 2.5 < refusals[-1] - refusals[0] < 10  # it waited, then gave up


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit])
def test_an_interrupt_inside_chroma_is_never_swallowed(interrupt, db, monkeypatch):
    library = _open(db)
    api = _rust_api()
    original = api._count

    def interrupted(*args, **kwargs):
        raise interrupt()

    monkeypatch.setattr(api, "_count", interrupted)
    with pytest.raises(interrupt):
        len(library)
    monkeypatch.setattr(api, "_count", original)
    assert len(library) == N_STYLES


def test_only_the_store_and_its_faults_import_chromadb():
    """Every chroma object the library code uses is the `col` (or client) a Store.session yields, the one place
    that turns chroma's failures into LibraryError: no retrieval module but store.py and faults.py imports chromadb."""
    retrieval = Path(store.__file__).parent
    for name in ("library.py", "ingest.py", "entries.py", "embed.py"):
        text = (retrieval / name).read_text()
        assert "import chromadb" not in text and "from chromadb" not in text, name


# -- a read-only library -----------------------------------------------------------------------------------

READS = {
    "count": lambda lib, ids, styles: len(lib) == N_STYLES,
    "search": lambda lib, ids, styles: len(lib.search("ink", k=3)) == 3,
    "search_vector": lambda lib, ids, styles: lib.search_vector(lib.vectors([ids[0]])[0], k=1)[0].id == ids[0],
    "get": lambda lib, ids, styles: lib.get(ids[1]).id == ids[1],
    "list": lambda lib, ids, styles: sorted(s.id for s in lib.list()) == ids,
    "vectors": lambda lib, ids, styles: lib.vectors(ids).shape == (N_STYLES, 8),
    "table": lambda lib, ids, styles: len(lib.table()) == N_STYLES,
    "snapshot": lambda lib, ids, styles: [s["id"] for s in lib.snapshot()] == ids,
    "ingest of unchanged files": lambda lib, ids, styles: not lib.ingest(styles, progress=False).added,
}
WRITES = {
    "ingest of new files": lambda lib, ids, styles: lib.ingest(noise_styles(styles.parent / "new", 2, 9, side=8),
                                                               progress=False),
    "ingest of moved files": lambda lib, ids, styles: lib.ingest(_moved(styles, styles.parent / "x"),
                                                                 progress=False),
    "add": lambda lib, ids, styles: lib.add(styles / "s0_001.png", name="renamed"),
    "remove": lambda lib, ids, styles: lib.remove(ids[0]),
}


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(params=["EACCES", "EROFS", "no lock file, none can be made"])
def read_only(request, db, monkeypatch):
    """The library as a read-only folder looks to sdrag (as root, permission bits bind nobody, so the refusal is
    simulated where sdrag meets it first: opening the lock file for writing)."""
    code = errno.EROFS if request.param == "EROFS" else errno.EACCES
    if request.param.startswith("no lock"):
        (db / store.LOCK_FILE).unlink()
    real_open = os.open
    lock = str(db / store.LOCK_FILE)

    def refusing(path, flags, *args, **kwargs):
        if os.fspath(path) == lock and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(code, os.strerror(code), lock)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing)
    return db


@pytest.mark.parametrize("op", list(READS))
def test_a_read_only_library_can_be_read_and_is_left_untouched(op, read_only, template):
    before = _tree(read_only)
    library = _open(read_only)
    assert READS[op](library, template[2], template[1])
    assert READS[op](library, template[2], template[1])  # twice: the private copy is reused, then dropped
    library._store.close()
    assert _tree(read_only) == before  # no token record, no chroma write, nothing


@pytest.mark.parametrize("op", list(WRITES))
def test_a_write_to_a_read_only_library_is_refused_with_the_fix(op, read_only, template):
    before = _tree(read_only)
    library = _open(read_only)
    with pytest.raises(BaseException) as got:
        WRITES[op](library, template[2], template[1])
    assert type(got.value) is LibraryError, repr(got.value)
    text = str(got.value)
    assert str(read_only) in text and READ_ONLY in text and COPY_IT in text and "searching and reading" in text, text
    assert len(library) == N_STYLES
    library._store.close()
    assert _tree(read_only) == before


# Run in a child process that really cannot write the folder: a non-root user (permission bits), or a read-only
# mount. Under root, a user namespace maps this process to uid 1000 (so the bits bind it) or a mount namespace
# bind-mounts the folder read-only; where neither can be made, the case is skipped.
CHILD = """
import sys
sys.path[:0] = [sys.argv[4], sys.argv[4] + "/.."]  # this folder, and tests/ for conftest
from pathlib import Path
from test_library_faults import READS, WRITES, READ_ONLY, COPY_IT, _open
from sdrag import LibraryError
path, styles, ids = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3].split(",")
library = _open(path)
for op, read in READS.items():
    assert read(library, ids, styles), op
for op, write in WRITES.items():
    if op == "ingest of new files":
        continue  # it makes a folder beside the styles, which are read-only here too
    try:
        write(library, ids, styles)
    except LibraryError as exc:
        assert type(exc) is LibraryError and READ_ONLY in str(exc) and COPY_IT in str(exc), str(exc)
    else:
        raise AssertionError(op + " wrote to a read-only library")
print("ok", library._store.read_only)
"""


def _child_command(how: str, root: Path) -> list[str]:
    if how == "permission bits" and os.geteuid() != 0:
        return []
    if shutil.which("unshare") is None:
        _unavailable("no unshare here to make a read-only folder for root")
    if how == "permission bits":
        prefix = ["unshare", "--user", "--map-user=1000", "--map-group=1000"]
        probe = prefix + ["true"]
    else:
        mount = f"mount --bind {root} {root} && mount -o remount,bind,ro {root} {root}"
        prefix = ["unshare", "-m", "sh", "-c", mount + ' && exec "$@"', "sh"]
        probe = prefix + ["true"]
    if subprocess.run(probe, capture_output=True).returncode != 0:
        _unavailable(f"cannot make a read-only folder by {how} here")
    return prefix


@pytest.mark.parametrize("how", ["permission bits", "read-only mount"])
def test_a_really_read_only_library_is_searchable_and_refuses_writes(how, tmp_path, template):
    root = tmp_path / "shelf"
    root.mkdir()
    path = root / "db"
    shutil.copytree(template[0], path)
    styles = template[1]
    _moved(styles, styles.parent / "x")  # made now: the child may not be able to
    if how == "read-only mount" and os.geteuid() != 0:
        _unavailable("a read-only mount needs root")
    prefix = _child_command(how, root)
    before = _tree(path)
    if how == "permission bits":
        for p in [root, *root.rglob("*")]:
            p.chmod(p.stat().st_mode & ~0o222)
    try:
        out = subprocess.run(prefix + [sys.executable, "-c", CHILD, str(path), str(styles), ",".join(template[2]),
                                       str(Path(__file__).parent)], capture_output=True, text=True, timeout=120)
    finally:
        for p in [root, *root.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)
    assert out.returncode == 0 and out.stdout.startswith("ok"), out.stderr[-3000:]
    assert ("read-only file system" if how == "read-only mount" else "no write permission") in out.stdout
    assert _tree(path) == before


# -- a folder that is not there, and a server that is not there ---------------------------------------------


def test_a_library_folder_that_went_away_says_so(db, template):
    for how in ("removed", "replaced by a file"):
        library = _open(db)
        shutil.rmtree(db)
        if how != "removed":
            db.write_text("not a folder")
        for call in (len, StyleLibrary.list, lambda lib: lib.search("ink")):
            with pytest.raises(BaseException) as got:
                call(library)
            assert type(got.value) is LibraryError, repr(got.value)
            assert str(db) in str(got.value) and "Fix: use a writable folder that only sdrag's ChromaDB uses" in str(
                got.value)
        db.unlink(missing_ok=True)
        assert len(_open(db).ingest(template[1], progress=False).added) == N_STYLES  # the folder made again


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _NotChroma(BaseHTTPRequestHandler):
    status = 404

    def do_GET(self):
        self.send_response(self.status)
        self.end_headers()
        self.wfile.write(b"{}")

    do_POST = do_GET

    def log_message(self, *args):
        pass


class _Broken(_NotChroma):
    status = 500


def _serve(handler) -> str:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"127.0.0.1:{server.server_address[1]}"


def _hangs_up() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)

    def loop():
        while True:
            conn, _ = sock.accept()
            conn.close()

    threading.Thread(target=loop, daemon=True).start()
    return f"127.0.0.1:{sock.getsockname()[1]}"


SERVERS = {
    "nothing listening (http)": lambda: f"http://127.0.0.1:{_free_port()}",
    "nothing listening (https)": lambda: f"https://127.0.0.1:{_free_port()}",
    "nothing listening (http:/ as a Path writes it)": lambda: f"http:/127.0.0.1:{_free_port()}",
    "an HTTP server that is not chroma (404)": lambda: f"http://{_serve(_NotChroma)}",
    "a failing server (500)": lambda: f"http://{_serve(_Broken)}",
    "a server that hangs up": lambda: f"http://{_hangs_up()}",
}


@pytest.mark.parametrize("case", list(SERVERS))
def test_a_server_that_is_not_there_gives_one_library_error_with_the_server_fix(case):
    url = SERVERS[case]()
    with pytest.raises(BaseException) as got:
        _open(url)
    assert type(got.value) is LibraryError, repr(got.value)
    text = str(got.value)
    assert text.startswith(f"Cannot open the style library at {store.server_url(url)}:"), text
    assert "Fix: start the server (`chroma run --path DIR --port PORT`)" in text and "move the folder" not in text


@pytest.mark.parametrize("case", ["connection refused", "read timeout", "remote protocol error", "server error",
                                  "panic"])
def test_a_server_failing_mid_operation_gives_one_library_error_with_the_server_fix(case, panic):
    """A server that goes away after the library opened: the same session code, with a server's fix."""
    import chromadb.errors
    import httpx

    url = f"http://127.0.0.1:{_free_port()}"
    request = httpx.Request("POST", f"{url}/api/v2/x")
    failure = {
        "connection refused": httpx.ConnectError("All connection attempts failed", request=request),
        "read timeout": httpx.ReadTimeout("timed out", request=request),
        "remote protocol error": httpx.RemoteProtocolError("Server disconnected", request=request),
        "server error": chromadb.errors.InternalError("Internal Server Error"),
        "panic": panic,
    }[case]

    class Collection:
        def count(self):
            raise failure

    server = store.Store(url, url, NAME)
    server.col, server.client = Collection(), object()
    with pytest.raises(BaseException) as got, server.session("count", False, 5) as col:
        col.count()
    assert type(got.value) is LibraryError, repr(got.value)
    text = str(got.value)
    assert text.startswith(f"ChromaDB failed during count on the style library at {url}:"), text
    assert "Fix: start the server" in text and "reachable" in text and "move the folder" not in text
    assert server.col is None  # the next session opens a fresh client
