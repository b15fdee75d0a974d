"""A run folder that defends itself: damaged or foreign files, a second writer, other specs, folders that are not
run folders, links, moved folders, spreadsheet formulas. Each family generates its own cases."""

import csv
import json
import os
import shutil
import subprocess
import sys
import threading

import pytest

import sdrag
from sdrag.runs.folder import RunFolder
from sdrag.runs.spec import SweepError
from sdrag.sweeps.engine import run_sweep

BASE = {"prompt": "a neon city", "steps": 1, "size": 64}


def sweep(wb, out, seeds=(0, 1), **spec):
    spec = {"base": dict(BASE), "batch": 2, "metrics": False, "axes": {"seed": list(seeds)}, **spec}
    return run_sweep(spec, out_dir=out, workbench=wb, progress=False, report=False)


@pytest.fixture(scope="module")
def finished(wb, tmp_path_factory):
    """A finished 2-cell run folder to copy for each case (copies are cheap; sweeps are not)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    sweep(wb, out)
    return out


def copy_of(finished, tmp_path):
    return shutil.copytree(finished, tmp_path / "run")


def _first(out, pattern):
    return sorted(out.glob(pattern))[0]


# -- 1. a run folder's contents are checked, never trusted ---------------------------------------------------

ROW_DAMAGE = {
    "a list": lambda p, row: p.write_text("[1, 2]"),
    "an empty object": lambda p, row: p.write_text("{}"),
    "half a row": lambda p, row: p.write_text(json.dumps({k: row[k] for k in list(row)[:5]})),
    "not JSON": lambda p, row: p.write_text('{"cell_id": '),
    "another cell's id": lambda p, row: p.write_text(json.dumps({**row, "cell_id": "f" * 16})),
    "a made-up status": lambda p, row: p.write_text(json.dumps({**row, "status": "done"})),
    "an image outside the folder": lambda p, row: p.write_text(json.dumps({**row, "image": "../../x.png"})),
    "no resolved parameters": lambda p, row: p.write_text(json.dumps({**row, "resolved": "[]"})),
    "its image deleted": lambda p, row: (p.parent.parent / row["image"]).unlink(),
    "its image replaced with garbage": lambda p, row: (p.parent.parent / row["image"]).write_bytes(b"\x89PNG junk"),
    "its image replaced with another picture": lambda p, row: shutil.copy(p.parent.parent / "sketch.png",
                                                                          p.parent.parent / row["image"]),
}


@pytest.mark.parametrize("damage", ROW_DAMAGE)
def test_a_damaged_row_or_image_is_set_aside_and_its_cell_made_again(wb, finished, tmp_path, damage):
    out = copy_of(finished, tmp_path)
    path = _first(out, "rows/*.json")
    row = json.loads(path.read_text())
    ROW_DAMAGE[damage](path, row)
    readable = RunFolder(out).open()  # reading a damaged folder works; the damaged cell is simply not there
    assert row["cell_id"] not in set(readable.table["cell_id"]) and len(readable.table) == 1
    run = sweep(wb, out)
    assert (run.table["status"] == "ok").all() and row["cell_id"] in set(run.table["cell_id"])
    assert any(path.name in note for note in run.manifest["rows_set_aside"])
    restored = RunFolder(out).open().table.set_index("cell_id")
    assert restored.loc[row["cell_id"], "image_sha256"] == row["image_sha256"]  # the same picture again
    from sdrag.reports.html import write_report

    assert write_report(run).is_file()


@pytest.mark.parametrize("name", ["notes.json", "0123.json", "ABCDEF0123456789.json", "x.failed.json", ".json"])
def test_foreign_files_in_rows_are_ignored(wb, finished, tmp_path, name):
    out = copy_of(finished, tmp_path)
    (out / "rows" / name).write_text(json.dumps({"cell_id": name, "status": "ok"}))
    run = sweep(wb, out)
    assert len(run.table) == 2 and (run.table["status"] == "ok").all()
    assert (out / "rows" / name).is_file()  # not ours to delete


MANIFEST_DAMAGE = {
    "a list": "[]", "an empty object": "{}", "not JSON": "{", "empty": "",
    "no spec": lambda m: {k: v for k, v in m.items() if k != "spec"},
    "a history that is not a list": lambda m: {**m, "history": "yesterday"},
    "a sketch hash that is not one": lambda m: {**m, "sketch_sha256": "12"},
}


@pytest.mark.parametrize("damage", MANIFEST_DAMAGE)
def test_a_damaged_manifest_gives_one_error_naming_it(wb, finished, tmp_path, damage):
    out = copy_of(finished, tmp_path)
    path = out / "manifest.json"
    change = MANIFEST_DAMAGE[damage]
    path.write_text(change if isinstance(change, str) else json.dumps(change(json.loads(path.read_text()))))
    for attempt in (lambda: sweep(wb, out), lambda: RunFolder(out).open(),
                    lambda: sdrag.reproduce(out, json.loads(_first(out, "rows/*.json").read_text())["cell_id"],
                                            workbench=wb)):
        with pytest.raises(SweepError) as err:
            attempt()
        assert "manifest.json" in str(err.value) and "Fix:" in str(err.value)


@pytest.mark.parametrize("damage", ["columns dropped", "garbage", "deleted", "rows shuffled", "a cell edited"])
def test_results_csv_is_an_export_rows_are_what_is_read(wb, finished, tmp_path, damage):
    out = copy_of(finished, tmp_path)
    before = RunFolder(out).open().table
    table = out / "results.csv"
    text = table.read_text().splitlines()
    {"columns dropped": lambda: table.write_text("\n".join(",".join(line.split(",")[:3]) for line in text)),
     "garbage": lambda: table.write_bytes(os.urandom(300)),
     "deleted": lambda: table.unlink(),
     "rows shuffled": lambda: table.write_text("\n".join([text[0], *reversed(text[1:])])),
     "a cell edited": lambda: table.write_text("\n".join([text[0], text[1].replace("ok", "failed")] + text[2:])),
     }[damage]()
    after = RunFolder(out).open().table
    assert set(after["cell_id"]) == set(before["cell_id"]) and (after["status"] == "ok").all()
    shutil.rmtree(out / "rows")
    if damage in ("garbage", "deleted", "columns dropped"):
        with pytest.raises(SweepError, match="results.csv"):
            RunFolder(out).open()


# -- 2. identity: ids that look like numbers stay text -----------------------------------------------------

@pytest.mark.parametrize("cid", ["0000000000001234", "1e10000000000000", "0123456789012345", "9" * 16,
                                 "00000000000000e5", "1234567890abcdef"])
def test_a_cell_id_of_digits_survives_the_csv(wb, finished, tmp_path, cid):
    out = copy_of(finished, tmp_path)
    folder = RunFolder(out)
    rows = folder.rows()
    old = next(iter(rows))
    rows = {cid: {**rows[old], "cell_id": cid, "prompt": cid}}
    folder.write_table([cid], rows)
    shutil.rmtree(out / "rows")  # read back through results.csv alone
    table = folder.open().table
    assert table["cell_id"].tolist() == [cid] and table["prompt"].tolist() == [cid]


# -- 3. one writer; a folder that is not a run folder is never written into ---------------------------------

def _held_by_thread(folder, ready, release):
    with folder.lock():
        ready.set()
        release.wait(30)


@pytest.mark.parametrize("holder", ["thread", "process"])
def test_a_second_writer_is_refused_and_the_first_keeps_its_files(wb, finished, tmp_path, holder):
    out = copy_of(finished, tmp_path)
    in_flight = out / "cells" / ".abc.png.tmp"
    in_flight.write_bytes(b"being written")
    ready, release = threading.Event(), threading.Event()
    if holder == "thread":
        thread = threading.Thread(target=_held_by_thread, args=(RunFolder(out), ready, release))
        thread.start()
        assert ready.wait(10)
    else:
        code = ("import sys, time; from sdrag.runs.folder import RunFolder\n"
                "with RunFolder(sys.argv[1]).lock():\n    print('held', flush=True); time.sleep(30)")
        proc = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "held"
    try:
        with pytest.raises(SweepError, match="Another sweep is writing") as err:
            sweep(wb, out)
        assert "process" in str(err.value) and in_flight.read_bytes() == b"being written"
    finally:
        release.set()
        if holder == "thread":
            thread.join()
        else:
            proc.kill()
            proc.wait()
    assert len(sweep(wb, out).table) == 2  # free again once the holder is gone
    assert not in_flight.exists()  # a left-over temp file is cleared by the next writer


@pytest.mark.parametrize("seeds", [(2,), (0,), (1, 2), (5, 6, 7)])
def test_another_spec_in_a_used_folder_is_refused_and_an_extension_is_not(wb, finished, tmp_path, seeds):
    out = copy_of(finished, tmp_path)
    before = sorted(p.name for p in (out / "rows").iterdir())
    with pytest.raises(SweepError, match="another spec"):
        sweep(wb, out, seeds=seeds)
    assert sorted(p.name for p in (out / "rows").iterdir()) == before
    assert len(sweep(wb, out, seeds=sorted({0, 1, *seeds})).table) == len({0, 1, *seeds})


USER_FILES = {
    "results.csv": b"their,own\n1,2\n", "notes.txt": b"mine", "photo.png": b"\x89PNG...", ".hidden": b"x",
    "sub/deep.txt": b"deep",
}


@pytest.mark.parametrize("name", USER_FILES)
def test_a_folder_of_someone_elses_files_is_never_written_into(wb, tmp_path, name):
    out = tmp_path / "theirs"
    (out / name).parent.mkdir(parents=True, exist_ok=True)
    (out / name).write_bytes(USER_FILES[name])
    with pytest.raises(SweepError, match="not a run folder and not empty"):
        sweep(wb, out)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [name]
    assert (out / name).read_bytes() == USER_FILES[name]


def test_an_out_dir_that_is_a_file_and_an_empty_folder(wb, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SweepError, match="is a file"):
        sweep(wb, tmp_path / "file")
    (tmp_path / "empty").mkdir()
    assert len(sweep(wb, tmp_path / "empty").table) == 2


@pytest.mark.parametrize("name, kind", [("cells", "link"), ("rows", "link"), ("styles", "link"),
                                        ("cells", "file"), ("rows", "file")])
def test_a_linked_or_file_subfolder_is_refused(wb, finished, tmp_path, name, kind):
    out = copy_of(finished, tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.rmtree(out / name)
    if kind == "link":
        (out / name).symlink_to(outside, target_is_directory=True)
    else:
        (out / name).write_text("x")
    with pytest.raises(SweepError, match="link or a file"):
        sweep(wb, out, seeds=(0, 1, 2))
    assert list(outside.iterdir()) == []


# -- 4. a moved or copied run folder reproduces from itself --------------------------------------------------

@pytest.fixture(scope="module")
def with_outside_library(wb, tmp_path_factory):
    """A run whose library lives outside the run folder (and is gone afterwards)."""
    root = tmp_path_factory.mktemp("moved")
    spec = {"base": dict(BASE), "batch": 2, "metrics": False, "library": str(root / "lib"),
            "axes": {"seed": [0, 1], "top_k": [1, 2]}}
    run = run_sweep(spec, out_dir=root / "run", preset="tiny", progress=False, report=False)
    shutil.rmtree(root / "lib")
    return run


@pytest.mark.parametrize("how", ["moved", "copied", "renamed", "moved deeper", "copied, original deleted"])
def test_a_moved_or_copied_run_folder_reproduces_every_cell(with_outside_library, tmp_path, how):
    source = with_outside_library.out_dir
    work = tmp_path / "src"
    shutil.copytree(source, work)
    target = {"moved": tmp_path / "elsewhere" / "run", "copied": tmp_path / "copy",
              "renamed": tmp_path / "renamed", "moved deeper": tmp_path / "a" / "b" / "c" / "run",
              "copied, original deleted": tmp_path / "c2"}[how]
    target.parent.mkdir(parents=True, exist_ok=True)
    if how.startswith("copied"):
        shutil.copytree(work, target)
        if how.endswith("deleted"):
            shutil.rmtree(work)
    else:
        shutil.move(work, target)
    library = with_outside_library.manifest["library"]["path"]
    bare = sdrag.Workbench.from_preset("tiny", library_dir=tmp_path / "no-library")
    for n, cid in enumerate(with_outside_library.table["cell_id"]):
        # The first cell as a user would (no workbench: the manifest's, with its gone library); the rest on one
        # workbench whose library folder does not exist either, to save loading the models again.
        image, same = sdrag.reproduce(target, cid) if n == 0 and how == "moved" else \
            sdrag.reproduce(target, cid, workbench=bare)
        assert same, (how, cid)
    # Reproducing read the run folder alone: no library was opened, so none was created, old path or new.
    assert not os.path.exists(library) and not (tmp_path / "no-library").exists()


# -- 7. text that is code in a spreadsheet -------------------------------------------------------------------

FORMULAS = ["=1+1", "+SUM(A1:A2)", "-2+3", "@cmd", "\tindent", "'quoted", "=HYPERLINK(\"http://x\")"]


def test_prompts_that_are_formulas_are_quoted_in_the_csv_and_exact_elsewhere(wb, tmp_path):
    out = tmp_path / "run"
    run = sweep(wb, out, seeds=(0,), zip={"prompt": FORMULAS})
    with open(out / "results.csv", newline="") as fh:
        cells = [cell for row in csv.reader(fh) for cell in row]
    assert cells and not [c for c in cells if c[:1] in ("=", "+", "@", "\t", "\r")]
    assert not [c for c in cells if c.startswith("-") and not c[1:2].isdigit()]  # numbers keep their sign
    assert sorted(run.table["prompt"]) == sorted(FORMULAS)
    assert sorted(RunFolder(out).open().table["prompt"]) == sorted(FORMULAS)
    assert sorted(json.loads(p.read_text())["prompt"] for p in (out / "rows").glob("*.json")) == sorted(FORMULAS)
    shutil.rmtree(out / "rows")
    assert sorted(RunFolder(out).open().table["prompt"]) == sorted(FORMULAS)  # back from the quoted CSV exactly


# -- 5 (the sweep's side). styles added while a sweep runs are in its manifest --------------------------------

@pytest.mark.parametrize("added", range(5))
def test_styles_added_during_a_sweep_are_in_its_manifest(wb, tmp_path, monkeypatch, added):
    import numpy as np
    from PIL import Image

    from sdrag.retrieval.library import StyleLibrary

    lib_dir = tmp_path / "lib"
    bench = sdrag.Workbench.from_preset("tiny", library_dir=lib_dir)
    bench._generator, bench._embedder = wb.generator, wb.embedder  # the shared models: no second load
    images = [tmp_path / f"new{k}.png" for k in range(added + 1)]
    for k, path in enumerate(images):
        Image.fromarray(np.full((32, 32, 3), 40 * k + 20 * added, np.uint8)).save(path)
    original, calls = bench.generator.generate, []

    def generate(*args, **kwargs):
        if not calls:  # meanwhile, another writer adds styles to the same library folder
            other = StyleLibrary(lib_dir, lambda: bench.embedder, bench.embedder_name)
            for path in images:
                other.add(path)
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(bench.generator, "generate", generate)
    run = run_sweep({"base": dict(BASE), "batch": 1, "metrics": False, "axes": {"seed": [0, 1]}},
                    out_dir=tmp_path / "run", workbench=bench, progress=False, report=False)
    snapshot = {s["id"] for s in run.manifest["library"]["styles"]}
    assert {s.id for s in bench.library.list()} == snapshot and len(snapshot) >= len(images) + 1
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["library"]["styles"] == \
        run.manifest["library"]["styles"]
