"""chroma's saved vector index beside its SQLite log: vouch for it, rebuild it from the log, keep the log compact.

chroma 1.5 keeps every write in a log table of its SQLite database (transactional) and applies it to an HNSW
index that it saves in place, in a folder named after the vector segment, every `SYNC_THRESHOLD` records (the
files first, then the log position they reach, in SQLite). A kill -9 during that save leaves files chroma cannot
load, or worse, loads with records missing. So:

- the log is kept whole: chroma's automatic purge (which drops what the saved index holds) is turned off, so the
  index can always be rebuilt from SQLite;
- after every operation sdrag records what the index files look like (`sdrag.index`: size, modification time and
  inode of each); before chroma opens the folder, files that differ from that record (a save cut short, an edit,
  a copy) are dropped together with their log position, and chroma rebuilds the index from the log;
- the log is compacted (`compact`) to one row per live style once it outgrows the data.

Only a library folder goes through here; a `chroma run` server keeps its own files. Everything here runs while
the caller holds the library's lock, with chroma's client closed where it says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import LibraryError
from ..files import atomic_write_json
from .chroma_import import load_chromadb
from .faults import DB_FILE

# chroma's default: each save costs about as much as applying its records, and a rebuild replays at most this many.
SYNC_THRESHOLD = 1000
RECORD_FILE = "sdrag.index"
# Compact once the log holds more than this many rows per live style (plus a floor, so small libraries never do).
LOG_GROWTH = 2.0
LOG_FLOOR = 1000
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_DISCARDED = ".discarded-"
# The columns sdrag reads or writes, per table of chroma's database (chromadb 1.5's layout).
_LAYOUT = {
    "embeddings_queue": {"seq_id", "topic", "id", "operation", "vector"},
    "embeddings_queue_config": {"id", "config_json_str"},
    "max_seq_id": {"segment_id", "seq_id"},
    "segments": {"id", "scope", "collection"},
    "collections": {"id", "name"},
    "embeddings": {"segment_id", "embedding_id"},
}
_ADD, _UPDATE, _UPSERT, _DELETE = 0, 1, 2, 3  # chroma's operation codes in the log
# What reading or writing chroma's files here can raise (a folder gone, a full disk, a locked or damaged database).
ERRORS = (OSError, sqlite3.Error)


@dataclass(frozen=True)
class _Collection:
    """Where one collection lives in chroma's database: its log topic and segments."""

    topic: str
    metadata_segment: str
    vector_segments: tuple[str, ...]

    @property
    def segments(self) -> tuple[str, ...]:
        return (self.metadata_segment, *self.vector_segments)


def stamps(folder: str) -> dict[str, list[int]]:
    """Size, modification time (ns) and inode of every file in the folder's index folders, by relative path."""
    found: dict[str, list[int]] = {}
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            if entry.is_dir(follow_symlinks=False) and _UUID.fullmatch(entry.name):
                for file in os.scandir(entry.path):
                    st = file.stat(follow_symlinks=False)
                    found[f"{entry.name}/{file.name}"] = [st.st_size, st.st_mtime_ns, st.st_ino]
    return found


def read_record(folder: str) -> dict:
    """The record of the last operation (empty where there is none, or it is not one of sdrag's)."""
    try:
        with open(os.path.join(folder, RECORD_FILE), encoding="utf-8") as fh:
            record = json.load(fh)
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) and isinstance(record.get("files"), dict) else {}


def write_record(folder: str, record: dict) -> None:
    """Replace the record (atomically: a crash leaves the old one or the new one)."""
    atomic_write_json(os.path.join(folder, RECORD_FILE), record)


@contextlib.contextmanager
def _database(folder: str) -> Iterator[sqlite3.Connection]:
    from urllib.request import pathname2url

    # mode=rw: never make a database where there is none (chroma makes its own).
    con = sqlite3.connect(f"file:{pathname2url(os.path.join(folder, DB_FILE))}?mode=rw", uri=True, timeout=30.0,
                          isolation_level=None)
    try:
        yield con
    finally:
        con.close()


def _known_layout(con: sqlite3.Connection, folder: str) -> bool:
    """Whether chroma's tables are there (False for a database chroma has yet to fill); a layout that differs
    from the one sdrag knows raises."""
    have = {table: {row[1] for row in con.execute(f"PRAGMA table_info({table})")} for table in _LAYOUT}
    if not any(have.values()):
        return False
    for table, columns in _LAYOUT.items():
        if not columns <= have[table]:
            chromadb = load_chromadb()
            raise LibraryError(
                f"The style library at {folder} has a database layout sdrag does not know (table {table!r} lacks"
                f" {sorted(columns - have[table])}; chromadb {chromadb.__version__}). Fix: install the chromadb"
                " that sdrag's pyproject names, or serve the folder with `chroma run` and use its URL as the library."
            )
    return True


def _collection(con: sqlite3.Connection, name: str) -> _Collection | None:
    row = con.execute("SELECT id FROM collections WHERE name = ?", (name,)).fetchone()
    if row is None:
        return None
    scopes = con.execute("SELECT id, scope FROM segments WHERE collection = ?", (row[0],)).fetchall()
    metadata = [sid for sid, scope in scopes if scope == "METADATA"]
    topic = con.execute("SELECT topic FROM embeddings_queue WHERE topic LIKE ? LIMIT 1", (f"%/{row[0]}",)).fetchone()
    return _Collection(topic[0] if topic else f"persistent://default/default/{row[0]}", metadata[0] if metadata else "",
                       tuple(sid for sid, scope in scopes if scope == "VECTOR"))


def keep_log(folder: str) -> bool:
    """Turn chroma's automatic log purge off (it drops what a saved index holds); True if it was on."""
    if not os.path.isfile(os.path.join(folder, DB_FILE)):
        return False
    with _database(folder) as con:
        if not _known_layout(con, folder):
            return False
        row = con.execute("SELECT config_json_str FROM embeddings_queue_config WHERE id = 1").fetchone()
        config = json.loads(row[0]) if row else {"_type": "EmbeddingsQueueConfigurationInternal"}
        if config.get("automatically_purge") is False:
            return False
        config["automatically_purge"] = False
        con.execute("INSERT OR REPLACE INTO embeddings_queue_config (id, config_json_str) VALUES (1, ?)",
                    (json.dumps(config),))
        return True


def prepare(folder: str, collection: str, source: str | None = None) -> dict:
    """Before chroma opens `folder`: drop an index that does not match the record, so chroma rebuilds it.

    `source` is where the record and files were (a read-only library read through its copy `folder`). Returns the
    record now true of `folder`. An index that cannot be rebuilt (its log was purged: a library chroma made with
    its defaults) is left for chroma to load as it is.
    """
    source = source or folder
    record, now = read_record(source), stamps(source)
    if os.path.isfile(os.path.join(folder, DB_FILE)) and record.get("files") != now:
        with _database(folder) as con:
            col = _collection(con, collection) if _known_layout(con, folder) else None
            if col is not None and col.vector_segments and _log_covers(con, col):
                _reset(folder, con, col)
                now = None
    _sweep(folder)
    return {**record, "files": now if now is not None and source == folder else stamps(folder)}


def _log_covers(con: sqlite3.Connection, col: _Collection) -> bool:
    """Whether every live style has a vector in the log (no purge has dropped one), so a rebuild loses nothing."""
    missing = con.execute(
        "SELECT COUNT(*) FROM (SELECT embedding_id FROM embeddings WHERE segment_id = ?"
        " EXCEPT SELECT id FROM embeddings_queue WHERE topic = ? AND vector IS NOT NULL)",
        (col.metadata_segment, col.topic)).fetchone()[0]
    return missing == 0


def _reset(folder: str, con: sqlite3.Connection, col: _Collection) -> None:
    """Make chroma rebuild the vector index from the log: forget how far it got, then move its files away."""
    marks = ",".join("?" * len(col.vector_segments))
    con.execute(f"DELETE FROM max_seq_id WHERE segment_id IN ({marks})", col.vector_segments)
    for segment in col.vector_segments:
        path = os.path.join(folder, segment)
        if os.path.lexists(path):
            # A rename is atomic: chroma never meets a half-removed folder, whenever a kill comes.
            os.rename(path, os.path.join(folder, _DISCARDED + segment))


def _sweep(folder: str) -> None:
    """Remove index folders moved aside by a reset (one a kill interrupted included)."""
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            if entry.name.startswith(_DISCARDED):
                shutil.rmtree(entry.path, ignore_errors=True)


# -- the log ----------------------------------------------------------------------------------------------


def log_state(folder: str, collection: str) -> dict[str, int]:
    """Rows in the collection's log, live styles, and the log's last position."""
    with _database(folder) as con:
        col = _collection(con, collection)
        if col is None:
            return {"rows": 0, "live": 0, "seq": 0}
        return {
            "rows": con.execute("SELECT COUNT(*) FROM embeddings_queue WHERE topic = ?", (col.topic,)).fetchone()[0],
            "live": con.execute("SELECT COUNT(*) FROM embeddings WHERE segment_id = ?",
                                (col.metadata_segment,)).fetchone()[0],
            "seq": _last_seq(con),
        }


def _last_seq(con: sqlite3.Connection) -> int:
    return con.execute("SELECT COALESCE(MAX(seq_id), 0) FROM embeddings_queue").fetchone()[0]


def outgrown(folder: str, log: dict) -> bool:
    """Whether the log may have outgrown the data since `log` (a `log_state`) was taken: cheap, an estimate."""
    with _database(folder) as con:
        grown = log.get("rows", 0) + max(0, _last_seq(con) - log.get("seq", 0))
    return grown > LOG_GROWTH * log.get("live", 0) + LOG_FLOOR


def compact(folder: str, collection: str, vacuum: bool = False) -> int:
    """Drop every log row a rebuild does not need: all but each live style's last vector, up to where both the
    saved index and the metadata have applied the log. One transaction; returns the rows removed."""
    with _database(folder) as con:
        col = _collection(con, collection)
        if col is None or not col.vector_segments:
            return 0
        applied = dict(con.execute(f"SELECT segment_id, seq_id FROM max_seq_id WHERE segment_id IN"
                                   f" ({','.join('?' * len(col.segments))})", col.segments).fetchall())
        upto = min(applied.get(segment, 0) for segment in col.segments)
        keep = _needed_rows(con, col.topic, upto)
        con.execute("BEGIN IMMEDIATE")
        try:
            con.execute("CREATE TEMP TABLE keep (seq_id INTEGER PRIMARY KEY)")
            con.executemany("INSERT INTO keep VALUES (?)", ((seq,) for seq in keep))
            removed = con.execute("DELETE FROM embeddings_queue WHERE topic = ? AND seq_id <= ? AND seq_id NOT IN"
                                  " (SELECT seq_id FROM keep)", (col.topic, upto)).rowcount
            # A kept row alone must recreate its style on a rebuild: an update or add needs no earlier row as an upsert.
            con.execute("UPDATE embeddings_queue SET operation = ? WHERE seq_id IN (SELECT seq_id FROM keep)"
                        " AND operation != ?", (_UPSERT, _UPSERT))
            con.execute("DROP TABLE keep")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        if vacuum:
            con.execute("VACUUM")  # gives the freed pages back to the file system
    return removed


def _needed_rows(con: sqlite3.Connection, topic: str, upto: int) -> list[int]:
    """The log row holding each style's vector as of position `upto` (replaying chroma's rules), for live styles."""
    vector_row: dict[str, int] = {}
    for seq, sid, op, has_vector in con.execute(
            "SELECT seq_id, id, operation, vector IS NOT NULL FROM embeddings_queue WHERE topic = ? AND seq_id <= ?"
            " ORDER BY seq_id", (topic, upto)):
        if op == _DELETE:
            vector_row.pop(sid, None)
        elif (op == _UPSERT and has_vector) or (op == _ADD and sid not in vector_row) \
                or (op == _UPDATE and has_vector and sid in vector_row):
            vector_row[sid] = seq
    return list(vector_row.values())
