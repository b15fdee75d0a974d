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
    size: tuple[int, int] | None = None  # the output size of its last job
    batches: int = 0
    cells: int = 0
    busy_s: float = 0.0
    lost: int = 0

    def stats(self) -> dict:
        """Its figures for the manifest and the summary."""
        device = self.info.get("device") or {}
        return {"worker": self.number, "node": self.info.get("node", ""), "ip": self.info.get("ip", ""),
                "device": device.get("gpu") or device.get("device", ""), "threads": device.get("threads"),
                "batches": self.batches, "cells": self.cells, "busy_s": round(self.busy_s, 3), "lost": self.lost}


class RayEngine:
    """Spreads a sweep's jobs over Ray actors; outcomes come back to the driver, which records them."""

    name = "ray"

    def __init__(self, settings: dict, wb: Workbench, sketch: Image.Image, tolerance: int | None, weights: dict):
        """Plan the workers on the Ray this process is connected to (see `started`)."""
        import ray

        self.ray, self.settings, self.weights = ray, settings, weights
        self.count, self.gpus, cpus = _worker_shape(ray, settings)
        device = "cuda" if self.gpus else "cpu"
        actor = ray.remote(Worker).options(num_cpus=cpus, num_gpus=self.gpus, max_restarts=0)
        self._new_actor = lambda: actor.remote(wb.sources, device, wb.memory.to_dict(), image_bytes(sketch),
                                               tolerance, cpus)
        self.slots: list[_Slot] = []
        self.retired: list[_Slot] = []
        self._images: dict[str, Shipped] = {}  # style id -> its image bytes, read once per sweep

    @classmethod
    @contextlib.contextmanager
    def started(cls, settings: dict, wb: Workbench, sketch: Image.Image, tolerance: int | None,
                weights: dict) -> Iterator[RayEngine]:
        """The engine on a connected Ray (joined at `settings["address"]`, or started here and shut down after)."""
        ray = _import_ray()
        started_here = not ray.is_initialized()
        if started_here:
            _connect(ray, settings["address"])
        engine = None
        try:
            engine = cls(settings, wb, sketch, tolerance, weights)
            yield engine
        finally:
            if engine is not None:
                engine.close()
            if started_here:
                ray.shutdown()

    def run(self, jobs: Iterable[Job], record: Callable[[Job, Outcome], None]) -> None:
        """Send jobs to idle workers (one of the same output size first) until all are recorded."""
        source = iter(jobs)
        pending: deque[Job] = deque()
        running: dict[Any, tuple[_Slot, Job, float]] = {}
        losses: dict[int, int] = {}
        self.slots = [self._slot(n) for n in range(self.count)]
        idle: list[_Slot] = []
        while True:
            source = self._fill(source, pending)
            for slot in list(idle):
                job = _pick(pending, slot.size)
                if job is not None:
                    idle.remove(slot)
                    running[slot.actor.run.remote(self._shipped(job))] = (slot, job, time.perf_counter())
            starting = {slot.started: slot for slot in self.slots if slot.started is not None}
            if not running and not pending and source is None:
                return
            waiting = [*running, *starting]
            ready, _ = self.ray.wait(waiting, num_returns=1, timeout=None if running else START_TIMEOUT_S)
            if not ready:
                raise RayEngineError(f"No Ray worker started within {START_TIMEOUT_S:g} s (the cluster may lack"
                                     " the CPUs or GPUs asked for). Fix: check `ray status`, or ask for fewer"
                                     " workers.")
            ref = ready[0]
            if ref in starting:
                idle.append(self._check_started(starting[ref], ref))
                continue
            slot, job, t0 = running.pop(ref)
            try:
                outcome = self.ray.get(ref)
            except self.ray.exceptions.RayActorError:
                self._lose(slot, job, pending, losses, record)
                continue
            slot.batches, slot.cells, slot.size = slot.batches + 1, slot.cells + len(job.chunk), job.size
            slot.busy_s += time.perf_counter() - t0
            record(job, outcome)
            idle.append(slot)

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

    def _fill(self, source: Iterator[Job] | None, pending: deque[Job]) -> Iterator[Job] | None:
        """Prepare jobs ahead (the driver retrieves while workers generate); None once the source ran out."""
        while source is not None and len(pending) < LOOKAHEAD * len(self.slots):
            job = next(source, None)
            if job is None:
                return None
            pending.append(job)
        return source

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
        if slot.info["weights"] != self.weights:
            raise RayEngineError(f"Ray worker {slot.number} on {where} loaded other weights than this process (their"
                                 " sha256 differ), so its images would not be this sweep's. Fix: give every node"
                                 " the same model files (the same preset, revisions and cache).")
        return slot

    def _lose(self, slot: _Slot, job: Job, pending: deque[Job], losses: dict[int, int],
              record: Callable[[Job, Outcome], None]) -> None:
        """A worker died with `job`: retry the job elsewhere (or record it failed) and start a replacement."""
        slot.lost += 1
        losses[job.batch_no] = losses.get(job.batch_no, 0) + 1
        if losses[job.batch_no] >= MAX_LOSSES:
            record(job, Outcome(error=f"WorkerDied: the Ray worker making this batch died {MAX_LOSSES} times"
                                      " (killed, or out of host memory)"))
        else:
            pending.appendleft(job)
        self.slots.remove(slot)
        self.retired.append(slot)
        self.slots.append(self._slot(1 + max(s.number for s in [*self.slots, *self.retired])))


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
