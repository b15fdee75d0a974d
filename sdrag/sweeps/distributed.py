"""Sweeps on Ray: one actor per GPU (or CPU) holds a Workbench for the whole sweep and is fed the driver's jobs.

The driver (`run_sweep`'s process) keeps everything that touches shared state: it retrieves the styles (the only
chroma client), prepares each batch's job with its style images and writes every row. Workers only generate, so
a worker killed mid-batch loses nothing but that batch, which goes to another worker.
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ..errors import SdragError
from ..files import image_bytes
from .work import Job, Outcome, Shipped, do_job

if TYPE_CHECKING:
    from PIL import Image

    from ..generation.workbench import Workbench

# A batch that took its worker down this many times is recorded as failed instead of killing a third.
MAX_LOSSES = 2
# Jobs prepared ahead of the workers, per worker: enough to keep one size together on one worker.
LOOKAHEAD = 4
# Jobs sent to a worker at once: the second waits in its queue, so the worker goes straight on to it while the
# driver records the first (a worker that dies loses only the one it was making; the queued one goes back).
IN_FLIGHT = 2
START_TIMEOUT_S = float(os.environ.get("SDRAG_RAY_START_TIMEOUT", 1800))


class RayEngineError(SdragError):
    """Ray could not be reached or started, or a worker could not load the models."""


class Worker:
    """A Ray actor: one Workbench (one model load) that generates the jobs it is sent."""

    def __init__(self, sources: Any, device: str, memory: dict, sketch_png: bytes, tolerance: int | None,
                 threads: int):
        """Keep what every job needs; models load in `start`, so a failure there names this node."""
        import torch

        # The CPUs Ray gave this worker; the local engine's images match on CPU when its thread count is the same.
        torch.set_num_threads(threads)
        self.args = (sources, device, memory)
        self.sketch, self.tolerance = sketch_png, tolerance
        self.wb: Workbench | None = None

    def start(self) -> dict:
        """Load the models; return where this worker runs and the sha256 of the weights it loaded."""
        from ..generation.workbench import Workbench
        from ..images import load_image
        from ..models.provenance import device_info

        sources, device, memory = self.args
        where = {"node": platform.node(), "ip": _node_ip(), "pid": os.getpid()}
        try:
            self.wb = Workbench(sources, library_dir=os.devnull, device=device, memory=memory).load()
            self.sketch = load_image(self.sketch)
            where["weights"] = self.wb.weight_hashes()
            where["device"] = device_info(self.wb.device, self.wb.dtype)
        except Exception as exc:  # noqa: BLE001 - whatever stops the load, the driver must say which node
            where["error"] = f"{type(exc).__name__}: {exc}"
        return where

    def run(self, job: Job) -> Outcome:
        """Generate one job."""
        return do_job(self.wb, self.sketch, job, self.tolerance)


def _node_ip() -> str:
    import ray

    return ray.util.get_node_ip_address()


@dataclass
class _Slot:
    """One worker as the driver sees it: its actor, where it runs, what it did."""

    number: int
    actor: Any
    started: Any  # the start() call's reference until it answered
    info: dict = field(default_factory=dict)
    size: tuple[int, int] | None = None  # the output size of the last job it was given
    in_flight: list = field(default_factory=list)  # its jobs' references, in the order it makes them
    free_at: float = 0.0  # when it finished its last job
    batches: int = 0
    cells: int = 0
    busy_s: float = 0.0
    lost: int = 0

    def finished(self, job: Job, submitted: float, ref: Any) -> None:
        """Count a job it made: busy from when it could start it (sent, and the one before done) until now."""
        now = time.perf_counter()
        self.busy_s += now - max(submitted, self.free_at)
        self.free_at = now
        self.batches, self.cells = self.batches + 1, self.cells + len(job.chunk)
        self.in_flight.remove(ref)

    def stats(self) -> dict:
        """Its figures for the manifest and the summary."""
        device = self.info.get("device") or {}
        return {"worker": self.number, "node": self.info.get("node", ""), "ip": self.info.get("ip", ""),
                "device": device.get("gpu") or device.get("device", ""), "threads": device.get("threads"),
                "batches": self.batches, "cells": self.cells, "busy_s": round(self.busy_s, 3), "lost": self.lost}


@dataclass
class _Flow:
    """One run's jobs as the driver tracks them: still to prepare, prepared, sent (reference -> slot, job, when)."""

    source: Iterator[Job] | None
    pending: deque[Job] = field(default_factory=deque)
    running: dict[Any, tuple[_Slot, Job, float]] = field(default_factory=dict)
    losses: dict[int, int] = field(default_factory=dict)  # batch number -> workers it was on when they died


class RayEngine:
    """Spreads a sweep's jobs over Ray actors; outcomes come back to the driver, which records them."""

    name = "ray"

    def __init__(self, settings: dict, wb: Workbench, sketch: Image.Image, tolerance: int | None):
        """Start the workers on the Ray this process is connected to (see `started`); they load their models
        while the driver prepares."""
        import ray

        self.ray, self.settings, self.wb = ray, settings, wb
        self.count, self.gpus, cpus = _worker_shape(ray, settings)
        device = "cuda" if self.gpus else "cpu"
        actor = ray.remote(Worker).options(num_cpus=cpus, num_gpus=self.gpus, max_restarts=0)
        self._new_actor = lambda: actor.remote(wb.sources, device, wb.memory.to_dict(), image_bytes(sketch),
                                               tolerance, cpus)
        self.retired: list[_Slot] = []
        self._images: dict[str, Shipped] = {}  # style id -> its image bytes, read once per sweep
        self._weights: dict | None = None
        self.slots: list[_Slot] = [self._slot(n) for n in range(self.count)]

    @classmethod
    @contextlib.contextmanager
    def started(cls, settings: dict, wb: Workbench, sketch: Image.Image,
                tolerance: int | None) -> Iterator[RayEngine]:
        """The engine on a connected Ray (joined at `settings["address"]`, or started here and shut down after)."""
        ray = _import_ray()
        started_here = not ray.is_initialized()
        if started_here:
            _connect(ray, settings["address"])
        engine = None
        try:
            engine = cls(settings, wb, sketch, tolerance)
            yield engine
        finally:
            if engine is not None:
                engine.close()
            if started_here:
                ray.shutdown()

    def run(self, jobs: Iterable[Job], record: Callable[[Job, Outcome], None]) -> None:
        """Keep every worker fed (IN_FLIGHT jobs each, of its output size first) until every job is recorded."""
        flow = _Flow(iter(jobs))
        while True:
            self._fill(flow)
            self._feed(flow)
            if not flow.running and not flow.pending and flow.source is None:
                return
            ref = self._next_ready(flow)
            starting = next((slot for slot in self.slots if slot.started == ref), None)
            if starting is not None:
                self._check_started(starting, ref)
                continue
            slot, job, submitted = flow.running[ref]
            try:
                outcome = self.ray.get(ref)
            except self.ray.exceptions.RayActorError:
                self._lose(slot, flow, record)
                continue
            del flow.running[ref]
            slot.finished(job, submitted, ref)
            # The worker gets its next job before the driver writes this one's rows: it never waits on the disk.
            self._feed(flow)
            record(job, outcome)

    def workers(self) -> list[dict]:
        """Per-worker figures (workers that died included): where, batches, cells, busy seconds, jobs lost."""
        return [s.stats() for s in sorted([*self.retired, *self.slots], key=lambda s: s.number)]

    def close(self) -> None:
        """Stop every worker (a Ray this process joined keeps running)."""
        for slot in self.slots:
            with contextlib.suppress(Exception):
                self.ray.kill(slot.actor)

    # -- the steps --------------------------------------------------------------------------------------------

    def _slot(self, number: int) -> _Slot:
        actor = self._new_actor()
        return _Slot(number, actor, actor.start.remote())

    def _fill(self, flow: _Flow) -> None:
        """Prepare jobs ahead (the driver retrieves while workers generate); the source is dropped once it ran out."""
        while flow.source is not None and len(flow.pending) < LOOKAHEAD * len(self.slots):
            job = next(flow.source, None)
            if job is None:
                flow.source = None
                return
            flow.pending.append(job)

    def _feed(self, flow: _Flow) -> None:
        """Give each started worker jobs up to IN_FLIGHT: the idle ones first, so no worker waits while another
        has a job queued."""
        for depth in range(IN_FLIGHT):
            for slot in self.slots:
                if slot.started is None and len(slot.in_flight) == depth and flow.pending:
                    job = _pick(flow.pending, slot.size)
                    ref = slot.actor.run.remote(self._shipped(job))
                    slot.size = job.size
                    slot.in_flight.append(ref)
                    flow.running[ref] = (slot, job, time.perf_counter())

    def _next_ready(self, flow: _Flow) -> Any:
        """The next job or worker start to answer; RayEngineError if no worker starts in time."""
        waiting = [*flow.running, *(slot.started for slot in self.slots if slot.started is not None)]
        ready, _ = self.ray.wait(waiting, num_returns=1, timeout=None if flow.running else START_TIMEOUT_S)
        if not ready:
            raise RayEngineError(f"No Ray worker started within {START_TIMEOUT_S:g} s (the cluster may lack the CPUs"
                                 " or GPUs asked for). Fix: check `ray status`, or ask for fewer workers.")
        return ready[0]

    def _shipped(self, job: Job) -> Job:
        """`job` with its style images inside: a worker on another node cannot read the library's files."""
        refs = []
        for style, weight in job.references:
            if style.id not in self._images:
                self._images[style.id] = Shipped.of(style)
            refs.append((self._images[style.id], weight))
        return replace(job, references=refs)

    def _check_started(self, slot: _Slot, ref: Any) -> _Slot:
        """The slot of a worker that answered start(); RayEngineError if it could not load the models."""
        slot.started = None
        try:
            slot.info = self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:
            slot.info = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0]}"}
        where = slot.info.get("node") or "an unknown node"
        if slot.info.get("error"):
            raise RayEngineError(f"Ray worker {slot.number} on {where} ({slot.info.get('ip', '?')}) could not load"
                                 f" the models: {slot.info['error'].rstrip('.')}. Fix: check that node's sdrag"
                                 " install, weights and GPU (`python -m sdrag demo` there), or leave it out of the"
                                 " cluster.")
        if self._weights is None:
            self._weights = _fingerprint(self.wb.weight_hashes())
        if _fingerprint(slot.info["weights"]) != self._weights:
            raise RayEngineError(f"Ray worker {slot.number} on {where} loaded other weights than this process (their"
                                 " sha256 differ), so its images would not be this sweep's. Fix: give every node"
                                 " the same model files (the same preset, revisions and cache).")
        return slot

    def _lose(self, slot: _Slot, flow: _Flow, record: Callable[[Job, Outcome], None]) -> None:
        """A worker died: the job it was making is retried elsewhere (or recorded failed once it took down
        MAX_LOSSES workers), the one queued behind it goes back unharmed, and a replacement starts if there is
        work it could take (a model load can cost minutes on a GPU)."""
        jobs = [flow.running.pop(ref)[1] for ref in slot.in_flight if ref in flow.running]
        if jobs:
            making, queued = jobs[0], jobs[1:]
            slot.lost += 1
            flow.losses[making.batch_no] = flow.losses.get(making.batch_no, 0) + 1
            flow.pending.extendleft(reversed(queued))
            if flow.losses[making.batch_no] >= MAX_LOSSES:
                record(making, Outcome(error=f"WorkerDied: the Ray worker making this batch died {MAX_LOSSES}"
                                             " times (killed, or out of host memory)"))
            else:
                flow.pending.appendleft(making)
        slot.in_flight.clear()
        self.slots.remove(slot)
        self.retired.append(slot)
        if flow.pending or flow.source is not None or not self.slots:
            self.slots.append(self._slot(1 + max(s.number for s in [*self.slots, *self.retired])))


def _fingerprint(weights: dict) -> dict:
    """What must match between driver and worker: each component's files and their sha256 (a node's cache may
    live at another path)."""
    return {name: sorted((f.get("file"), f.get("sha256")) for f in files) for name, files in weights.items()}


def _pick(pending: deque[Job], size: tuple[int, int] | None) -> Job | None:
    """The first pending job of `size` (a worker's warm shape), else the first pending job."""
    for job in pending:
        if job.size == size:
            pending.remove(job)
            return job
    return pending.popleft() if pending else None


def _worker_shape(ray: Any, settings: dict) -> tuple[int, float, int]:
    """How many workers, and the GPUs and CPUs of each: by default one per GPU group, else one per CPU (CPU workers
    share the CPUs out); refused if the cluster cannot hold them (Ray would wait for them forever)."""
    resources = ray.cluster_resources()
    gpus_each = float(settings["gpus_per_worker"])
    has_gpus = resources.get("GPU", 0) >= gpus_each > 0
    capacity = int(resources.get("GPU", 0) // gpus_each) if has_gpus else int(resources.get("CPU", 0))
    count = settings["workers"] or capacity
    cpus = int(resources.get("CPU", 0))
    if count < 1 or count > capacity or count > cpus:
        kind = f"{gpus_each:g} GPU(s) and 1 CPU each" if has_gpus else "1 CPU each"
        raise RayEngineError(f"The sweep asks for {count} Ray workers with {kind}, but the cluster has"
                             f" {resources.get('GPU', 0):g} GPU(s) and {cpus} CPU(s). Fix: ask for at most"
                             f" {min(capacity, cpus)} workers, or add nodes.")
    return (count, gpus_each, 1) if has_gpus else (count, 0.0, max(1, cpus // count))


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RayEngineError("engine='ray' needs Ray, which is not installed. Fix: pip install 'sdrag[ray]'"
                             " (or run the sweep with the local engine).") from None
    return ray


def _connect(ray: Any, address: str | None) -> None:
    """Join the cluster at `address`, or start a Ray on this machine (no dashboard)."""
    try:
        if address is None:
            ray.init(include_dashboard=False, logging_level="WARNING", log_to_driver=False)
        else:
            ray.init(address=address, logging_level="WARNING", log_to_driver=False)
    except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError...
        where = f"the Ray cluster at {address!r}" if address else "a local Ray"
        raise RayEngineError(f"Could not reach {where}: {type(exc).__name__}: {str(exc).splitlines()[0]}. Fix:"
                             " start one with `ray start --head` and pass its address (or 'auto'), or leave the"
                             " address out to start one here.") from None
