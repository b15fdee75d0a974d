import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import STYLES
from PIL import Image

import sdrag
from sdrag import LibraryError, StyleNotFoundError


@pytest.fixture
def lib(tmp_path, wb):
    """A fresh library on a copy of the starter styles, sharing the session's embedder."""
    folder = tmp_path / "styles"
    shutil.copytree(STYLES, folder)
    library = sdrag.StyleLibrary(tmp_path / "db", lambda: wb.embedder, wb.embedder_name)
    return library, folder


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
        sdrag.StyleLibrary(library.path, lambda: None, "openai/clip-vit-base-patch32")


def test_empty_library_search_says_how_to_fix(tmp_path, wb):
    empty = sdrag.StyleLibrary(tmp_path / "empty", lambda: wb.embedder, wb.embedder_name)
    with pytest.raises(LibraryError, match="ingest"):
        empty.search("x")


def test_add_one_image(tmp_path, wb):
    library = sdrag.StyleLibrary(tmp_path / "db", lambda: wb.embedder, wb.embedder_name)
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

    monkeypatch.setattr(library._col, "delete", crash)
    with pytest.raises(KeyboardInterrupt):
        library.ingest(folder)
    monkeypatch.undo()
    assert sum(s.path == str(target) for s in library.list()) == 2  # old and new entry both present
    report = library.ingest(folder)
    assert not report.added
    assert sum(s.path == str(target) for s in library.list()) == 1
