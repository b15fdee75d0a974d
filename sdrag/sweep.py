"""Parameter sweeps: run a spec's cells crash-safe, resumable, cached and batched into a run folder."""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import SdragError, StorageError, StyleNotFoundError
from .files import atomic_save_image, atomic_write_bytes, atomic_write_json, image_bytes
from .generate import MemoryOptions
from .images import SAMPLE_SKETCH, load_image
from .metrics import METRICS
from .params import Params
from .spec import SweepError, SweepSpec, canonical, cell_id, cell_params, load_spec, validate

__all__ = ["SweepError", "SweepFailed", "SweepRun", "load_spec", "reproduce", "run_sweep", "validate"]

ROW_COLUMNS = ["cell", "cell_id", "status", "error", *Params.names(), "references", "retrieved", *METRICS,
               "seconds", "peak_mem_mb", "memory", "batch", "batch_seeds", "image", "image_sha256", "edges_sha256",
               "resolved"]
DEFAULT_STYLES = Path(__file__).resolve().parent.parent / "styles"


class SweepFailed(SdragError):
    """Every cell of a sweep failed."""


@dataclass
class SweepRun:
    """A finished (or resumed) sweep: its folder, table and report."""

    out_dir: Path
    table: pd.DataFrame
    manifest: dict
    report_path: Path | None = None
    cache_stats: dict = field(default_factory=dict)

    @property
    def failed(self) -> pd.DataFrame:
        """The rows of cells that failed."""
        return self.table[self.table["status"] != "ok"]

    def summary(self) -> pd.DataFrame:
        """Metric mean and std over seeds for each parameter combination (successful cells only)."""
        from .metrics import aggregate

        ok = self.table[self.table["status"] == "ok"]
        by = [c for c in varying_params(self.table) if c != "seed"]
        return aggregate(ok.fillna({c: "" for c in by}), by or ["prompt"])


def varying_params(table: pd.DataFrame) -> list[str]:
    """The parameter columns that take more than one value in a results table."""
    return [n for n in Params.names() if n in table and table[n].astype(str).nunique() > 1]


def run_sweep(spec: str | Path | dict | SweepSpec, out_dir: str | Path | None = None, preset: str | None = None, *,
              workbench=None, progress: bool = True, report: bool = True) -> SweepRun:
    """Run (or resume) a sweep into `out_dir`: finished cells are kept, only missing ones are generated.

    Cells that differ only in seed go through one batched call (up to `batch` seeds). A failing cell is
    recorded with its error and the sweep goes on; if every cell fails, SweepFailed is raised.
    """
    from tqdm.auto import tqdm

    from .workbench import Workbench

    sp = load_spec(spec)
    # The manifest and cell ids name the weights actually used: a given workbench's, else the argument's.
    chosen = workbench.spec.preset if workbench is not None else preset
    if chosen is not None:
        sp = replace(sp, preset=chosen)
    params = validate(sp)
    # Cheap checks first: a bad sketch path fails before minutes of model loading.
    sketch = load_image(sp.resolve_path(sp.sketch) if sp.sketch else SAMPLE_SKETCH)
    sketch_sha = hashlib.sha256(sketch.tobytes()).hexdigest()
    out = Path(out_dir) if out_dir is not None else Path("experiments") / "runs" / sp.name
    _check_folder(out, sp, sketch_sha)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    (out / "rows").mkdir(exist_ok=True)
    for folder in (out, out / "cells", out / "rows"):
        for stale in folder.glob(".*.tmp"):
            stale.unlink()  # a temp file left by a killed writer; the file it was for was never renamed in
    wb = workbench or Workbench.from_preset(sp.preset, library_dir=sp.resolve_path(sp.library) if sp.library
                                            else out / "library")
    styles = sp.resolve_path(sp.styles) if sp.styles else DEFAULT_STYLES
    if styles.is_dir():
        wb.library.ingest(styles, progress=False)
    _check_styles(wb, params)
    if not (out / "sketch.png").is_file():
        # The run folder keeps its own copy of the sketch, so a cell can be reproduced from the folder alone.
        atomic_save_image(sketch, out / "sketch.png")
    context = {"preset": sp.preset, "sketch": sketch_sha}
    plan = _Plan(params=params, labels=[cell_params(sp, o).to_dict() for o in sp.expand()],
                 ids=[cell_id(p, context) for p in params])
    manifest = _manifest(sp, wb, out, sketch_sha)
    rows = _load_rows(out)
    todo = {i for i, cid in enumerate(plan.ids) if rows.get(cid, {}).get("status") != "ok"}
    bar = tqdm(total=len(params), initial=len(params) - len(todo), desc=f"sweep {sp.name}", unit="cell",
               disable=not progress)
    try:
        for batch_no, chunk in _batches(sp, params):
            missing = [i for i in chunk if i in todo]
            if not missing:
                continue
            _run_chunk(wb, sp, sketch, plan, chunk, missing, batch_no, rows, out)
            _write_table(out, plan.ids, rows)
            bar.update(len(missing))
    except StorageError as exc:
        done = sum(rows.get(cid, {}).get("status") == "ok" for cid in plan.ids)
        raise StorageError(f"{exc} The sweep stopped with {done} of {len(params)} cells finished; they are kept"
                           f" in {out}, and running the same spec again resumes from there.") from exc
    finally:
        bar.close()
    table = _write_table(out, plan.ids, rows)
    run = SweepRun(out_dir=out, table=table, manifest=manifest, cache_stats=wb.cache.stats())
    if report:
        from .report import write_report

        run.report_path = write_report(run)
    if len(table) and (table["status"] != "ok").all():
        raise SweepFailed(f"All {len(table)} cells of sweep {sp.name!r} failed; first error: "
                          f"{table['error'].iloc[0]}. See {out / 'results.csv'}.")
    return run


def _check_styles(wb, params: list[Params]) -> None:
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


def _batches(sp: SweepSpec, params: list[Params]):
    """Yield (batch number, cell indices): cells equal but for seed, up to `batch` per call, in an order
    that keeps expensive changes (style, prompt, Canny, size) in the outer loop."""
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(params):
        key = canonical({**p.to_dict(), "seed": None})
        groups.setdefault(key, []).append(i)

    def order(key: str) -> tuple:
        d = json.loads(key)
        return (json.dumps(d["style"]), d["top_k"], d["prompt"], d["negative_prompt"], d["canny"], d["size"],
                d["fit"], key)

    n = 0
    for key in sorted(groups, key=order):
        members = groups[key]
        for start in range(0, len(members), sp.batch):
            yield n, members[start:start + sp.batch]
            n += 1


@dataclass
class _Plan:
    """The cells of a run: resolved params, the values as the spec wrote them (labels), and ids."""

    params: list[Params]
    labels: list[dict]
    ids: list[str]


def _run_chunk(wb, sp: SweepSpec, sketch, plan: _Plan, chunk, missing, batch_no, rows, out) -> None:
    import torch

    # The whole chunk is regenerated even when part of it is done: batch composition then never depends
    # on where a previous run stopped, so a resumed sweep is bit-identical to an uninterrupted one.
    p = plan.params[chunk[0]].update(seed=[plan.params[i].seed for i in chunk])
    cuda = wb.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(wb.device)
    t0 = time.perf_counter()
    try:
        res = wb.run(sketch, params=p)
    except Exception as exc:  # noqa: BLE001 - one bad cell (a torch error, out of memory...) must not end a sweep
        _fail(rows, out, plan, missing, batch_no, exc)
        return
    seconds = (time.perf_counter() - t0) / len(chunk)
    peak = torch.cuda.max_memory_allocated(wb.device) / 2**20 if cuda else _rss_mb()
    metrics, note = {}, ""
    if sp.metrics:
        try:
            metrics = _metrics(wb, sp, p, res)
        except Exception as exc:  # noqa: BLE001 - the image is good; keep it and say why its metrics are empty
            note = f"metrics failed: {type(exc).__name__}: {exc}"
    edges_sha = hashlib.sha256(res.edges.tobytes()).hexdigest()
    # Seeds batched together round alike: reproduce() reruns exactly this batch.
    batch_seeds = json.dumps(p.seeds)
    for j, i in enumerate(chunk):
        if i not in missing:
            continue
        data = image_bytes(res.images[j])
        image_path = atomic_write_bytes(out / "cells" / f"{plan.ids[i]}.png", data)
        row = _base_row(plan, i, batch_no)
        row.update(status="ok", error=note, seconds=round(seconds, 4), peak_mem_mb=round(peak, 1),
                   # Full precision: reproduce() blends with exactly these weights.
                   references=";".join(f"{s.id}:{w!r}" for s, w in res.references),
                   retrieved=";".join(f"{h.id}:{h.score:.4f}" for h in res.hits if h.score is not None),
                   # Memory savers in effect, and the ones an out-of-memory retry switched on for this batch.
                   memory=json.dumps({**res.info["memory"], "oom_fallback": res.info["oom_fallback"]}),
                   image=str(image_path.relative_to(out)), image_sha256=hashlib.sha256(data).hexdigest(),
                   edges_sha256=edges_sha, batch_seeds=batch_seeds)
        for name, values in metrics.items():
            row[name] = round(float(values[j]), 6)
        atomic_write_json(out / "rows" / f"{plan.ids[i]}.json", row)
        rows[plan.ids[i]] = row


def _metrics(wb, sp: SweepSpec, p: Params, res) -> dict[str, list[float]]:
    from .metrics import clip_metrics, structure_fidelity

    weights = np.array([w for _, w in res.references], dtype=np.float32)[:, None]
    reference = (weights * wb.library.vectors([s.id for s, _ in res.references])).sum(0)
    text = wb.cache.get("text", p.prompt, lambda: wb.embedder.embed_text([p.prompt])[0])
    style, prompt = clip_metrics(wb.embedder, res.images, reference, text)
    return {"style_similarity": style.tolist(), "prompt_alignment": prompt.tolist(),
            "edge_f1": [structure_fidelity(res.edges, img, p.canny, sp.edge_tolerance) for img in res.images]}


def _fail(rows, out, plan: _Plan, missing, batch_no, exc: Exception) -> None:
    for i in missing:
        row = _base_row(plan, i, batch_no)
        row.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        # Failed rows live beside ok rows and never replace them; a resume retries the cell.
        atomic_write_json(out / "rows" / f"{plan.ids[i]}.failed.json", row)
        rows[plan.ids[i]] = row


def _base_row(plan: _Plan, i: int, batch_no: int) -> dict:
    row = {c: None for c in ROW_COLUMNS}
    # Parameter columns show values as the spec wrote them ('style', not its expanded block map); the
    # resolved parameters, which reproduce the cell, go in one JSON column.
    for name, value in plan.labels[i].items():
        row[name] = value if isinstance(value, (int, float, str)) or value is None else json.dumps(value)
    row.update(cell=i, cell_id=plan.ids[i], batch=batch_no, resolved=json.dumps(plan.params[i].to_dict()))
    return row


def _rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _load_rows(out: Path) -> dict[str, dict]:
    rows: dict[str, dict] = {}
    for path in sorted((out / "rows").glob("*.json")):
        try:
            row = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # only a partial temp file could be unreadable, and those are never renamed into place
        if row.get("status") == "ok" or row["cell_id"] not in rows:
            rows[row["cell_id"]] = row
    return rows


def _write_table(out: Path, ids: list[str], rows: dict[str, dict]) -> pd.DataFrame:
    table = pd.DataFrame([rows[cid] for cid in ids if cid in rows], columns=ROW_COLUMNS)
    atomic_write_bytes(out / "results.csv", table.to_csv(index=False).encode())
    return table


def _check_folder(out: Path, sp: SweepSpec, sketch_sha: str) -> None:
    """Refuse to resume into a folder that holds another preset's or another sketch's sweep."""
    path = out / "manifest.json"
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SweepError(f"{path} cannot be read ({exc}); it is not a run folder sdrag can resume. Fix: pass"
                         " another out_dir.") from None
    if old.get("preset") != sp.preset or old.get("sketch_sha256") != sketch_sha:
        raise SweepError(
            f"{out} holds a sweep with preset {old.get('preset')!r} on another sketch or preset; resuming"
            " into it would mix runs. Fix: pass another out_dir."
        )


def _manifest(sp: SweepSpec, wb, out: Path, sketch_sha: str) -> dict:
    """Write manifest.json for this invocation; earlier invocations stay in its `history`."""
    from . import provenance

    path = out / "manifest.json"
    history = json.loads(path.read_text()).get("history", []) if path.is_file() else []
    manifest = {
        "name": sp.name, "preset": sp.preset, "spec": sp.to_dict(), "sketch_sha256": sketch_sha,
        "versions": provenance.versions(), "device": provenance.device_info(wb.device, wb.dtype),
        "models": wb.spec.to_dict(), "weights": wb.weight_hashes(),
        "library": {"path": str(wb.library.path), "embedder": wb.embedder_name, "styles": wb.library.snapshot()},
        "environment": provenance.environment_flags(),
    }
    # A resume may run a longer spec, or newer packages: each invocation's spec, versions and device are kept.
    history.append({"started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    **{k: manifest[k] for k in ("spec", "versions", "device", "models")}})
    manifest["history"] = history
    atomic_write_json(path, manifest)
    return manifest


def reproduce(run_dir: str | Path, cell: str, workbench=None) -> tuple[Any, bool]:
    """Regenerate one cell from its run folder alone (manifest, results row, sketch copy).

    The cell's whole batch is rerun with its recorded style references, so on CPU the image is bit-exact.
    Returns (image, whether its sha256 equals the recorded one).
    """
    from PIL import Image

    from .report import load_run
    from .workbench import Workbench

    run = load_run(run_dir)
    table = run.table
    match = table[(table["cell_id"] == cell) & (table["status"] == "ok")]
    if match.empty:
        raise SweepError(f"No finished cell {cell!r} in {run.out_dir}. Fix: pick a cell_id from results.csv.")
    row = match.iloc[0]
    refs = [(part.rsplit(":", 1)[0], float(part.rsplit(":", 1)[1])) for part in str(row["references"]).split(";")]
    resolved = json.loads(row["resolved"])
    params = Params.from_dict(resolved)
    seeds = json.loads(row["batch_seeds"])
    params = params.update(style=refs, seed=seeds).resolved()
    sketch = load_image(run.out_dir / "sketch.png")
    if hashlib.sha256(sketch.tobytes()).hexdigest() != run.manifest["sketch_sha256"]:
        raise SweepError(f"{run.out_dir / 'sketch.png'} is not the sketch this run used. Fix: restore it from the"
                         " run's backup; the manifest records its sha256.")
    wb = workbench or Workbench.from_preset(run.manifest["preset"], library_dir=run.manifest["library"]["path"])
    _check_weights(run.manifest["weights"], wb.weight_hashes())
    memory = json.loads(row["memory"])
    # Memory savers change the arithmetic: rerun with those the cell ran with (they only ever switch on).
    wb.generator.use_memory(MemoryOptions(**{k: memory[k] for k in MemoryOptions.__dataclass_fields__}))
    res = wb.run(sketch, params=params)
    if hashlib.sha256(res.edges.tobytes()).hexdigest() != row["edges_sha256"]:
        raise SweepError(f"The Canny map of cell {cell} differs from the recorded one (another OpenCV build?);"
                         " the image cannot match. Fix: reproduce with the package versions in manifest.json.")
    data = image_bytes(res.images[seeds.index(resolved["seed"])])
    same = hashlib.sha256(data).hexdigest() == row["image_sha256"]
    return Image.open(io.BytesIO(data)), same


def _check_weights(recorded: dict, current: dict) -> None:
    """Refuse to reproduce on other weights than the run used (compared by content, not by path)."""
    changed = [part for part in recorded
               if sorted(f["sha256"] for f in recorded[part]) != sorted(f["sha256"] for f in current.get(part, []))]
    if changed:
        raise SweepError(f"The weights of {', '.join(changed)} differ from those this run used (sha256 in"
                         " manifest.json). Fix: load the same weights, e.g. Workbench.from_preset(..., base=<folder>).")
