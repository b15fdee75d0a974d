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

# 16 cells in 8 batches of 2 seeds, two output sizes (workers keep to one size where they can).
SPEC = {"name": "ray", "base": {"prompt": "a neon city", "steps": 2}, "batch": 2,
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

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
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


def test_two_ray_workers_make_the_local_engines_images_and_say_who_made_them(wb, ray_address, reference,
                                                                             tmp_path, capsys):
    run = run_sweep(SPEC, out_dir=tmp_path / "run", workbench=wb, engine="ray", workers=2, progress=False,
                    report=False)
    _same_images(run.table, reference)
    workers = run.workers()
    assert list(workers["worker"]) == [0, 1] and workers["cells"].sum() == 16 and (workers["lost"] == 0).all()
    assert (workers["batches"] > 0).all() and (workers["cells_per_s"] > 0).all() and set(workers["device"]) == {"cpu"}
    manifest = json.loads((run.out_dir / "manifest.json").read_text())
    assert manifest["engine"]["name"] == "ray" and manifest["spec"]["engine"]["workers"] == 2
    rows = [json.loads(p.read_text()) for p in (run.out_dir / "rows").iterdir()]
    assert all(r["retrieved"] != "[]" and r["references"] for r in rows)  # the driver retrieved, rows say what
    # Asking for more workers than the cluster can hold is refused at once, not left waiting for CPUs.
    with pytest.raises(RayEngineError, match="asks for 3 Ray workers.*at most 2"):
        run_sweep(SPEC, out_dir=tmp_path / "more", workbench=wb, engine="ray", workers=3, progress=False)
    with pytest.raises(SweepError, match="engine workers must be a whole number"):
        run_sweep({**SPEC, "engine": {"name": "ray", "workers": 0}}, out_dir=tmp_path / "bad", workbench=wb)


def test_a_worker_killed_mid_batch_has_its_batch_made_elsewhere(wb, ray_address, reference, tmp_path):
    killed = []

    def kill_one_busy_worker():
        deadline = time.time() + 120
        while not killed and time.time() < deadline:
            busy = _worker_pids()
            if busy:
                os.kill(busy[0], signal.SIGKILL)
                killed.append(busy[0])
            time.sleep(0.002)

    killer = threading.Thread(target=kill_one_busy_worker, daemon=True)
    killer.start()
    run = run_sweep(SPEC, out_dir=tmp_path / "run", workbench=wb, engine="ray", workers=2, progress=False,
                    report=False)
    killer.join()
    assert killed
    _same_images(run.table, reference)
    assert sorted(p.name for p in (run.out_dir / "rows").iterdir()) == sorted(f"{c}.json" for c in reference.index)
    workers = run.workers()
    # The dead worker lost its batch; a replacement joined; every cell was made exactly once.
    assert workers["lost"].sum() == 1 and len(workers) == 3 and workers["cells"].sum() >= 16


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


BROKEN_WORKERS = textwrap.dedent("""
    import ray
    # A Ray that advertises a GPU this machine does not have: its worker is given CUDA and cannot load there.
    ray.init(num_cpus=1, num_gpus=1, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    from sdrag.sweeps.distributed import RayEngineError
    from sdrag.sweeps.engine import run_sweep
    try:
        run_sweep(SPEC, out_dir=OUT, engine="ray", workers=1, progress=False, report=False)
    except RayEngineError as exc:
        print(exc)
""")


def test_a_worker_that_cannot_load_the_models_is_one_error_naming_its_node(wb, tmp_path):
    spec = {**SPEC, "library": str(wb.library_dir)}
    code = BROKEN_WORKERS.replace("SPEC", repr(spec)).replace("OUT", repr(str(tmp_path / "run")))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(f"Ray worker 0 on {platform.node()} (") and "could not load the models" in done.stdout
    assert "no CUDA GPU. Fix: check that node's sdrag install" in done.stdout and "Traceback" not in done.stdout
    assert not list((tmp_path / "run" / "rows").glob("*.json"))
