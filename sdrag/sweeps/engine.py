"""Running a sweep: a spec's cells generated crash-safe, resumable, cached and batched into a run folder."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import SdragError, StorageError, StyleNotFoundError
from ..files import canonical, image_bytes, pixels_sha256
from ..generation.params import ResolvedParams
from ..generation.workbench import Workbench
from ..images import SAMPLE_SKETCH, load_image
from ..runs.folder import OK, RunFolder, SweepRun, cell_id, new_row, references_text
from ..runs.spec import SweepSpec, cell_params, load_spec, validate

DEFAULT_STYLES = Path(__file__).resolve().parents[2] / "styles"


class SweepFailed(SdragError):
    """Every cell of a sweep failed."""


@dataclass
class Cells:
    """The cells of a run, in spec order: resolved params, the values as the spec wrote them (labels), ids."""

    params: list[ResolvedParams]
    labels: list[dict]
    ids: list[str]


def run_sweep(spec: str | Path | dict | SweepSpec, out_dir: str | Path | None = None, preset: str | None = None, *,
              workbench: Workbench | None = None, progress: bool = True, report: bool = True) -> SweepRun:
    """Run (or resume) a sweep into `out_dir`: finished cells are kept, only missing ones are generated.

    Cells that differ only in seed go through one batched call (up to `batch` seeds). A failing cell is
    recorded with its error and the sweep goes on; if every cell fails, SweepFailed is raised.
    """
    sweep = load_spec(spec)
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
    context = {"preset": sweep.preset, "sketch": sketch_sha}
    cells = Cells(params=params, labels=[cell_params(sweep, o).to_dict() for o in sweep.expand()],
                  ids=[cell_id(p, context) for p in params])
    runner = _Runner(wb, sweep, sketch, cells, folder)
    folder.check_cells(cells.ids, runner.rows)
    manifest = folder.write_manifest({**_manifest(sweep, wb, sketch_sha), "rows_set_aside": runner.skipped})
    runner.run_all(progress)
    # Styles another process added meanwhile may have been retrieved: the snapshot is taken again at the end.
    manifest["library"]["styles"] = wb.library.snapshot()
    folder.rewrite_manifest(manifest)
    table = folder.write_table(cells.ids, runner.rows)
    return SweepRun(out_dir=folder.path, table=table, manifest=manifest, cache_stats=wb.cache.stats())


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
    """Generates the missing cells of one sweep batch by batch, recording each in the run folder."""

    def __init__(self, wb: Workbench, sweep: SweepSpec, sketch, cells: Cells, folder: RunFolder):
        self.wb, self.sweep, self.sketch, self.cells, self.folder = wb, sweep, sketch, cells, folder
        # Damaged or foreign row files are set aside (their cells are made again) and named in the manifest.
        self.skipped: list[str] = []
        self.rows = folder.rows(self.skipped)

    def done(self) -> int:
        """How many cells have an ok row."""
        return sum(self.rows.get(cid, {}).get("status") == OK for cid in self.cells.ids)

    def run_all(self, progress: bool) -> None:
        """Run every batch that still has a missing cell; the table is rewritten after each batch."""
        from tqdm.auto import tqdm

        total = len(self.cells.ids)
        todo = {i for i, cid in enumerate(self.cells.ids) if self.rows.get(cid, {}).get("status") != OK}
        bar = tqdm(total=total, initial=total - len(todo), desc=f"sweep {self.sweep.name}", unit="cell",
                   disable=not progress)
        try:
            for batch_no, chunk in batches(self.sweep, self.cells.params):
                missing = [i for i in chunk if i in todo]
                if missing:
                    self.run_batch(batch_no, chunk, missing)
                    self.folder.write_table(self.cells.ids, self.rows)
                    bar.update(len(missing))
        except StorageError as exc:
            raise StorageError(f"{exc} The sweep stopped with {self.done()} of {total} cells finished; they are"
                               f" kept in {self.folder.path}, and running the same spec again resumes from there."
                               ) from exc
        finally:
            bar.close()

    def run_batch(self, batch_no: int, chunk: list[int], missing: list[int]) -> None:
        """Generate one batch and record its missing cells (or their failure)."""
        import torch

        # The whole chunk is regenerated even when part of it is done: batch composition then never depends
        # on where a previous run stopped, so a resumed sweep is bit-identical to an uninterrupted one.
        p = self.cells.params[chunk[0]].update(seed=[self.cells.params[i].seed for i in chunk]).resolved()
        cuda = self.wb.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.wb.device)
        t0 = time.perf_counter()
        try:
            res = self.wb.run(self.sketch, params=p)
        except Exception as exc:  # noqa: BLE001 - one bad cell (a torch error, out of memory...) must not end a sweep
            for i in missing:
                self._record(i, batch_no, status="failed", error=f"{type(exc).__name__}: {exc}")
            return
        seconds = (time.perf_counter() - t0) / len(chunk)
        self.folder.keep_styles([s for s, _ in res.references])
        peak = torch.cuda.max_memory_allocated(self.wb.device) / 2**20 if cuda else _rss_mb()
        metrics, note = self._metrics(p, res)
        shared = {
            "status": OK, "error": note, "seconds": round(seconds, 4), "peak_mem_mb": round(peak, 1),
            # Full precision: reproduce() blends with exactly these weights.
            "references": references_text([(s.id, w) for s, w in res.references]),
            # Each hit's score in the cell's retrieval method, and why it ranked there (ranks, matched words).
            "retrieved": json.dumps([[h.id, round(h.score, 4), h.explanation] for h in res.hits
                                     if h.score is not None]),
            # Memory savers in effect, and the ones an out-of-memory retry switched on for this batch.
            "memory": json.dumps({**res.info["memory"], "oom_fallback": res.info["oom_fallback"]}),
            "edges_sha256": pixels_sha256(res.edges),
            # Seeds batched together round alike: reproduce() reruns exactly this batch.
            "batch_seeds": json.dumps(p.seeds),
        }
        for j, i in enumerate(chunk):
            if i in missing:
                png = image_bytes(res.images[j])
                scores = {name: round(float(v[j]), 6) for name, v in metrics.items()}
                self._record(i, batch_no, **shared, **scores, image=self.folder.write_cell(self.cells.ids[i], png),
                             image_sha256=hashlib.sha256(png).hexdigest())

    def _record(self, i: int, batch_no: int, **values) -> None:
        row = new_row(i, self.cells.ids[i], self.cells.labels[i], self.cells.params[i], batch_no)
        row.update(values)
        self.folder.write_row(row)
        self.rows[self.cells.ids[i]] = row

    def _metrics(self, p: ResolvedParams, res) -> tuple[dict[str, list[float]], str]:
        """The batch's metrics per image, and a note when they could not be computed (the images stay)."""
        if not self.sweep.metrics:
            return {}, ""
        try:
            return cell_metrics(self.wb, p, res, self.sweep.edge_tolerance), ""
        except Exception as exc:  # noqa: BLE001 - the image is good; keep it and say why its metrics are empty
            return {}, f"metrics failed: {type(exc).__name__}: {exc}"


def cell_metrics(wb: Workbench, p: ResolvedParams, res, tolerance: int) -> dict[str, list[float]]:
    """Edge F1, style similarity and prompt alignment of every image of one batch."""
    from ..runs.metrics import clip_metrics, structure_fidelity

    weights = np.array([w for _, w in res.references], dtype=np.float32)[:, None]
    reference = (weights * wb.library.vectors([s.id for s, _ in res.references])).sum(0)
    text = wb.cache.get("text", p.prompt, lambda: wb.embedder.embed_text([p.prompt])[0])
    style, prompt = clip_metrics(wb.embedder, res.images, reference, text)
    return {"style_similarity": style.tolist(), "prompt_alignment": prompt.tolist(),
            "edge_f1": [structure_fidelity(res.edges, img, p.canny, tolerance) for img in res.images]}


def _rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
