"""Ingesting a folder of style images (with an optional manifest) into a library, idempotently.

The steps: read the folder and its manifest; plan (each file skipped, unchanged, a metadata update or to embed);
apply the metadata updates; embed and store the rest in batches; drop entries whose file now holds other bytes.
The library is reached through `LibraryAccess`, so this module never imports `library.py`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import LibraryError, SdragError
from ..images import load_image
from .entries import (
    all_metadata,
    defaults,
    existing_path,
    flat,
    image_files,
    metadata,
    read_limited,
    replacing,
    short,
    short_path,
    shown,
    tag_list,
    text_problem,
    usable,
)

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = ["MANIFEST_NAMES", "MAX_MANIFEST_BYTES", "IngestItem", "IngestPlan", "IngestReport", "LibraryAccess",
           "Pending", "ingest_folder"]

MANIFEST_NAMES = ("manifest.yaml", "manifest.yml", "manifest.json")
MAX_MANIFEST_BYTES = 16 * 2**20


@dataclass
class IngestItem:
    """What happened to one file during an ingest."""

    path: str
    id: str | None = None
    name: str | None = None
    reason: str = ""


@dataclass
class IngestReport:
    """Files added, updated and skipped (each skipped one with its reason)."""

    added: list[IngestItem] = field(default_factory=list)
    updated: list[IngestItem] = field(default_factory=list)
    skipped: list[IngestItem] = field(default_factory=list)

    def table(self) -> pd.DataFrame:
        """One row per file with its outcome."""
        import pandas as pd

        rows = [{"outcome": outcome, **asdict(item)}
                for outcome in ("added", "updated", "skipped") for item in getattr(self, outcome)]
        return pd.DataFrame(rows, columns=["outcome", "path", "id", "name", "reason"])

    def __str__(self) -> str:
        return f"{len(self.added)} added, {len(self.updated)} updated, {len(self.skipped)} skipped"


@dataclass
class LibraryAccess:
    """What an ingest needs of a StyleLibrary: `session(op, write=False)` (the collection, held for one operation),
    `embed(datas)` (image file bytes -> embedding rows), `write(col, ids, vectors, metas, stored)` (upsert) and
    `writable()` (raises LibraryError for a read-only library, before anything is embedded for it)."""

    session: Callable[..., AbstractContextManager[Any]]
    embed: Callable[[list[bytes]], np.ndarray]
    write: Callable[[Any, list[str], np.ndarray, list[dict], dict[str, dict]], None]
    writable: Callable[[], None] = lambda: None


@dataclass
class Pending:
    """A file to embed; its `item` sits in the report list named `outcome` until it is stored or skipped."""

    sid: str
    meta: dict
    file: Path
    item: IngestItem
    outcome: str


@dataclass
class IngestPlan:
    """What the files of a folder call for, against the entries stored when the ingest began."""

    current: dict[str, str] = field(default_factory=dict)  # path -> id of the bytes there now
    updates: dict[str, dict] = field(default_factory=dict)  # id -> new metadata, for stored bytes
    todo: list[Pending] = field(default_factory=list)  # files whose bytes are not stored yet


def ingest_folder(access: LibraryAccess, folder: str | Path, batch_size: int, progress: bool) -> IngestReport:
    """Ingest `folder` (see StyleLibrary.ingest)."""
    folder = _style_folder(folder)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise LibraryError(f"batch_size must be a whole number of at least 1, got {batch_size!r}.")
    report = IngestReport()
    entries = _read_manifest(folder, report)
    with access.session("ingest") as col:
        existing = all_metadata(col)
    plan = _plan(entries, existing, report)
    if plan.updates or plan.todo:  # an ingest of unchanged files writes nothing, so it works on a read-only library
        access.writable()
    _apply_updates(access, plan.updates, existing)
    _embed_and_store(access, plan.todo, report, batch_size, progress)
    _drop_stale(access, plan.current)
    return report


# -- the steps ------------------------------------------------------------------------------------------


def _plan(entries: dict[Path, dict], existing: dict[str, dict], report: IngestReport) -> IngestPlan:
    """Classify each file: skipped (unreadable, unusable, a duplicate or unchanged), a metadata update, or to embed
    (added, or updated when it replaces the entry of its earlier bytes). Every file gets its item in the report."""
    by_path = {meta.get("path"): sid for sid, meta in existing.items()}
    seen: dict[str, str] = {}  # id -> the first file holding those bytes
    plan = IngestPlan()
    for file, info in entries.items():
        item = IngestItem(path=shown(file), name=shown(info["name"]))
        read = _read_entry(file, info, item, seen)
        if read is None:
            report.skipped.append(item)
            continue
        sid, meta = read
        plan.current[str(file)] = sid
        if sid in existing:
            # Compared field by field: an entry stored one key per field (as libraries made before the packed form
            # hold it) is still unchanged.
            if flat(existing[sid]) == flat(meta):
                item.reason = "unchanged"
                report.skipped.append(item)
            else:
                item.reason = "metadata changed"
                report.updated.append(item)
                plan.updates[sid] = meta
            continue
        # Images are decoded again at embedding time, so a big folder is never held in memory at once.
        old = by_path.get(str(file))
        outcome = "added" if old is None else "updated"
        if old is not None:
            item.reason = f"file changed (replaces {old})"
        getattr(report, outcome).append(item)
        plan.todo.append(Pending(sid, meta, file, item, outcome))
    return plan


def _read_entry(file: Path, info: dict, item: IngestItem, seen: dict[str, str]) -> tuple[str, dict] | None:
    """The id and metadata of `file`; None, with the reason on `item`, for a file that cannot be a style."""
    try:
        data = read_limited(file)
        image = usable(load_image(data), file.name)
    except (OSError, SdragError) as exc:
        item.reason = f"unreadable: {shown(exc)}"
        return None
    sha = hashlib.sha256(data).hexdigest()
    sid = item.id = sha[:16]
    meta = metadata(info, file, sha, image)
    problem = text_problem(meta)
    if problem:
        item.reason = problem
        return None
    if sid in seen:
        item.reason = f"duplicate of {seen[sid]} (same bytes)"
        return None
    seen[sid] = str(file)
    return sid, meta


def _apply_updates(access: LibraryAccess, updates: dict[str, dict], existing: dict[str, dict]) -> None:
    if updates:
        with access.session("ingest", write=True) as col:
            col.update(ids=list(updates), metadatas=[replacing(existing[sid], meta) for sid, meta in updates.items()])


def _embed_and_store(access: LibraryAccess, todo: list[Pending], report: IngestReport, batch_size: int,
                     progress: bool) -> None:
    """Embed the planned files outside the lock, `batch_size` at a time, and store each batch under it."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc="embedding styles", unit="img", disable=not (progress and todo))
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        ready, datas = _reread(chunk, report)
        vectors = access.embed(datas) if datas else None
        if ready:
            _store_chunk(access, ready, vectors, report)
        bar.update(len(chunk))
    bar.close()


def _reread(chunk: list[Pending], report: IngestReport) -> tuple[list[Pending], list[bytes]]:
    """The files of `chunk` that still hold the bytes that were planned, with those bytes; the others skipped."""
    ready: list[Pending] = []
    datas: list[bytes] = []
    for entry in chunk:
        # Embed the very bytes that were hashed: a file rewritten since then would get a wrong id.
        try:
            data = read_limited(entry.file)
        except OSError as exc:
            data, why = None, f"unreadable: {shown(exc)}"
        else:
            why = "changed while being ingested. Fix: run the ingest again"
        if data is None or hashlib.sha256(data).hexdigest() != flat(entry.meta)["sha256"]:
            _skip(entry, report, why)
            continue
        datas.append(data)
        ready.append(entry)
    return ready, datas


def _store_chunk(access: LibraryAccess, ready: list[Pending], vectors: np.ndarray, report: IngestReport) -> None:
    with access.session("ingest", write=True) as col:
        # Another process may have stored some of these since the plan was made (same folder at once).
        ids = [entry.sid for entry in ready]
        have = col.get(ids=ids, include=["metadatas"])
        stored = dict(zip(have["ids"], have["metadatas"]))
        keep = []
        for k, entry in enumerate(ready):
            if entry.sid in stored and flat(stored[entry.sid]) == flat(entry.meta):
                _skip(entry, report, "unchanged (stored meanwhile by another process)")
            else:
                keep.append(k)
        if keep:
            access.write(col, [ids[k] for k in keep], vectors[keep], [ready[k].meta for k in keep], stored)


def _drop_stale(access: LibraryAccess, current: dict[str, str]) -> None:
    # Entries whose file now holds other bytes are dropped only after their replacements are stored, so
    # a crash in between leaves a stale entry that the next ingest removes, never a missing one.
    with access.session("ingest") as col:
        stale = _stale(all_metadata(col), current)
    if stale:
        with access.session("ingest", write=True) as col:
            stale = _stale(all_metadata(col), current)  # again, under the write lock
            if stale:
                col.delete(ids=stale)


def _skip(entry: Pending, report: IngestReport, reason: str) -> None:
    """Move a planned file's item from its outcome list to the skipped ones."""
    getattr(report, entry.outcome).remove(entry.item)
    entry.item.reason = reason
    report.skipped.append(entry.item)


def _stale(metas: dict[str, dict], current: dict[str, str]) -> list[str]:
    """Ids whose file was ingested just now with other bytes: their replacement is stored, so they go."""
    return [sid for sid, meta in metas.items() if current.get(meta.get("path"), sid) != sid]


# -- the style folder and its manifest ------------------------------------------------------------------


def _style_folder(folder: Any) -> Path:
    path = existing_path(folder, folder=True)
    if path is None:
        raise LibraryError(f"Style folder not found: {short_path(folder)}. Fix: pass a folder of images.")
    return path


def _read_manifest(folder: Path, report: IngestReport) -> dict[Path, dict]:
    """Map each image file to its metadata: manifest entries first, then unlisted images with defaults."""
    manifest = next((folder / name for name in MANIFEST_NAMES if (folder / name).is_file()), None)
    raw = _parse_manifest(manifest) if manifest else []
    entries: dict[Path, dict] = {}
    for item in raw:
        got = _entry(item, folder, report)
        if got is not None:
            entries.setdefault(got[0], got[1])
    reported = {item.path for item in report.skipped}
    for file, target in image_files(folder):
        if not target.is_relative_to(folder):
            if shown(file) in reported:
                continue
            report.skipped.append(IngestItem(path=shown(file), reason="a link to a file outside the style folder."
                                             " Fix: copy the file into the folder"))
        elif target not in entries:
            entries[target] = defaults(file)
    return entries


def _parse_manifest(mf: Path) -> list:
    import yaml

    try:
        if mf.stat().st_size > MAX_MANIFEST_BYTES:
            raise LibraryError(f"The manifest {mf} is larger than {MAX_MANIFEST_BYTES >> 20} MB. Fix: list only"
                               " file names and short metadata in it.")
        text = mf.read_text(encoding="utf-8")
        data = json.loads(text) if mf.suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError, yaml.YAMLError) as exc:
        raise LibraryError(f"Cannot read the manifest {mf}: {shown(exc)}. Fix: correct its syntax.") from None
    items = data.get("styles") if isinstance(data, dict) else data
    if items is None:
        return []
    if not isinstance(items, list):
        raise LibraryError(f"The manifest {mf} must hold a list under 'styles:'. Fix: see styles/manifest.yaml.")
    return items


def _entry(item: Any, folder: Path, report: IngestReport) -> tuple[Path, dict] | None:
    """Validate one manifest entry; None (and a skip reason in the report) if it is unusable."""
    if not isinstance(item, dict) or not isinstance(item.get("file"), str) or not item["file"].strip():
        report.skipped.append(IngestItem(path=str(folder), reason="manifest entry without a 'file':"
                                         f" {short(item)}. Fix: give each entry a file name"))
        return None
    listed = item["file"]
    name = shown(item["name"]) if item.get("name") is not None else None
    try:
        file = (folder / listed).resolve()
        inside = file.is_relative_to(folder)
        found = inside and file.is_file()
    except (OSError, ValueError, RuntimeError) as exc:  # NUL bytes, names too long, link loops
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc  # not the whole long name
        reason = f"manifest file path is not usable ({shown(why)}). Fix: list plain paths relative to the style folder"
        report.skipped.append(IngestItem(path=shown(folder / listed), name=name, reason=reason))
        return None
    if not inside:
        reason = "manifest file path leaves the style folder. Fix: list files inside it, as paths relative to it"
        report.skipped.append(IngestItem(path=shown(folder / listed), name=name, reason=reason))
        return None
    if not found:
        report.skipped.append(IngestItem(path=shown(file), name=name, reason="listed in the manifest but not found."
                                         " Fix: add the file or correct the manifest"))
        return None
    info = defaults(file)
    for key in ("name", "caption", "licence", "source"):
        value = item.get(key)
        if value is not None and (key != "name" or str(value).strip()):
            info[key] = str(value)
    if item.get("license") is not None and item.get("licence") is None:
        info["licence"] = str(item["license"])
    info["tags"] = tag_list(item.get("tags"))
    return file, info
