"""Running a sweep: a spec's cells generated crash-safe, resumable, cached and batched into a run folder."""

from __future__ import annotations

import contextlib
import hashlib
import json
import platform
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import SdragError, StorageError, StyleNotFoundError
from ..files import canonical
from ..generation.params import ResolvedParams
from ..generation.workbench import Workbench
from ..images import SAMPLE_SKETCH, load_image
from ..runs.folder import OK, RunFolder, SweepRun, cell_id, new_row, references_text
from ..runs.spec import SweepSpec, cell_params, load_spec, validate
from .work import Job, Outcome, do_job

DEFAULT_STYLES = Path(__file__).resolve().parents[2] / "styles"


class SweepFailed(SdragError):
    """Every cell of a sweep failed."""


class Engine(Protocol):
    """Where a sweep's jobs are generated: `run` hands each job's outcome to `record`, in the driver's process."""

    name: str

    def run(self, jobs: Iterable[Job], record: Callable[[Job, Outcome], None]) -> None: ...

    def workers(self) -> list[dict]: ...


@dataclass
class Cells:
    """The cells of a run, in spec order: resolved params, the values as the spec wrote them (labels), ids."""

    params: list[ResolvedParams]
    labels: list[dict]
    ids: list[str]


# Ten arguments, past the six the lint allows: the last four are the spec's `engine` settings, overridable per call
# as the command line's --ray and --workers override them.
def run_sweep(spec: str | Path | dict | SweepSpec, out_dir: str | Path | None = None,  # noqa: PLR0913
              preset: str | None = None, *, workbench: Workbench | None = None, progress: bool = True,
              report: bool = True, engine: str | None = None, ray_address: str | None = None,
              workers: int | None = None, gpus_per_worker: float | None = None) -> SweepRun:
    """Run (or resume) a sweep into `out_dir`: finished cells are kept, only missing ones are generated.

    Cells that differ only in seed go through one batched call (up to `batch` seeds). A failing cell is
    recorded with its error and the sweep goes on; if every cell fails, SweepFailed is raised.
    `engine="ray"` spreads the batches over Ray workers, one model load each (`ray_address`: a running cluster,
    else a local Ray is started; `workers`: how many, by default one per GPU, else per CPU); this process still
    retrieves the styles and writes the run folder alone, so a run started on one engine resumes on the other.
    None leaves the spec's `engine` setting.
    """
    sweep = load_spec(spec)
    changes = {"name": engine, "address": ray_address, "workers": workers, "gpus_per_worker": gpus_per_worker}
    if any(v is not None for v in changes.values()):
        sweep = load_spec(sweep, engine={**sweep.engine, **{k: v for k, v in changes.items() if v is not None}})
    # The manifest and cell ids name the weights actually used: a given workbench's, else the argument's.
    chosen = workbench.sources.preset if workbench is not None else preset
    if chosen is not None:
        sweep = replace(sweep, preset=chosen)
    params = validate(sweep)
    # Cheap checks first: a bad sketch path fails before minutes of model loading.
    sketch = load_image(sweep.resolve_path(sweep.sketch) if sweep.sketch else SAMPLE_SKETCH)
    folder = RunFolder(out_dir if out_dir is not None else Path("experiments") / "runs" / sweep.name)
    with folder.lock():
        run = _run_locked(sweep, params, sketch, folder, workbench, progress)
        if report:
            from ..reports.html import write_report

            run.report_path = write_report(run)
    if len(run.table) and (run.table["status"] != OK).all():
        raise SweepFailed(f"All {len(run.table)} cells of sweep {sweep.name!r} failed; first error: "
                          f"{run.table['error'].iloc[0]}. See {folder.table_path}.")
    return run


def _run_locked(sweep: SweepSpec, params: list[ResolvedParams], sketch, folder: RunFolder,
                workbench: Workbench | None, progress: bool) -> SweepRun:
    """The sweep proper, with the folder's writer lock held."""
    sketch_sha = folder.prepare(sweep, sketch)
    wb = workbench or Workbench.from_preset(sweep.preset, library_dir=sweep.resolve_path(sweep.library)
                                            if sweep.library else folder.path / "library")
    _ingest_styles(wb, sweep)
    _check_styles(wb, params)
    # Ray workers load their models from here on, while this process checks the folder's rows and hashes weights.
    with _engine(sweep, wb, sketch) as engine:
        context = {"preset": sweep.preset, "sketch": sketch_sha}
        cells = Cells(params=params, labels=[cell_params(sweep, o).to_dict() for o in sweep.expand()],
                      ids=[cell_id(p, context) for p in params])
        runner = _Runner(wb, sweep, sketch, cells, folder)
        folder.check_cells(cells.ids, runner.rows)
        manifest = folder.write_manifest({**_manifest(sweep, wb, sketch_sha), "rows_set_aside": runner.skipped})
        try:
            runner.run_all(progress, engine)
        finally:
            manifest["engine"] = {**sweep.engine, "name": engine.name, "workers": engine.workers()}
    # Styles another process added meanwhile may have been retrieved: the snapshot is taken again at the end.
    manifest["library"]["styles"] = wb.library.snapshot()
    folder.rewrite_manifest(manifest)
    table = folder.write_table(cells.ids, runner.rows)
    return SweepRun(out_dir=folder.path, table=table, manifest=manifest, cache_stats=wb.cache.stats())


@contextlib.contextmanager
def _engine(sweep: SweepSpec, wb: Workbench, sketch) -> Iterator[Engine]:
    """The engine the spec asks for, shut down (its workers and any Ray it started) when the sweep ends."""
    tolerance = sweep.edge_tolerance if sweep.metrics else None
    if sweep.engine["name"] == "local":
        yield LocalEngine(wb, sketch, tolerance)
        return
    from .distributed import RayEngine

    with RayEngine.started(sweep.engine, wb, sketch, tolerance) as engine:
        yield engine


def _ingest_styles(wb: Workbench, sweep: SweepSpec) -> None:
    """Bring the library up to date with the sweep's style folder (the repo's styles/ by default)."""
    styles = sweep.resolve_path(sweep.styles) if sweep.styles else DEFAULT_STYLES
    if styles.is_dir():
        wb.library.ingest(styles, progress=False)


def _check_styles(wb: Workbench, params: list[ResolvedParams]) -> None:
    """Refuse, before any generation and in one error, every style id or name the library lacks."""
    keys = {k for p in params for k in ([p.style] if isinstance(p.style, str) else [k for k, _ in p.style or []])}
    missing = []
    for key in sorted(keys):
        try:
            wb.library.get(key)
        except StyleNotFoundError as exc:
            missing.append(str(exc))
    if missing:
        raise StyleNotFoundError("Unknown styles in the sweep:\n  - " + "\n  - ".join(missing))


def _manifest(sweep: SweepSpec, wb: Workbench, sketch_sha: str) -> dict:
    """What this invocation runs with: spec, versions, device, model sources and weights, library state."""
    from ..models import provenance

    return {
        "name": sweep.name, "preset": sweep.preset, "spec": sweep.to_dict(), "sketch_sha256": sketch_sha,
        "versions": provenance.versions(), "device": provenance.device_info(wb.device, wb.dtype),
        "models": wb.sources.to_dict(), "weights": wb.weight_hashes(),
        "library": {"path": str(wb.library.path), "embedder": wb.embedder_name, "styles": wb.library.snapshot()},
        "environment": provenance.environment_flags(),
    }


def batches(sweep: SweepSpec, params: list[ResolvedParams]):
    """Yield (batch number, cell indices): cells equal but for seed, up to `batch` per call, in an order
    that keeps expensive changes (style, prompt, Canny, size) in the outer loop."""
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(params):
        groups.setdefault(canonical({**p.to_dict(), "seed": None}), []).append(i)

    def order(key: str) -> tuple:
        d = json.loads(key)
        return (json.dumps(d["style"]), d["top_k"], d["prompt"], d["negative_prompt"], d["canny"], d["size"],
                d["fit"], key)

    n = 0
    for key in sorted(groups, key=order):
        members = groups[key]
        for start in range(0, len(members), sweep.batch):
            yield n, members[start:start + sweep.batch]
            n += 1


class _Runner:
    """Prepares the missing batches of one sweep (retrieval included) and records each one's cells as it comes back,
    whichever engine generated it: the driver alone writes the run folder."""

    def __init__(self, wb: Workbench, sweep: SweepSpec, sketch, cells: Cells, folder: RunFolder):
        self.wb, self.sweep, self.sketch, self.cells, self.folder = wb, sweep, sketch, cells, folder
        # Damaged or foreign row files are set aside (their cells are made again) and named in the manifest.
        self.skipped: list[str] = []
        self.rows = folder.rows(self.skipped)
        self.hits: dict[int, list] = {}  # batch number -> its retrieval hits, until recorded

    def done(self) -> int:
        """How many cells have an ok row."""
        return sum(self.rows.get(cid, {}).get("status") == OK for cid in self.cells.ids)

    def run_all(self, progress: bool, engine: Engine) -> None:
        """Run every batch that still has a missing cell on `engine`; the table is rewritten after each batch."""
        from tqdm.auto import tqdm

        total = len(self.cells.ids)
        todo = {i for i, cid in enumerate(self.cells.ids) if self.rows.get(cid, {}).get("status") != OK}
        bar = tqdm(total=total, initial=total - len(todo), desc=f"sweep {self.sweep.name}", unit="cell",
                   disable=not progress)

        def record(job: Job, outcome: Outcome) -> None:
            self.record(job, outcome)
            self.folder.write_table(self.cells.ids, self.rows)
            bar.update(len(job.missing))

        jobs = (job for batch_no, chunk in batches(self.sweep, self.cells.params)
                if (job := self.prepare(batch_no, chunk, [i for i in chunk if i in todo], record)) is not None)
        try:
            engine.run(jobs, record)
        except StorageError as exc:
            raise StorageError(f"{exc} The sweep stopped with {self.done()} of {total} cells finished; they are"
                               f" kept in {self.folder.path}, and running the same spec again resumes from there."
                               ) from exc
        finally:
            bar.close()

    def prepare(self, batch_no: int, chunk: list[int], missing: list[int],
                record: Callable[[Job, Outcome], None]) -> Job | None:
        """The job of one batch with a missing cell: its parameters and retrieved references; None when there is
        nothing to do or retrieval failed (its cells are then recorded as failed through `record`)."""
        if not missing:
            return None
        # The whole chunk is regenerated even when part of it is done: batch composition then never depends
        # on where a previous run stopped, so a resumed sweep is bit-identical to an uninterrupted one.
        p = self.cells.params[chunk[0]].update(seed=[self.cells.params[i].seed for i in chunk]).resolved()
        job = Job(batch_no, chunk, missing, p, [])
        try:
            hits, job.references = self.wb.resolve_style(p.prompt, p)
            if self.sweep.metrics:
                weights = np.array([w for _, w in job.references], dtype=np.float32)[:, None]
                job.reference = (weights * self.wb.library.vectors([s.id for s, _ in job.references])).sum(0)
        except Exception as exc:  # noqa: BLE001 - as a generation error: the batch's cells fail, the sweep goes on
            record(job, Outcome(error=f"{type(exc).__name__}: {exc}"))
            return None
        self.hits[batch_no] = hits
        return job

    def record(self, job: Job, outcome: Outcome) -> None:
        """Write the rows of a job's missing cells: their images and figures, or their failure."""
        hits = self.hits.pop(job.batch_no, [])
        if outcome.error:
            for i in job.missing:
                self._record(i, job.batch_no, status="failed", error=outcome.error)
            return
        self.folder.keep_styles([s for s, _ in job.references])
        shared = {
            "status": OK, "error": outcome.note, "seconds": round(outcome.seconds, 4),
            "peak_mem_mb": round(outcome.peak_mem_mb, 1),
            # Full precision: reproduce() blends with exactly these weights.
            "references": references_text([(s.id, w) for s, w in job.references]),
            # Each hit's score in the cell's retrieval method, and why it ranked there (ranks, matched words).
            "retrieved": json.dumps([[h.id, round(h.score, 4), h.explanation] for h in hits if h.score is not None]),
            # Memory savers in effect, and the ones an out-of-memory retry switched on for this batch.
            "memory": json.dumps(outcome.memory),
            "edges_sha256": outcome.edges_sha256,
            # Seeds batched together round alike: reproduce() reruns exactly this batch.
            "batch_seeds": json.dumps(job.params.seeds),
        }
        for j, i in enumerate(job.chunk):
            if i in job.missing:
                png = outcome.images[j]
                scores = {name: round(float(v[j]), 6) for name, v in outcome.metrics.items()}
                self._record(i, job.batch_no, **shared, **scores,
                             image=self.folder.write_cell(self.cells.ids[i], png),
                             image_sha256=hashlib.sha256(png).hexdigest())

    def _record(self, i: int, batch_no: int, **values) -> None:
        row = new_row(i, self.cells.ids[i], self.cells.labels[i], self.cells.params[i], batch_no)
        row.update(values)
        self.folder.write_row(row)
        self.rows[self.cells.ids[i]] = row


class LocalEngine:
    """Generates jobs one after another in this process, with the driver's own workbench."""

    name = "local"

    def __init__(self, wb: Workbench, sketch, tolerance: int | None):
        self.wb, self.sketch, self.tolerance = wb, sketch, tolerance
        import torch

        self.stats = {"worker": "local", "node": platform.node(), "device": str(wb.device),
                      "threads": torch.get_num_threads() if wb.device.type == "cpu" else None, "batches": 0,
                      "cells": 0, "busy_s": 0.0, "lost": 0}

    def run(self, jobs: Iterable[Job], record: Callable[[Job, Outcome], None]) -> None:
        """Generate each job and hand its outcome to `record` before the next starts."""
        for job in jobs:
            t0 = time.perf_counter()
            outcome = do_job(self.wb, self.sketch, job, self.tolerance)
            self.stats["busy_s"] += time.perf_counter() - t0
            self.stats["batches"] += 1
            self.stats["cells"] += len(job.chunk)
            record(job, outcome)

    def workers(self) -> list[dict]:
        """Per-worker figures: batches, cells and busy seconds."""
        return [dict(self.stats)]
