import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import sdrag
from sdrag import LibraryError, StyleNotFoundError
from sdrag.models.tiny import TINY_VERSION
from sdrag.retrieval.library import StyleLibrary

NAME = f"tiny-v{TINY_VERSION}"  # what a tiny Workbench calls its embedder (its libraries are opened with it)


def test_ingest_then_reingest_is_idempotent(lib):
    library, folder = lib
    first = library.ingest(folder)
    n = len(first.added)
    assert n >= 8 and not first.updated and len(library) == n
    again = library.ingest(folder)
    assert not again.added and not again.updated
    assert {i.reason for i in again.skipped} == {"unchanged"} and len(library) == n
    assert list(again.table()["outcome"].unique()) == ["skipped"]


def test_manifest_metadata_is_stored(lib):
    library, folder = lib
    library.ingest(folder)
    styles = library.list()
    assert all(s.licence and s.licence != "unknown" and s.caption and s.tags and s.source for s in styles)
    assert len({s.name for s in styles}) == len(styles)


def test_changed_file_and_edited_manifest_update_entries(lib):
    library, folder = lib
    library.ingest(folder)
    target = folder / "camera.jpg"
    old_id = next(s.id for s in library.list() if s.path == str(target))
    Image.new("RGB", (40, 40), "orange").save(target)
    report = library.ingest(folder)
    assert [i.path for i in report.updated] == [str(target)] and not report.added
    ids = {s.id for s in library.list()}
    assert old_id not in ids and report.updated[0].id in ids
    manifest = folder / "manifest.yaml"
    manifest.write_text(manifest.read_text().replace("licence: CC0-1.0", "licence: CC-BY-4.0", 1))
    report = library.ingest(folder)
    assert len(report.updated) == 1 and report.updated[0].reason == "metadata changed"
    assert any(s.licence == "CC-BY-4.0" for s in library.list())


def test_bad_files_are_skipped_with_reasons_never_fatal(lib):
    library, folder = lib
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (folder / "notes.png").write_text("text pretending to be a png")
    shutil.copy(folder / "coffee.jpg", folder / "coffee_copy.jpg")
    with (folder / "manifest.yaml").open("a") as fh:
        fh.write("  - file: ../outside.jpg\n    name: escape\n  - file: missing.jpg\n    name: gone\n")
    report = library.ingest(folder)
    reasons = {i.path.rsplit("/", 1)[-1]: i.reason for i in report.skipped}
    assert reasons["broken.png"].startswith("unreadable")
    assert reasons["notes.png"].startswith("unreadable")
    assert reasons["coffee_copy.jpg"].startswith("duplicate of")
    assert "leaves the style folder" in reasons["outside.jpg"]
    assert "not found" in reasons["missing.jpg"]
    assert len(report.added) >= 8


def test_search_by_own_image_returns_it_top1(lib):
    library, folder = lib
    library.ingest(folder)
    for style in library.list()[:4]:
        hit = library.search(Image.open(style.path), k=3)[0]
        assert hit.id == style.id and hit.score == pytest.approx(1.0, abs=1e-4)


def test_text_search_tags_get_remove(lib):
    library, folder = lib
    library.ingest(folder)
    hits = library.search("neon city", k=3)
    assert len(hits) == 3 and all(-1 <= h.score <= 1 for h in hits)
    assert hits[0].score >= hits[1].score >= hits[2].score
    assert {h.id for h in hits} <= {s.id for s in library.list()}
    photos = library.list(tags="photo")
    assert photos and all("photo" in s.tags for s in photos) and len(photos) < len(library)
    tagged = library.search("anything", k=50, tags=["photo"])
    assert {h.id for h in tagged} == {s.id for s in photos}
    one = photos[0]
    assert library.get(one.name).id == one.id == library.get(one.id).id
    assert library.remove(one.id) == 1 and len(library) == len(library.table())
    with pytest.raises(StyleNotFoundError, match="Fix"):
        library.get(one.id)
    with pytest.raises(LibraryError, match="Empty search"):
        library.search("  ")


def test_library_survives_a_process_restart(lib, tmp_path):
    library, folder = lib
    library.ingest(folder)
    expected = sorted(s.id for s in library.list())
    probe = folder / "coffee.jpg"
    code = textwrap.dedent(f"""
        import sdrag
        wb = sdrag.Workbench.from_preset("tiny", library_dir={str(library.path)!r})
        ids = sorted(s.id for s in wb.library.list())
        hit = wb.library.search(sdrag.load_image({str(probe)!r}), k=1)[0]
        print(len(ids), ",".join(ids), hit.name, round(hit.score, 4))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    n, ids, *rest = out.stdout.strip().splitlines()[-1].split(" ")
    assert int(n) == len(expected) and ids.split(",") == expected
    assert " ".join(rest[:-1]) == "Coffee cup" and float(rest[-1]) == pytest.approx(1.0, abs=1e-3)


def test_embedder_mismatch_is_refused(lib):
    library, folder = lib
    library.ingest(folder)
    with pytest.raises(LibraryError, match="not comparable"):
        StyleLibrary(library.path, lambda: None, "openai/clip-vit-base-patch32")


def test_empty_library_search_says_how_to_fix(tmp_path, clip):
    empty = StyleLibrary(tmp_path / "empty", lambda: clip, NAME)
    with pytest.raises(LibraryError, match="ingest"):
        empty.search("x")


def test_add_one_image(tmp_path, clip):
    library = StyleLibrary(tmp_path / "db", lambda: clip, NAME)
    img = tmp_path / "mine.png"
    Image.fromarray(np.tile(np.arange(64, dtype=np.uint8), (64, 1))).save(img)
    style = library.add(img, name="gradient", caption="grey ramp", tags=["Mono"])
    assert style.name == "gradient" and style.tags == ["mono"] and len(library) == 1


def test_a_moved_style_file_is_reported_with_the_fix(lib):
    library, folder = lib
    library.ingest(folder)
    style = library.get("Coffee cup")
    (folder / "coffee.jpg").rename(folder / "moved.jpg")
    with pytest.raises(LibraryError, match="re-ingest"):
        style.image()


def test_a_crash_between_write_and_delete_heals_on_the_next_ingest(lib, monkeypatch):
    library, folder = lib
    library.ingest(folder)
    target = folder / "rocket.jpg"
    Image.new("RGB", (30, 30), "purple").save(target)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-ingest")

    monkeypatch.setattr(library._store.col, "delete", crash)
    with pytest.raises(KeyboardInterrupt):
        library.ingest(folder)
    monkeypatch.undo()
    assert sum(s.path == str(target) for s in library.list()) == 2  # old and new entry both present
    report = library.ingest(folder)
    assert not report.added
    assert sum(s.path == str(target) for s in library.list()) == 1


# -- hostile input: every case is read, or skipped / refused with the problem and the fix ----------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (8-bit grey)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + _png_chunk(b"IEND", b""))


def _png_bomb(width: int = 10_000, height: int = 9_000) -> bytes:
    """A valid, fully decodable all-black PNG of width x height pixels that compresses to ~100 kB."""
    comp = zlib.compressobj(9)
    row = b"\0" * (width + 1)  # filter byte + pixels
    body = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", body) + _png_chunk(b"IEND", b"")


def _noise(seed: int, size: tuple[int, int] = (24, 24)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture
def fresh(tmp_path, clip):
    """An empty library of its own and an empty style folder."""
    folder = tmp_path / "styles"
    folder.mkdir()
    return StyleLibrary(tmp_path / "db", lambda: clip, NAME), folder


def test_hostile_image_files_are_read_or_skipped_with_a_fix(fresh):
    library, folder = fresh
    good = _noise(0)
    good.save(folder / "good.png")
    data = (folder / "good.png").read_bytes()
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.png").write_text("<html><script>alert(1)</script></html>")
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    _noise(1).save(folder / "whole.jpg", quality=90)
    (folder / "truncated.jpg").write_bytes((folder / "whole.jpg").read_bytes()[:300])
    (folder / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    (folder / "lying_header.png").write_bytes(_png_claiming(100_000, 100_000))
    (folder / "bomb.png").write_bytes(_png_bomb())
    _noise(2, (300, 4)).save(folder / "strip.png")  # 75:1
    Image.fromarray(np.linspace(0, 65535, 32 * 32).astype(np.uint16).reshape(32, 32)).save(folder / "deep16.png")
    Image.new("CMYK", (20, 20), (200, 10, 30, 5)).save(folder / "cmyk.jpg")
    pal = Image.new("P", (20, 20), 3)
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] * 64)
    pal.info["transparency"] = 0
    pal.save(folder / "palette.png")
    Image.new("LA", (20, 20), (90, 128)).save(folder / "grey_alpha.png")
    Image.new("RGBA", (20, 20), (10, 200, 30, 60)).save(folder / "rgba.png")
    frames = [Image.new("RGB", (16, 16), colour) for colour in ("red", "blue", "green")]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=50)
    _noise(3, (1, 1)).save(folder / "one_pixel.png")
    _noise(4).save(folder / "émoji 🎨 שלום <b>.png")
    with open(os.fsencode(folder) + b"/latin1-\xe9t\xe9.png", "wb") as fh:  # a name that is not UTF-8
        _noise(5).save(fh, format="PNG")

    report = library.ingest(folder, progress=False)

    reasons = {Path(i.path).name: i.reason for i in report.skipped}
    expected_skips = {"empty.png": "empty", "notes.png": "text", "truncated.png": "truncated",
                      "truncated.jpg": "truncated", "garbage.png": "", "lying_header.png": "too large",
                      "bomb.png": "too large", "strip.png": "strip",
                      "latin1-\ufffdt\ufffd.png": "not valid UTF-8"}
    assert set(reasons) == set(expected_skips), report.table()
    for name, words in expected_skips.items():
        assert words in reasons[name] and "Fix:" in reasons[name], (name, reasons[name])
    added = {Path(i.path).name for i in report.added}
    assert added == {"good.png", "whole.jpg", "deep16.png", "cmyk.jpg", "palette.png", "grey_alpha.png",
                     "rgba.png", "animated.gif", "one_pixel.png", "émoji 🎨 שלום <b>.png"}
    assert len(library) == len(added)  # nothing lost: every readable file is stored
    report.table().to_string().encode("utf-8")  # the undecodable name prints
    gif = next(s for s in library.list() if s.path.endswith("animated.gif"))
    hit = library.search(frames[0], k=1)[0]  # the first frame is what was embedded
    assert hit.id == gif.id and hit.score == pytest.approx(1.0, abs=1e-4)


def test_hostile_manifest_entries_are_skipped_with_reasons(fresh, tmp_path):
    library, folder = fresh
    for i, name in enumerate(["a.png", "b.png", "c.png", "d.png"]):
        _noise(10 + i).save(folder / name)
    _noise(20).save(tmp_path / "outside.png")
    entries = [
        {"file": "../outside.png", "name": "dot-dot"},
        {"file": str(tmp_path / "outside.png"), "name": "absolute"},
        {"file": "a\x00.png", "name": "nul"},
        {"file": "x" * 5000 + ".png", "name": "long"},
        {"file": 123},
        [[["nested"] * 50] * 50],
        {"file": "a.png", "name": "<img src=x onerror=alert(1)>", "caption": "مرحبا 🎨 \u202eevil", "tags": 5},
        {"file": "b.png", "name": "  ", "tags": "Ink, Wash,,ink"},
        {"file": "c.png", "caption": "lone \ud800 surrogate"},
    ]
    (folder / "manifest.json").write_text(json.dumps({"styles": entries}))  # ensure_ascii keeps \ud800 escaped

    report = library.ingest(folder, progress=False)

    skipped = [i.reason for i in report.skipped]
    assert sum("leaves the style folder" in r for r in skipped) == 2
    assert sum("not usable" in r for r in skipped) == 2  # NUL byte, name too long
    assert sum("without a 'file'" in r for r in skipped) == 2
    assert any("caption is not valid text" in r for r in skipped)
    assert all("Fix:" in r for r in skipped)
    assert max(len(r) for r in skipped) < 600  # a huge entry is summarised, not dumped
    styles = {Path(s.path).name: s for s in library.list()}
    assert set(styles) == {"a.png", "b.png", "d.png"}
    assert styles["a.png"].name == "<img src=x onerror=alert(1)>" and styles["a.png"].caption == "مرحبا 🎨 \u202eevil"
    assert styles["a.png"].tags == ["5"] and styles["b.png"].tags == ["ink", "wash"]
    assert styles["b.png"].name == "b"  # a blank name falls back to the file name
    assert library.get("<img src=x onerror=alert(1)>").id == styles["a.png"].id
    assert [s.id for s in library.list(tags="wash")] == [styles["b.png"].id]


@pytest.mark.parametrize("text", [
    "styles: [" * 5000,  # nesting deeper than the parser's recursion
    "a: &a [1, 2]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
    "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
    "styles: [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n",  # "billion laughs": aliases, not copies
    b"styles:\n  - file: \xff\xfe.png\n",  # not UTF-8
    "styles: {file: a.png}\n",
])
def test_an_unusable_manifest_is_refused_or_summarised(fresh, text):
    library, folder = fresh
    _noise(30).save(folder / "a.png")
    (folder / "manifest.yaml").write_bytes(text.encode() if isinstance(text, str) else text)
    try:
        report = library.ingest(folder, progress=False)
    except LibraryError as exc:
        assert "manifest" in str(exc) and "Fix:" in str(exc)
        assert len(library) == 0
    else:  # the alias bomb parses to shared lists: each entry is refused with a short summary
        assert len(report.skipped) == 9 and all(len(i.reason) < 600 for i in report.skipped)
        assert [Path(i.path).name for i in report.added] == ["a.png"]


def test_links_out_of_the_style_folder_are_not_followed(fresh, tmp_path):
    library, folder = fresh
    _noise(40).save(tmp_path / "private.png")
    _noise(41).save(folder / "inside.png")
    os.symlink(tmp_path / "private.png", folder / "escape.png")
    os.symlink(folder / "inside.png", folder / "alias.png")
    os.symlink(folder, folder / "loop")  # a directory cycle
    report = library.ingest(folder, progress=False)
    reasons = {Path(i.path).name: i.reason for i in report.skipped}
    assert "outside the style folder" in reasons["escape.png"] and "Fix:" in reasons["escape.png"]
    assert [s.path for s in library.list()] == [str(folder / "inside.png")]


def test_a_removed_tag_stops_matching(fresh):
    library, folder = fresh
    _noise(50).save(folder / "a.png")
    manifest = folder / "manifest.yaml"
    manifest.write_text("styles:\n  - file: a.png\n    tags: [ink, wash]\n")
    library.ingest(folder, progress=False)
    assert len(library.list(tags="wash")) == 1
    manifest.write_text("styles:\n  - file: a.png\n    tags: [ink]\n")
    assert [i.reason for i in library.ingest(folder, progress=False).updated] == ["metadata changed"]
    assert library.list(tags="wash") == [] and len(library.list(tags="ink")) == 1
    assert [i.reason for i in library.ingest(folder, progress=False).skipped] == ["unchanged"]
    style = library.add(folder / "a.png", tags="Dots, ink")  # one string is a comma-separated list
    assert style.tags == ["dots", "ink"] and library.list(tags="dots")[0].id == style.id
    library.add(folder / "a.png", tags=["ink"])
    assert library.list(tags="dots") == [] and len(library) == 1


def test_path_like_and_malformed_keys_are_refused_cleanly(lib, tmp_path):
    library, folder = lib
    library.ingest(folder, progress=False)
    n = len(library)
    before = sorted(p.name for p in library.path.iterdir())
    keys = ["../../etc/passwd", "/etc/passwd", "..", "a\x00b", "%", "*", "$and", "x" * 5000, "", "\ud800", None, 123,
            ["a", None]]
    for key in keys:
        with pytest.raises(StyleNotFoundError, match="Fix:") as got:
            library.get(key)
        assert len(str(got.value)) < 400
        with pytest.raises(StyleNotFoundError, match="Fix:"):
            library.remove(key)
    with pytest.raises(StyleNotFoundError):
        library.remove([library.list()[0].id, "../nope"])  # unknown keys raise before anything is removed
    assert library.remove([]) == 0 and len(library) == n
    assert sorted(p.name for p in library.path.iterdir()) == before
    with pytest.raises(LibraryError, match="does not fit"):
        library.search_vector(np.ones(5))
    for bad in (np.full(wb_dim(library), np.nan), np.ones((2, 3)), "text", None):
        with pytest.raises(LibraryError, match="Fix:"):
            library.search_vector(bad)
    for query in (None, b"junk", tmp_path / "missing.png", np.zeros((0, 3))):
        with pytest.raises(sdrag.InputError, match="Fix:"):
            library.search(query)
    hits = library.search("<script>alert('x')</script> 🎨 שלום \u202e", k=2, tags=["photo"])
    assert len(hits) == 2 and all("photo" in h.tags for h in hits)
    with pytest.raises(LibraryError, match=r"No style has all tags \['5'\]. Fix:"):
        library.search("x", tags=[5])
    with pytest.raises(LibraryError, match="Fix:"):
        library.search("x", tags=["\ud800"])
    for path in ("a\x00b.png", folder, tmp_path / "missing.png"):
        with pytest.raises(sdrag.InputError, match="Fix:"):
            library.add(path)
    with pytest.raises(LibraryError, match="Fix:"):
        library.ingest("styles\x00")
    with pytest.raises(LibraryError, match="Fix:"):
        StyleLibrary("bad\x00dir", lambda: None, "x")


def wb_dim(library) -> int:
    return int(library.vectors([library.list()[0].id]).shape[1])


def test_a_held_lock_times_out_with_the_fix_and_threads_share_a_library(fresh, tmp_path):
    import fcntl
    import threading

    library, folder = fresh
    slow = StyleLibrary(library.path, library._embedder_factory, library.embedder_name, lock_timeout=0.3)
    fd = os.open(library.path / "sdrag.lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as another process in the middle of a write would
    try:
        start = time.monotonic()
        with pytest.raises(LibraryError, match="busy.*Fix:.*chroma run"):
            len(slow)
        assert time.monotonic() - start < 3
    finally:
        os.close(fd)
    assert len(slow) == 0
    # Two threads ingesting two folders into one library at once: both complete, nothing lost.
    other = tmp_path / "more"
    other.mkdir()
    for i in range(6):
        _noise(60 + i).save(folder / f"a{i}.png")
        _noise(70 + i).save(other / f"b{i}.png")
    errors: list[BaseException] = []

    def run(path):
        try:
            library.ingest(path, batch_size=2, progress=False)
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(p,)) for p in (folder, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(library) == 12
    assert len({h.id for h in library.search_vector(library.vectors([library.list()[0].id])[0], k=50)}) == 12


# -- the ingest's steps: plan, then re-read, embed and store each batch, then drop stale entries -------------


class Meddling:
    """The embedder, running `meddle` once, before the first batch is embedded: as another process would while
    an ingest runs (the plan is made, the first batch re-read, the rest not yet)."""

    def __init__(self, embedder, meddle):
        self.embedder, self.meddle = embedder, meddle

    def embed_images(self, images):
        if self.meddle is not None:
            meddle, self.meddle = self.meddle, None
            meddle()
        return self.embedder.embed_images(images)


def test_a_file_changed_or_removed_while_being_ingested_is_skipped_and_the_next_ingest_takes_it(fresh, clip):
    library, folder = fresh
    for name, seed in (("k1.png", 80), ("k2.png", 81)):
        _noise(seed).save(folder / name)
    first = library.ingest(folder, progress=False)
    old = {Path(i.path).name: i.id for i in first.added}
    _noise(82).save(folder / "a_first.png")  # planned: added, in the first batch
    _noise(83).save(folder / "k1.png")  # planned: updated (replaces its entry)
    _noise(84).save(folder / "n_gone.png")  # planned: added

    def meddle():
        _noise(85).save(folder / "k1.png")
        (folder / "n_gone.png").unlink()

    meddling = Meddling(clip, meddle)
    for bad in (0, True, 1.5):
        with pytest.raises(LibraryError, match="batch_size must be a whole number"):
            library.ingest(folder, batch_size=bad)
    report = StyleLibrary(library.path, lambda: meddling, NAME).ingest(folder, batch_size=1, progress=False)

    assert [Path(i.path).name for i in report.added] == ["a_first.png"] and report.updated == []
    reasons = {Path(i.path).name: i.reason for i in report.skipped}
    assert reasons["k1.png"] == "changed while being ingested. Fix: run the ingest again"
    assert reasons["n_gone.png"].startswith("unreadable: ") and reasons["k2.png"] == "unchanged"
    assert list(report.table()["outcome"]) == ["added", "skipped", "skipped", "skipped"]  # each file once
    planned = {Path(i.path).name: i.id for i in report.skipped}
    stored = {s.id for s in library.list()}
    assert planned["k1.png"] not in stored and planned["n_gone.png"] not in stored and old["k2.png"] in stored
    again = library.ingest(folder, progress=False)
    now = {}
    for s in library.list():
        now.setdefault(Path(s.path).name, []).append(s.id)
    assert set(now) == {"a_first.png", "k1.png", "k2.png"} and all(len(ids) == 1 for ids in now.values())
    k1 = next(i for i in again.added + again.updated if i.path == str(folder / "k1.png"))
    assert now["k1.png"] == [k1.id] and k1.id not in (old["k1.png"], planned["k1.png"])


def test_files_stored_meanwhile_by_another_ingest_are_reported_unchanged(fresh, clip):
    library, folder = fresh
    for i in range(4):
        _noise(100 + i).save(folder / f"m{i}.png")
    nested = []
    meddling = Meddling(clip, lambda: nested.append(library.ingest(folder, batch_size=2, progress=False)))
    report = StyleLibrary(library.path, lambda: meddling, NAME).ingest(folder, batch_size=2, progress=False)
    assert len(nested[0].added) == 4 and len(library) == 4
    assert not report.added and not report.updated and len(report.skipped) == 4
    assert {i.reason for i in report.skipped} == {"unchanged (stored meanwhile by another process)"}
    assert {i.id for i in report.skipped} == {s.id for s in library.list()}


def test_retrieval_imports_stay_light_and_one_way():
    code = textwrap.dedent("""
        import sys
        import sdrag.retrieval.ingest
        assert "sdrag.retrieval.library" not in sys.modules, "ingest imports library back"
        import sdrag.retrieval.library as library
        from sdrag.retrieval.entries import Style
        from sdrag.retrieval.ingest import IngestReport
        assert library.Style is Style and library.IngestReport is IngestReport
        import sdrag
        assert sdrag.Style is Style and sdrag.IngestReport is IngestReport
        heavy = {"pandas", "chromadb", "torch"} & set(sys.modules)
        assert not heavy, heavy
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


# -- precomputed vectors (add_vectors) and search cost ----------------------------------------------------


def _vector_styles(n: int, dim: int, seed: int = 0, synthetic: bool = True) -> tuple[list[str], np.ndarray, list[dict]]:
    """`n` styles as an embedding pipeline outside sdrag would hand them over: ids, unit rows, metadata."""
    from types import SimpleNamespace

    from sdrag.retrieval.entries import metadata

    rng = np.random.default_rng(seed)
    rows = rng.standard_normal((n, dim)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    ids, metas = [], []
    for i in range(n):
        sha = hashlib.sha256(f"vector style {seed} {i}".encode()).hexdigest()
        info = {"name": f"vector {i}", "caption": f"plate {i} in {'ochre' if i % 2 else 'teal'} gouache",
                "licence": "CC0-1.0", "source": "",
                "tags": ["even" if i % 2 == 0 else "odd", *(["synthetic"] if synthetic else [])]}
        ids.append(sha[:16])
        metas.append(metadata(info, Path(f"/data/v{seed}_{i}.png"), sha, SimpleNamespace(width=64, height=48)))
    return ids, rows, metas


def test_add_vectors_stores_batches_that_search_list_and_lexical_see(fresh, clip):
    library, _ = fresh
    ids, rows, metas = _vector_styles(25, clip.dim)
    assert library.add_vectors(ids, rows, metas, batch_size=10) == 25 and len(library) == 25
    np.testing.assert_allclose(library.vectors(ids), rows, atol=1e-6)
    assert all(library.search_vector(rows[i], k=1)[0].id == ids[i] for i in (0, 7, 24))
    assert {s.id for s in library.list(tags="odd")} == set(ids[1::2])
    hits = library.search("ochre gouache", k=30, method="lexical")
    # Every caption says gouache; the ochre ones match both words and rank first.
    assert len(hits) == 25 and {h.id for h in hits[:12]} == set(ids[1::2])
    assert hits[0].explanation["lexical"]["terms"] == ["gouache", "ochre"]
    # Again with a tag dropped: the same ids are updated in place, and the dropped tag stops matching.
    changed = _vector_styles(25, clip.dim, synthetic=False)[2]
    assert library.add_vectors(ids, rows, changed) == 25 and len(library) == 25
    with pytest.raises(LibraryError, match="No style has all tags"):
        library.search_vector(rows[0], tags="synthetic")
    assert library.add_vectors([], np.zeros((0, clip.dim)), []) == 0


def _stored(library, ids):
    with library._session("raw") as col:
        got = col.get(ids=list(ids), include=["metadatas"])
    return dict(zip(got["ids"], got["metadatas"]))


def test_entries_stored_one_key_per_field_still_read_and_are_packed_once_changed(lib):
    from sdrag.retrieval.entries import flat

    library, folder = lib
    library.ingest(folder)
    styles = {s.id: s for s in library.list()}
    packed = _stored(library, styles)
    # What libraries made before the packed form hold: one key per field, tags comma-joined, plus the tag keys.
    old = {sid: {**flat(meta), **{k: v for k, v in meta.items() if k.startswith("tag:")}}
           for sid, meta in packed.items()}
    assert all(len(old[sid]) > len(packed[sid]) + 5 for sid in old)
    with library._session("old", write=True) as col:
        col.update(ids=list(old), metadatas=[{**{k: None for k in packed[sid]}, **old[sid]} for sid in old])
    assert _stored(library, styles) == old
    assert {s.id: s for s in library.list()} == styles
    tag = styles[next(iter(styles))].tags[0]
    assert {s.id for s in library.list(tags=tag)} == {sid for sid, s in styles.items() if tag in s.tags}
    first = next(iter(styles.values()))
    assert library.get(first.name) == first and library.search(first.caption, k=1, method="lexical")[0].id == first.id
    again = library.ingest(folder)
    assert {i.reason for i in again.skipped} == {"unchanged"} and not again.updated
    assert _stored(library, styles) == old  # an unchanged entry is left as it was stored
    manifest = folder / "manifest.yaml"
    manifest.write_text(manifest.read_text().replace(f"caption: {first.caption}", "caption: now with a new caption"))
    assert [(i.id, i.reason) for i in library.ingest(folder).updated] == [(first.id, "metadata changed")]
    now = _stored(library, styles)
    assert set(now[first.id]) == {"name", "path", "style", *(f"tag:{t}" for t in first.tags)}
    assert library.get(first.id).caption == "now with a new caption"
    assert all(now[sid] == old[sid] for sid in styles if sid != first.id)


def test_add_vectors_refuses_bad_input_before_writing_anything(fresh, clip):
    library, _ = fresh
    ids, rows, metas = _vector_styles(3, clip.dim)
    nan = rows.copy()
    nan[1, 2] = np.nan
    def packed(**fields):
        return {**metas[0], "style": json.dumps({**json.loads(metas[0]["style"]), **fields})}

    bad_tags = packed(tags=["synthetic", "even"])
    extra = {**metas[0], "colour": "red"}
    cases = [(["xyz", *ids[1:]], rows, metas, "16 lower-case hex"), ([ids[0]] * 3, rows, metas, "unique"),
             (ids, nan, metas, "finite"), (ids, rows[:2], metas, "one row"), (ids, "rows", metas, "finite"),
             (ids, rows, metas[:2], "one metadata dict per id"), (ids, rows, [None, *metas[1:]], "must hold text"),
             (ids, rows, [packed(width=0), *metas[1:]], "positive whole"),
             (ids, rows, [{**metas[0], "style": "{"}, *metas[1:]], "must hold text"),
             (ids, rows, [metas[1], metas[0], metas[2]], "first 16 digits of its sha256"),
             (ids, rows, [bad_tags, *metas[1:]], "sorted"), (ids, rows, [extra, *metas[1:]], "no other keys"),
             (ids, np.hstack([rows, rows]), metas, f"holds {clip.dim}. Fix")]
    for case_ids, case_rows, case_metas, message in cases:
        with pytest.raises(sdrag.InputError, match=message):
            library.add_vectors(case_ids, case_rows, case_metas)
    with pytest.raises(LibraryError, match="batch_size"):
        library.add_vectors(ids, rows, metas, batch_size=0)
    assert len(library) == 0
    library.add_vectors(ids[:1], rows[:1], metas[:1])  # now the stored vectors set the dimension
    with pytest.raises(sdrag.InputError, match=f"holds {clip.dim}"):
        library.add_vectors(ids[1:], np.hstack([rows, rows])[1:], metas[1:])
    assert len(library) == 1


def test_search_asks_the_count_only_when_nothing_was_found(fresh, clip):
    library, _ = fresh
    ids, rows, metas = _vector_styles(6, clip.dim)
    library.add_vectors(ids, rows, metas)
    store = library._store
    counted = []
    with library._session("spy") as col:
        count = col.count

        def spy():
            counted.append(1)
            return count()

        col.count = spy  # a spy: the real count still answers
    assert len(library.search_vector(rows[0], k=50)) == 6 and not counted  # k above the size: every style
    with pytest.raises(LibraryError, match="No style has all tags"):
        library.search_vector(rows[0], tags="missing")
    assert counted == [1] and store.col is col
    library.remove(ids)
    with pytest.raises(LibraryError, match="is empty. Fix"):
        library.search_vector(rows[0])
    with pytest.raises(LibraryError, match="is empty. Fix"):  # not "does not fit": there is nothing to fit
        library.search_vector(np.ones(clip.dim + 3))


def test_add_vectors_keeps_each_batch_within_what_one_chroma_call_takes(fresh, clip):
    library, _ = fresh
    ids, rows, metas = _vector_styles(6000, clip.dim, seed=3)
    # A batch past chroma's batch size (5,461 here) would also pass SQLite's variable limit in its read by id.
    assert library.add_vectors(ids, rows, metas, batch_size=10**6) == 6000 and len(library) == 6000
    assert library.search_vector(rows[5999], k=1)[0].id == ids[5999]
