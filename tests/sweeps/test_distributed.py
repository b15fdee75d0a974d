"""Sweeps on Ray (a local Ray with 2 CPU workers, tiny preset): the same images as the local engine, a worker
killed mid-batch, the driver killed and the run resumed, and runs that switch engine between invocations."""

import json
import os
import platform
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pandas as pd
import pytest
import yaml

from sdrag.app.cli import main
from sdrag.runs.folder import load_run
from sdrag.runs.spec import SweepError
from sdrag.sweeps.distributed import RayEngineError
from sdrag.sweeps.engine import run_sweep

# 16 cells in 8 batches of 2 seeds, two output sizes (workers keep to one size where they can). The test Ray
# advertises a GPU this machine lacks (for the worker that cannot load), so these workers ask for none.
SPEC = {"name": "ray", "base": {"prompt": "a neon city", "steps": 2}, "batch": 2, "engine": {"gpus_per_worker": 0},
        "axes": {"size": [64, 96], "controlnet_scale": [0.5, 1.5], "seed": [0, 1, 2, 3]}}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Each of 2 CPU workers on 2 cores gets 1 thread, and CPU sums depend on the thread count: the local engine
    here uses 1 thread too, as it would on a machine with one core per worker."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ray_address():
    import ray

    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def reference(wb, tmp_path_factory):
    """The spec run by the local engine: what every Ray run must reproduce bit for bit."""
    run = run_sweep(SPEC, out_dir=tmp_path_factory.mktemp("local"), workbench=wb, progress=False, report=False)
    return run.table.set_index("cell_id")["image_sha256"]


def _same_images(table: pd.DataFrame, reference: pd.Series) -> None:
    assert len(table) == len(reference) and table["cell_id"].is_unique and (table["status"] == "ok").all()
    assert table.set_index("cell_id")["image_sha256"].to_dict() == reference.to_dict()


def _rows(out) -> int:
    return len(list((out / "rows").glob("*.json"))) if (out / "rows").is_dir() else 0


def _worker_pids(method: str = "run") -> list[int]:
    """Ray actor processes running `Worker.<method>` now (Ray titles a busy actor process 'ray::Class.method')."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                title = fh.read()
        except (OSError, ValueError):
            continue
        if title.startswith((f"ray::Worker.{method}" if method else "ray::Worker").encode()):
            pids.append(int(entry))
    return pids


def _kill_one_busy_worker(killed: list[int]) -> None:
    deadline = time.time() + 120
    while not killed and time.time() < deadline:
        busy = _worker_pids()
        if busy:
            os.kill(busy[0], signal.SIGKILL)
            killed.append(busy[0])
        time.sleep(0.002)


def test_two_ray_workers_one_killed_mid_batch_make_the_local_engines_images_and_say_who_made_them(
        wb, ray_address, reference, tmp_path):
    killed: list[int] = []
    killer = threading.Thread(target=_kill_one_busy_worker, args=(killed,), daemon=True)
    killer.start()
    run = run_sweep(SPEC, out_dir=tmp_path / "run", workbench=wb, engine="ray", workers=2, progress=False,
                    report=False)
    killer.join()
    assert killed
    # Bit for bit the local engine's images, the batch the dead worker was making included, each cell once.
    _same_images(run.table, reference)
    assert sorted(p.name for p in (run.out_dir / "rows").iterdir()) == sorted(f"{c}.json" for c in reference.index)
    workers = run.workers()
    # The dead worker lost its batch and a replacement joined; every worker says where it ran and how fast.
    assert list(workers["worker"]) == [0, 1, 2] and workers["lost"].sum() == 1 and workers["cells"].sum() >= 16
    # (The replacement may still be loading when the last batch is recorded: then it made nothing, and says so.)
    made = workers[workers["cells"] > 0]
    assert len(made) and (made["cells_per_s"] > 0).all() and set(made["device"]) == {"cpu"}
    manifest = json.loads((run.out_dir / "manifest.json").read_text())
    assert manifest["engine"]["name"] == "ray" and manifest["spec"]["engine"]["workers"] == 2
    rows = [json.loads(p.read_text()) for p in (run.out_dir / "rows").iterdir()]
    assert all(r["retrieved"] != "[]" and r["references"] for r in rows)  # the driver retrieved, rows say what
    # Asking for more workers than the cluster can hold is refused at once, not left waiting for CPUs.
    with pytest.raises(RayEngineError, match="asks for 3 Ray workers.*at most 2"):
        run_sweep(SPEC, out_dir=tmp_path / "more", workbench=wb, engine="ray", workers=3, progress=False)
    with pytest.raises(SweepError, match="engine workers must be a whole number"):
        run_sweep({**SPEC, "engine": {"name": "ray", "workers": 0}}, out_dir=tmp_path / "bad", workbench=wb)


DRIVER = textwrap.dedent("""
    from sdrag.sweeps.engine import run_sweep
    run_sweep(SPEC, out_dir=OUT, engine="ray", ray_address=ADDRESS, workers=2, progress=False, report=False)
""")


def test_a_killed_driver_resumes_locally_and_a_local_start_finishes_on_ray(wb, ray_address, reference, tmp_path,
                                                                           capsys):
    spec = {**SPEC, "library": str(wb.library_dir)}
    out = tmp_path / "ray-then-local"
    code = DRIVER.replace("SPEC", repr(spec)).replace("OUT", repr(str(out))).replace("ADDRESS", repr(ray_address))
    driver = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 180
    while _rows(out) < 4 and driver.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    assert driver.poll() is None, driver.stderr.read().decode()[-2000:]
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    assert 4 <= _rows(out) < 16
    # Its workers went with it (Ray ends the actors of a dead driver), and the local engine finishes the run.
    deadline = time.time() + 30
    while _worker_pids("") and time.time() < deadline:
        time.sleep(0.1)
    assert not _worker_pids("")
    resumed = run_sweep(spec, out_dir=out, workbench=wb, progress=False, report=False)
    _same_images(resumed.table, reference)
    assert resumed.workers()["worker"].tolist() == ["local"]
    # The other way round: half the seeds locally, then the whole spec on Ray makes only the missing cells.
    out = tmp_path / "local-then-ray"
    run_sweep({**SPEC, "axes": {**SPEC["axes"], "seed": [0, 1]}}, out_dir=out, workbench=wb, progress=False,
              report=False)
    before = {p.name: p.stat().st_mtime_ns for p in (out / "rows").iterdir()}
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    assert main(["sweep", str(spec_file), "--out", str(out), "--ray", ray_address, "--workers", "2"]) == 0
    printed = capsys.readouterr().out
    assert "16 cells (0 failed)" in printed and "cells_per_s" in printed
    run = load_run(out)
    _same_images(run.table, reference)
    assert run.workers()["cells"].sum() == 8  # the 4 missing batches only
    assert all((out / "rows" / name).stat().st_mtime_ns == t for name, t in before.items())


def test_a_worker_that_cannot_load_the_models_is_one_error_naming_its_node(wb, ray_address, tmp_path):
    # The worker is given the GPU the test Ray advertises, and there is no CUDA here: its load fails.
    with pytest.raises(RayEngineError) as caught:
        run_sweep(SPEC, out_dir=tmp_path / "run", workbench=wb, engine="ray", workers=1, gpus_per_worker=1,
                  progress=False, report=False)
    message = str(caught.value)
    assert message.startswith(f"Ray worker 0 on {platform.node()} (") and "could not load the models" in message
    assert "no CUDA GPU" in message and "Fix: check that node's sdrag install" in message
    assert "Traceback" not in message and "\n" not in message
    assert not list((tmp_path / "run" / "rows").glob("*.json"))
    import ray

    assert ray.is_initialized()  # a Ray the sweep joined is left running


def test_workers_keep_to_one_output_size_and_fit_the_cluster():
    from collections import deque
    from types import SimpleNamespace

    from sdrag.sweeps.distributed import _pick, _worker_shape

    jobs = deque(SimpleNamespace(size=s, n=n) for n, s in enumerate([(64, 64), (96, 96), (64, 64), (96, 96)]))
    # A worker warm at 96 px takes the next 96 px job; a new worker (no size yet) takes the first in line.
    assert _pick(jobs, (96, 96)).n == 1 and _pick(jobs, None).n == 0 and _pick(jobs, (96, 96)).n == 3
    assert _pick(jobs, (96, 96)).n == 2 and _pick(jobs, (64, 64)) is None

    def cluster(**resources):
        return SimpleNamespace(cluster_resources=lambda: resources)

    settings = {"workers": None, "gpus_per_worker": 1}
    assert _worker_shape(cluster(CPU=16, GPU=8), settings) == (8, 1.0, 1)  # one per GPU
    assert _worker_shape(cluster(CPU=16, GPU=8), {**settings, "gpus_per_worker": 2}) == (4, 2.0, 1)
    assert _worker_shape(cluster(CPU=8), settings) == (8, 0.0, 1)  # no GPU: one per CPU
    assert _worker_shape(cluster(CPU=8), {**settings, "workers": 2}) == (2, 0.0, 4)  # the CPUs shared out
    assert _worker_shape(cluster(CPU=8, GPU=8), {**settings, "gpus_per_worker": 0}) == (8, 0.0, 1)
    with pytest.raises(RayEngineError, match="asks for 9 Ray workers with 1 GPU"):
        _worker_shape(cluster(CPU=16, GPU=8), {**settings, "workers": 9})


def test_workers_are_held_to_the_drivers_weights_by_content_not_by_path():
    from sdrag.sweeps.distributed import _fingerprint

    driver = {"unet": [{"file": "unet.safetensors", "sha256": "aa", "path": "/home/me/.cache/unet.safetensors"}]}
    moved = {"unet": [{"file": "unet.safetensors", "sha256": "aa", "path": "/data/hf/unet.safetensors"}]}
    other = {"unet": [{"file": "unet.safetensors", "sha256": "bb", "path": "/home/me/.cache/unet.safetensors"}]}
    assert _fingerprint(driver) == _fingerprint(moved) and _fingerprint(driver) != _fingerprint(other)


def test_each_worker_has_a_second_job_queued_and_a_dead_one_loses_only_the_job_it_was_making():
    from itertools import count
    from types import SimpleNamespace

    from sdrag.sweeps.distributed import MAX_LOSSES, RayEngine, _Flow, _Slot
    from sdrag.sweeps.work import Job

    refs = count()

    def actor():
        return SimpleNamespace(start=SimpleNamespace(remote=lambda: "starting"),
                               run=SimpleNamespace(remote=lambda job: (next(refs), job.batch_no)))

    engine = RayEngine.__new__(RayEngine)
    engine.slots, engine.retired, engine._images, engine._new_actor = [], [], {}, actor
    a, b = _Slot(0, actor(), None), _Slot(1, actor(), None)
    engine.slots = [a, b]
    params = SimpleNamespace(width_height=(64, 64))
    flow = _Flow(None)
    flow.pending.extend(Job(n, [n], [n], params, []) for n in range(5))
    engine._feed(flow)
    # Idle workers are served first, then each gets one more to go on to; the fifth job waits.
    assert [r[1] for r in a.in_flight] == [0, 2] and [r[1] for r in b.in_flight] == [1, 3]
    assert [j.batch_no for j in flow.pending] == [4]
    a.finished(flow.running.pop(a.in_flight[0])[1], 0.0, a.in_flight[0])
    engine._feed(flow)
    assert [r[1] for r in a.in_flight] == [2, 4] and a.batches == 1
    recorded = []
    engine._lose(a, flow, lambda job, outcome: recorded.append((job.batch_no, outcome.error)))
    # Job 2 was being made: it goes back first, counted once against it; job 4 was only queued.
    assert [j.batch_no for j in flow.pending] == [2, 4] and flow.losses == {2: 1} and a.lost == 1
    assert a in engine.retired and [s.number for s in engine.slots] == [1, 2] and not recorded
    assert set(flow.running) == set(b.in_flight)
    # A job that took down MAX_LOSSES workers is recorded failed instead of killing another.
    flow.pending.clear()
    engine.slots[1].started = None
    engine._feed(flow)
    flow.pending.extend(Job(n, [n], [n], params, []) for n in (2, 4))
    engine._feed(flow)
    dead = engine.slots[1]
    engine._lose(dead, flow, lambda job, outcome: recorded.append((job.batch_no, outcome.error)))
    assert MAX_LOSSES == 2 and recorded == [(2, "WorkerDied: the Ray worker making this batch died 2 times"
                                                " (killed, or out of host memory)")]
    assert [j.batch_no for j in flow.pending] == [4] and [s.number for s in engine.slots] == [1, 3]
    # With nothing left to prepare or send, a worker that dies is not replaced while another lives...
    flow.pending.clear()
    engine._lose(engine.slots[1], flow, recorded.append)
    assert engine.slots == [b]
    # ...and when the last one dies with jobs, they go back and a worker starts for them.
    engine._lose(b, flow, recorded.append)
    assert [j.batch_no for j in flow.pending] == [1, 3] and [s.number for s in engine.slots] == [4]
    assert not flow.running and len(recorded) == 1


def test_out_of_memory_in_a_worker_takes_the_local_ladder_and_its_outcome_records_it(wb, monkeypatch):
    # The actor's class in this process: what a Ray worker runs for a job, without Ray in between.
    import torch
    from conftest import fail_generation

    import sdrag
    from sdrag.files import image_bytes
    from sdrag.generation.params import Params
    from sdrag.images import load_image
    from sdrag.sweeps.distributed import Worker
    from sdrag.sweeps.work import Job

    worker = Worker(wb.sources, "cpu", wb.memory.to_dict(), image_bytes(load_image(sdrag.SAMPLE_SKETCH)), None,
                    torch.get_num_threads())
    where = worker.start()
    assert "error" not in where and where["weights"] == wb.weight_hashes() and where["node"] == platform.node()
    raised = fail_generation(worker.wb, monkeypatch,
                             lambda: torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)"), times=1)
    p = Params(prompt="a neon city", steps=2, size=64, seed=[0, 1]).resolved()
    _, references = wb.resolve_style(p.prompt, p)
    outcome = worker.run(Job(0, [0, 1], [0, 1], p, references))
    assert not outcome.error and len(outcome.images) == 2 and len(raised) == 1
    assert outcome.memory["oom_fallback"] == ["attention_slicing+vae_tiling"] and outcome.memory["vae_tiling"]
