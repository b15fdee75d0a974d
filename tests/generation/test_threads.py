"""A Workbench called from several threads at once gives each call the image it would get alone."""

import threading

import numpy as np
import pytest
from conftest import FAST

# Settings that all touch the pipeline's shared state (scheduler, IP-Adapter scales, prompt embeddings).
CALLS = [
    {"seed": 0}, {"seed": 1, "scheduler": "ddim"}, {"ip_adapter_scale": "style", "scheduler": "euler_a"},
    {"ip_adapter_scale": 0.0, "guidance": 1.0}, {"prompt": "a pencil drawing", "scheduler": "dpm++2m"},
    {"controlnet_scale": 0.0, "ip_adapter_scale": "style+layout", "scheduler": "pndm"},
]


def _run(wb, sketch, kw):
    kw = {"prompt": "a neon city", **FAST, **kw}
    return np.asarray(wb.run(sketch, kw.pop("prompt"), **kw).image)


@pytest.mark.parametrize("threads", [2, 3, 4, 6])
def test_concurrent_runs_equal_sequential_ones(wb, sketch, threads):
    alone = [_run(wb, sketch, kw) for kw in CALLS]
    together: list = [None] * len(CALLS)
    errors: list = []
    start = threading.Barrier(threads)

    def worker(indices):
        try:
            start.wait(10)
            for i in indices:
                together[i] = _run(wb, sketch, CALLS[i])
        except Exception as exc:  # noqa: BLE001 - reported below, with the thread's own error
            errors.append(exc)

    pool = [threading.Thread(target=worker, args=(range(t, len(CALLS), threads),)) for t in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(120)
    assert not errors
    for i, (a, b) in enumerate(zip(alone, together)):
        assert np.array_equal(a, b), CALLS[i]


def test_unload_and_memory_changes_wait_for_a_running_call(tmp_path, sketch):
    import sdrag

    bench = sdrag.Workbench.from_preset("tiny", library_dir=tmp_path / "lib")
    bench.library.add(sdrag.SAMPLE_SKETCH, name="house")
    reference = np.asarray(bench.run(sketch, "x", style="house", **FAST).image)
    inside, results = threading.Event(), []

    def slow_progress(step, total):
        inside.set()
        return True

    def call():
        results.append(np.asarray(bench.run(sketch, "x", style="house", progress=slow_progress,
                                            **{**FAST, "steps": 2}).image))

    worker = threading.Thread(target=call)
    worker.start()
    assert inside.wait(30)
    bench.unload()  # waits for the call: the models it uses are not pulled away mid-run
    worker.join(60)
    assert results and np.array_equal(results[0], reference)
    assert "not loaded yet" in repr(bench)
