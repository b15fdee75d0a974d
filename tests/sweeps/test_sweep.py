import json
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import yaml
from conftest import fail_generation
from PIL import Image

import sdrag
from sdrag.runs.spec import SweepError
from sdrag.sweeps.engine import SweepFailed, run_sweep

BASE = {"prompt": "a neon city", "steps": 2, "size": 64}


def small_spec(**extra):
    spec = {"name": "t", "base": dict(BASE), "axes": {"canny": [[50, 150], [100, 200]],
                                                      "controlnet_scale": [0.5, 1.5], "seed": [0, 1]}}
    spec.update(extra)
    return spec


def test_run_writes_table_images_manifest_and_report(wb, tmp_path):
    run = sdrag.run_sweep(small_spec(), out_dir=tmp_path / "run", workbench=wb, progress=False)
    table = run.table
    assert len(table) == 8 and (table["status"] == "ok").all()
    assert table["cell_id"].is_unique
    for _, row in table.iterrows():
        assert (run.out_dir / row["image"]).is_file()
        assert 0 <= row["edge_f1"] <= 1 and -1 <= row["style_similarity"] <= 1
    csv = __import__("pandas").read_csv(run.out_dir / "results.csv")
    assert list(csv["cell_id"]) == list(table["cell_id"])
    manifest = json.loads((run.out_dir / "manifest.json").read_text())
    assert manifest["versions"]["torch"] and manifest["device"]["device"] == "cpu"
    assert all(len(f["sha256"]) == 64 for files in manifest["weights"].values() for f in files)
    # Every weight file the models loaded, each component's, the retrieval CLIP's too.
    assert {part: [f["file"] for f in files] for part, files in manifest["weights"].items()} == {
        part: list(p.weights) for part, p in wb.plan.items()}
    assert len(manifest["weights"]["clip"]) == 1 and manifest["library"]["styles"]
    assert run.report_path.is_file() and list(run.out_dir.glob("grid_*.png"))


def test_resume_and_extension_generate_only_missing_cells(wb, tmp_path, monkeypatch):
    calls = []
    original = wb.generator.generate

    def counting(control, params, **kw):
        calls.append(list(params.seeds))
        return original(control, params, **kw)

    monkeypatch.setattr(wb.generator, "generate", counting)
    out = tmp_path / "run"
    first = run_sweep(small_spec(batch=2), out_dir=out, workbench=wb, progress=False, report=False)
    assert len(calls) == 4  # 4 combinations, both seeds in one batched call each
    calls.clear()
    again = run_sweep(small_spec(batch=2), out_dir=out, workbench=wb, progress=False, report=False)
    assert calls == [] and again.table.equals(first.table)
    extended = small_spec(batch=2)
    extended["axes"]["controlnet_scale"] = [0.5, 1.5, 2.0]
    more = run_sweep(extended, out_dir=out, workbench=wb, progress=False, report=False)
    assert len(calls) == 2 and len(more.table) == 12  # only the 2 new combinations x 2 seeds
    kept = more.table.set_index("cell_id").loc[first.table["cell_id"], "image_sha256"]
    assert list(kept) == list(first.table["image_sha256"])


def test_stage_caching_by_call_counts(tmp_path):
    run = run_sweep(small_spec(), out_dir=tmp_path / "run", progress=False, report=False)
    stats = run.cache_stats
    assert stats["canny"]["misses"] == 2  # once per threshold pair
    assert stats["prompt"]["misses"] == 1  # once per (prompt, negative prompt)
    assert stats["style"]["misses"] == 1  # once per style reference


def test_batched_equals_one_call_per_cell_within_one_grey_level(wb, tmp_path):
    spec = {"base": dict(BASE, steps=3), "axes": {"seed": [0, 1, 2, 3]}}
    batched = run_sweep({**spec, "batch": 4}, out_dir=tmp_path / "b", workbench=wb, progress=False, report=False)
    single = run_sweep({**spec, "batch": 1}, out_dir=tmp_path / "s", workbench=wb, progress=False, report=False)
    assert list(batched.table["cell_id"]) == list(single.table["cell_id"])
    for (_, a), (_, b) in zip(batched.table.iterrows(), single.table.iterrows()):
        x = np.asarray(Image.open(batched.out_dir / a["image"]), int)
        y = np.asarray(Image.open(single.out_dir / b["image"]), int)
        assert np.abs(x - y).max() <= 1 and np.abs(x - y).mean() < 0.01


def test_failing_cells_are_recorded_and_the_sweep_goes_on(wb, tmp_path, monkeypatch):
    original = wb.generator.generate
    fail_generation(wb, monkeypatch, lambda: RuntimeError("CUDA out of memory (simulated)"), seed=1)
    spec = small_spec(batch=1, base=dict(BASE, prompt="<script>alert(1)</script>"))
    run = run_sweep(spec, out_dir=tmp_path / "run", workbench=wb, progress=False)
    failed = run.failed
    assert len(failed) == 4 and set(failed["seed"]) == {1}
    assert failed["error"].str.contains("out of memory").all()
    page = run.report_path.read_text()
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert all(cid in page for cid in run.table["cell_id"])
    monkeypatch.setattr(wb.generator, "generate", original)
    healed = run_sweep(spec, out_dir=tmp_path / "run", workbench=wb, progress=False, report=False)
    assert (healed.table["status"] == "ok").all()  # failed cells are retried on resume


def test_a_sweep_whose_every_cell_fails_raises(wb, tmp_path, monkeypatch):
    fail_generation(wb, monkeypatch, lambda: RuntimeError("boom"))
    with pytest.raises(SweepFailed, match="All 8 cells"):
        run_sweep(small_spec(), out_dir=tmp_path / "run", workbench=wb, progress=False, report=False)
    assert (tmp_path / "run" / "results.csv").is_file()


def test_run_folder_of_another_preset_is_refused(wb, tmp_path):
    out = tmp_path / "run"
    run_sweep(small_spec(), out_dir=out, workbench=wb, progress=False, report=False)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["preset"] = "sd15"
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SweepError, match="another out_dir"):
        run_sweep(small_spec(), out_dir=out, workbench=wb, progress=False, report=False)


KILL_SPEC = {"name": "k", "base": {"prompt": "a neon city", "steps": 2, "size": 64}, "batch": 2,
             "axes": {"controlnet_scale": [0.5, 1.0, 1.5, 2.0, 2.5, 3.0], "seed": [0, 1, 2]}}
KILLABLE = textwrap.dedent("""
    import torch
    from sdrag.sweeps.engine import run_sweep
    torch.set_num_threads(THREADS)  # CPU sums depend on it: the same as the test's process
    run_sweep(SPEC, out_dir=OUT, progress=False, report=False)
""")


def _rows(out):
    return len(list((out / "rows").glob("*.json"))) if (out / "rows").is_dir() else 0


def test_kill_9_at_three_random_moments_then_resume_is_identical(wb, tmp_path):
    # The uninterrupted run and the final resume run here, on the library the killed processes use: only the
    # killed runs pay for a fresh interpreter.
    import torch

    killed, spec = tmp_path / "killed", {**KILL_SPEC, "library": str(wb.library_dir)}
    code = (KILLABLE.replace("SPEC", repr(spec)).replace("OUT", repr(str(killed)))
            .replace("THREADS", str(torch.get_num_threads())))
    a = run_sweep(spec, out_dir=tmp_path / "reference", workbench=wb, progress=False, report=False).table
    per_batch = a.groupby("batch")["seconds"].sum().median()
    rng = random.Random()
    seed = rng.randrange(10**6)
    rng.seed(seed)
    kills = 0
    for _ in range(3):
        # Each round lets at least one new row land, then kills within one more batch's time: mid-batch,
        # mid-write or between batches. A round so takes at most 2 of the 12 batches, so all 3 find work left.
        target = _rows(killed) + 1
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while _rows(killed) < target and proc.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, per_batch))
        kills += proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert kills == 3, f"the sweep finished before the 3rd kill (random seed {seed})"
    b = run_sweep(spec, out_dir=killed, workbench=wb, progress=False, report=False).table
    assert len(b) == 18 and b["cell_id"].is_unique and (b["status"] == "ok").all(), seed
    assert list(a["cell_id"]) == list(b["cell_id"]) and list(a["image_sha256"]) == list(b["image_sha256"]), seed
    assert sorted(p.name for p in (killed / "rows").iterdir()) == sorted(f"{c}.json" for c in b["cell_id"])
    assert not list(killed.rglob("*.tmp"))


def test_summary_comparison_and_cli(wb, tmp_path, capsys):
    from sdrag.app.cli import main
    from sdrag.reports.compare import compare_runs

    a = run_sweep(small_spec(), out_dir=tmp_path / "a", workbench=wb, progress=False, report=False)
    summary = a.summary()
    assert len(summary) == 4 and set(summary["n"]) == {2}
    assert {"edge_f1_mean", "edge_f1_std", "style_similarity_mean"} <= set(summary.columns)
    spec_file = tmp_path / "b.yaml"
    spec_file.write_text(yaml.safe_dump(small_spec(base=dict(BASE, guidance=3.0), name="b")))
    assert main(["sweep", str(spec_file), "--out", str(tmp_path / "b"), "--compare", str(tmp_path / "a")]) == 0
    printed = capsys.readouterr().out
    assert "8 cells (0 failed)" in printed and "report:" in printed
    table = compare_runs([tmp_path / "a", tmp_path / "b"], tmp_path / "cmp.html")
    assert len(table) == 4 and "edge_f1 delta[1-0]" in table
    assert np.isfinite(table["edge_f1 delta[1-0]"]).all()
    page = (tmp_path / "cmp.html").read_text()
    assert "<title>sdrag comparison</title>" in page and '"name":"run","params":[]' in page
    assert (tmp_path / "b" / "compare.html").is_file() and "comparison:" in printed
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"base": BASE, "axes": {"steps": [0]}}))
    assert main(["sweep", str(bad), "--out", str(tmp_path / "bad")]) == 2
    assert main([]) == 2


def test_style_and_block_map_axes(wb, tmp_path):
    styles = wb.library.list()
    spec = {"base": dict(BASE), "batch": 2, "axes": {
        "style": ["auto", styles[0].name, [[styles[0].id, 1], [styles[1].id, 1]]],
        "ip_adapter_scale": [0.8, "style", {"down": {"block_2": 1.0}, "mid": 1.0}],
        "top_k": [1, 2]}}
    run = run_sweep(spec, out_dir=tmp_path / "run", workbench=wb, progress=False, report=False)
    assert len(run.table) == 18 and (run.table["status"] == "ok").all()
    blends = run.table[run.table["references"].map(lambda refs: len(json.loads(refs))) == 2]
    assert len(blends) >= 6  # the fixed blend, and auto retrieval with top_k 2
    assert run.table["image_sha256"].nunique() > 9
    with pytest.raises(sdrag.StyleNotFoundError) as err:
        run_sweep({"base": dict(BASE), "axes": {"style": ["nope-1", "nope-2", styles[0].id]}},
                  out_dir=tmp_path / "bad", workbench=wb, progress=False)
    assert "nope-1" in str(err.value) and "nope-2" in str(err.value)
    assert not list((tmp_path / "bad" / "cells").glob("*.png"))


def test_reproduce_regenerates_every_cell_bit_exactly(wb, tmp_path):
    spec = {"base": dict(BASE), "batch": 2, "axes": {"top_k": [1, 2], "ip_adapter_scale": [0.8, "style"],
                                                     "seed": [0, 1, 2]}}
    run = run_sweep(spec, out_dir=tmp_path / "run", workbench=wb, progress=False, report=False)
    assert (run.out_dir / "sketch.png").is_file()
    for cell in run.table["cell_id"]:
        image, same = sdrag.reproduce(run.out_dir, cell, workbench=wb)
        assert same, cell
        assert image.size == (64, 64)
    with pytest.raises(SweepError, match="No finished cell"):
        sdrag.reproduce(run.out_dir, "0" * 16, workbench=wb)


def test_a_full_disk_stops_the_sweep_clearly_and_keeps_what_was_written(wb, tmp_path, monkeypatch):
    import errno

    import sdrag.files

    out = tmp_path / "run"
    first = run_sweep(small_spec(batch=2), out_dir=out, workbench=wb, progress=False, report=False)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    extended = small_spec(batch=2)
    extended["axes"]["controlnet_scale"] = [0.5, 1.5, 2.0]
    real_fsync, writes = sdrag.files.os.fsync, []

    def fsync(fd):
        writes.append(fd)
        if len(writes) > 4:  # the manifest and the first new batch land, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(sdrag.files.os, "fsync", fsync)
    with pytest.raises(sdrag.StorageError) as err:
        run_sweep(extended, out_dir=out, workbench=wb, progress=False, report=False)
    text = str(err.value)
    assert "No space left on device" in text and "running the same spec again resumes" in text
    assert not list(out.rglob("*.tmp"))
    for name, data in before.items():
        if str(name) not in ("manifest.json", "results.csv", ".sdrag-run.lock"):  # the lock names its latest holder
            assert (out / name).read_bytes() == data
    monkeypatch.setattr(sdrag.files.os, "fsync", real_fsync)
    healed = run_sweep(extended, out_dir=out, workbench=wb, progress=False, report=False)
    assert len(healed.table) == 12 and (healed.table["status"] == "ok").all()
    assert set(first.table["cell_id"]) < set(healed.table["cell_id"])


def test_a_metric_failure_keeps_the_image_and_says_why(wb, tmp_path, monkeypatch):
    import sdrag.runs.metrics

    def broken(*args, **kw):
        raise ValueError("no edges today")

    monkeypatch.setattr(sdrag.runs.metrics, "structure_fidelity", broken)
    run = run_sweep(small_spec(), out_dir=tmp_path / "run", workbench=wb, progress=False, report=False)
    assert (run.table["status"] == "ok").all() and run.table["edge_f1"].isna().all()
    assert run.table["error"].str.contains("metrics failed: ValueError: no edges today").all()


def test_manifest_keeps_every_invocation_and_reproduce_survives_an_extension(wb, tmp_path):
    out = tmp_path / "run"
    first = run_sweep(small_spec(batch=2), out_dir=out, workbench=wb, progress=False, report=False)
    extended = small_spec(batch=2)
    extended["axes"]["seed"] = [0, 1, 2]  # the new seed joins old ones in a batch: batches change shape
    more = run_sweep(extended, out_dir=out, workbench=wb, progress=False, report=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert [h["spec"]["axes"]["seed"] for h in manifest["history"]] == [[0, 1], [0, 1, 2]]
    assert manifest["spec"]["axes"]["seed"] == [0, 1, 2] and manifest["history"][0]["versions"]["torch"]
    old = first.table["cell_id"].iloc[0]
    new = more.table[more.table["seed"] == 2]["cell_id"].iloc[0]
    for cell in (old, new):
        assert sdrag.reproduce(out, cell, workbench=wb)[1], cell


def test_cli_exits_1_with_a_summary_when_every_cell_fails(tmp_path, capsys):
    from PIL import Image

    from sdrag.app.cli import main

    styles, lib = tmp_path / "styles", tmp_path / "lib"
    styles.mkdir()
    Image.new("RGB", (32, 32), "red").save(styles / "plain.png")
    sdrag.Workbench.from_preset("tiny", library_dir=lib).library.ingest(styles, progress=False)
    (styles / "plain.png").unlink()  # the library still lists it: every cell that uses it fails
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text(yaml.safe_dump({"base": BASE, "library": str(lib), "styles": str(tmp_path / "none"),
                                         "axes": {"style": ["plain"], "seed": [0, 1]}}))
    assert main(["sweep", str(spec_file), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "All 2 cells" in err and "cannot be read" in err and "results.csv" in err
    spec_file.write_text(yaml.safe_dump({"base": BASE, "library": str(lib), "axes": {"style": ["nope"]}}))
    assert main(["sweep", str(spec_file), "--out", str(tmp_path / "out2")]) == 2
    assert "Unknown styles in the sweep" in capsys.readouterr().err


def _oom():
    import torch

    return torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")


def test_out_of_memory_retries_with_savers_and_records_it(tmp_path, monkeypatch):
    wb = sdrag.Workbench.from_preset("tiny", library_dir=tmp_path / "lib")  # its savers stay on: not the shared one
    raised = fail_generation(wb, monkeypatch, _oom, seed=0, times=1)
    run = run_sweep(small_spec(batch=2, metrics=False), out_dir=tmp_path / "run", workbench=wb, progress=False,
                    report=False)
    assert (run.table["status"] == "ok").all() and raised == [{"attention_slicing": False, "vae_tiling": False,
                                                                "cpu_offload": False}]
    memory = [json.loads(m) for m in run.table.sort_values("batch")["memory"]]
    assert memory[0] == {"attention_slicing": True, "vae_tiling": True, "cpu_offload": False,
                         "oom_fallback": ["attention_slicing+vae_tiling"]}
    assert memory[-1]["attention_slicing"] and memory[-1]["oom_fallback"] == []  # later batches keep the savers
    assert len(wb.generator.ip_processors()) == 16  # IP-Adapter still on every cross-attention layer
    fresh = sdrag.Workbench.from_preset("tiny", library_dir=tmp_path / "lib")
    cell = run.table.sort_values("batch")["cell_id"].iloc[0]
    assert sdrag.reproduce(run.out_dir, cell, workbench=fresh)[1]  # the recorded savers are applied again


def test_out_of_memory_on_every_rung_fails_only_that_cell(tmp_path, monkeypatch):
    wb = sdrag.Workbench.from_preset("tiny", library_dir=tmp_path / "lib")
    raised = fail_generation(wb, monkeypatch, _oom, seed=1)
    spec = {"base": BASE, "batch": 1, "metrics": False, "axes": {"seed": [0, 1]}}
    run = run_sweep(spec, out_dir=tmp_path / "run", workbench=wb, progress=False, report=False)
    # Every rung the device can use, once: on CPU the ladder ends before CPU offload (nothing to offload to).
    assert [m["attention_slicing"] for m in raised] == [False, True] and not any(m["cpu_offload"] for m in raised)
    failed = run.table.set_index("seed").loc[1]
    assert failed["status"] == "failed" and failed["error"].startswith("MemoryExhaustedError: Out of GPU memory")
    assert "Fix: lower size" in failed["error"] and run.table.set_index("seed").loc[0, "status"] == "ok"


def test_a_folder_made_before_the_retrieval_knob_resumes_with_dense_and_says_how(wb, tmp_path):
    out = tmp_path / "run"
    spec = small_spec(base=dict(BASE, retrieval="dense"), metrics=False)
    first = run_sweep(spec, out_dir=out, workbench=wb, progress=False, report=False)
    # Rewrite the folder as an older sdrag wrote it: no `retrieval` in rows, table or resolved parameters.
    for path in (out / "rows").glob("*.json"):
        row = json.loads(path.read_text())
        row.pop("retrieval")
        resolved = json.loads(row["resolved"])
        resolved.pop("retrieval")
        row["resolved"] = json.dumps(resolved)
        path.write_text(json.dumps(row))
    table = (out / "results.csv").read_text().splitlines()
    assert "retrieval" in table[0]
    again = run_sweep(spec, out_dir=out, workbench=wb, progress=False, report=False)
    assert sorted(again.table["cell_id"]) == sorted(first.table["cell_id"])  # the same cells, none remade
    assert again.manifest["rows_set_aside"] == [] and (again.table["retrieval"] == "dense").all()
    with pytest.raises(SweepError, match="add it to the spec's base to resume them"):
        run_sweep(small_spec(metrics=False), out_dir=out, workbench=wb, progress=False, report=False)
