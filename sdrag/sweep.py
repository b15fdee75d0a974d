"""Parameter sweeps: axes over `Workbench.run` parameters, run crash-safe, resumable and cached."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import ParameterError, SdragError
from .files import atomic_write_bytes, atomic_write_json, safe_name
from .images import SAMPLE_SKETCH, load_image
from .params import Params

SPEC_KEYS = ("name", "preset", "sketch", "styles", "library", "base", "axes", "zip", "cells", "batch",
             "metrics", "edge_tolerance")
# Pseudo-axes that set one side of the Canny pair, so low and high can be separate grid axes.
CANNY_SIDES = {"canny_low": 0, "canny_high": 1}
DEFAULT_STYLES = Path(__file__).resolve().parent.parent / "styles"
ROW_COLUMNS = ["cell", "cell_id", "status", "error", *Params.names(), "references", "retrieved",
               "edge_f1", "style_similarity", "prompt_alignment", "seconds", "peak_mem_mb", "batch", "image",
               "image_sha256", "resolved"]


class SweepError(SdragError):
    """A sweep spec is malformed, or a run folder belongs to another sweep."""


class SweepFailed(SdragError):
    """Every cell of a sweep failed."""


@dataclass
class SweepSpec:
    """A parsed sweep: base parameters, axes (full factorial), zipped axes and explicit cells."""

    name: str
    base: dict = field(default_factory=dict)
    axes: dict[str, list] = field(default_factory=dict)
    zip: dict[str, list] = field(default_factory=dict)
    cells: list[dict] = field(default_factory=list)
    preset: str = "tiny"
    sketch: str | None = None
    styles: str | None = None
    library: str | None = None
    batch: int = 4
    metrics: bool = True
    edge_tolerance: int = 2
    source_dir: Path | None = None

    def to_dict(self) -> dict:
        """The spec as plain JSON data (what the manifest records)."""
        return {k: getattr(self, k) for k in SPEC_KEYS}

    def expand(self) -> list[dict]:
        """Every cell's parameter overrides, in spec order: axes grid x zipped rows x explicit cells."""
        grid_names = list(self.axes)
        grid = [dict(zip(grid_names, combo)) for combo in itertools.product(*self.axes.values())]
        zipped = [dict(zip(self.zip, row)) for row in zip(*self.zip.values())] if self.zip else [{}]
        explicit = self.cells or [{}]
        return [{**g, **z, **c} for g in grid for z in zipped for c in explicit]


def load_spec(spec: str | Path | dict | SweepSpec) -> SweepSpec:
    """Parse a YAML file or a dict into a SweepSpec, expanding ranges; structural errors all at once."""
    import yaml

    if isinstance(spec, SweepSpec):
        return spec
    source_dir = None
    if isinstance(spec, (str, Path)):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise SweepError(f"Sweep spec not found: {path}. Fix: pass a YAML file or a dict.")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise SweepError(f"Cannot parse the sweep spec {path}: {exc}") from None
        source_dir = path.parent
        if isinstance(data, dict):
            data.setdefault("name", path.stem)
    else:
        data = spec
    if not isinstance(data, dict):
        raise SweepError("A sweep spec must be a mapping with keys such as base, axes, zip, cells.")
    problems: list[str] = []
    unknown = sorted(set(data) - set(SPEC_KEYS))
    if unknown:
        problems.append(f"unknown spec key(s) {unknown}; known: {', '.join(SPEC_KEYS)}")
    known_names = set(Params.names()) | set(CANNY_SIDES)
    base = data.get("base") or {}
    if not isinstance(base, dict):
        problems.append("base must be a mapping of parameters")
        base = {}
    axes = _axes(data.get("axes"), "axes", known_names, problems)
    zipped = _axes(data.get("zip"), "zip", known_names, problems)
    if zipped and len({len(v) for v in zipped.values()}) > 1:
        problems.append(f"zip axes must have equal lengths, got { {k: len(v) for k, v in zipped.items()} }")
    cells = data.get("cells") or []
    if not isinstance(cells, list) or not all(isinstance(c, dict) for c in cells):
        problems.append("cells must be a list of parameter mappings")
        cells = []
    for c in cells:
        for name in set(c) - known_names:
            problems.append(f"cells: unknown parameter {name!r}")
    for name in set(base) - set(Params.names()):
        problems.append(f"base: unknown parameter {name!r}")
    name = data.get("name", "sweep")
    try:
        safe_name(str(name), "sweep name")
    except ParameterError as exc:
        problems.append(str(exc))
    batch = data.get("batch", 4)
    if not isinstance(batch, int) or isinstance(batch, bool) or not 1 <= batch <= 64:
        problems.append(f"batch must be a whole number from 1 to 64, got {batch!r}")
    if problems:
        raise SweepError("Invalid sweep spec:\n  - " + "\n  - ".join(problems))
    return SweepSpec(name=str(name), base=base, axes=axes, zip=zipped, cells=cells,
                     preset=data.get("preset", "tiny"), sketch=data.get("sketch"), styles=data.get("styles"),
                     library=data.get("library"), batch=batch, metrics=bool(data.get("metrics", True)),
                     edge_tolerance=int(data.get("edge_tolerance", 2)), source_dir=source_dir)


def _axes(raw: Any, where: str, known: set[str], problems: list[str]) -> dict[str, list]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.append(f"{where} must be a mapping of parameter name to a list of values")
        return {}
    out = {}
    for name, values in raw.items():
        if name not in known:
            problems.append(f"{where}: unknown parameter {name!r}; known: {', '.join(sorted(known))}")
            continue
        expanded = _range(values, f"{where}.{name}", problems)
        if expanded is not None:
            if not expanded:
                problems.append(f"{where}.{name} has no values")
            out[name] = expanded
    return out


def _range(values: Any, where: str, problems: list[str]) -> list | None:
    """Expand {linspace: [start, stop, num]} and {range: [start, stop, step]}; lists pass through."""
    if isinstance(values, list):
        return values
    if isinstance(values, dict) and len(values) == 1 and next(iter(values)) in ("linspace", "range"):
        kind, args = next(iter(values.items()))
        ok = isinstance(args, list) and len(args) == 3 and all(
            isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a) for a in args)
        if kind == "linspace" and ok and isinstance(args[2], int) and 1 <= args[2] <= 1000:
            return [round(float(v), 10) for v in np.linspace(args[0], args[1], args[2])]
        if kind == "range" and ok and args[2] != 0 and abs((args[1] - args[0]) / args[2]) <= 1000:
            vals = np.arange(args[0], args[1], args[2])
            return [int(v) if float(v).is_integer() and all(isinstance(a, int) for a in args) else float(v)
                    for v in vals]
        problems.append(f"{where}: bad {kind} {args!r}; use linspace: [start, stop, count] or range: [start, stop, "
                        "step]")
        return None
    problems.append(f"{where} must be a list of values or a linspace/range mapping, got {values!r}")
    return None


def cell_params(spec: SweepSpec, overrides: dict) -> Params:
    """The Params of one cell (unresolved): base, then the cell's overrides (canny_low/high folded in)."""
    merged = {**spec.base, **{k: v for k, v in overrides.items() if k not in CANNY_SIDES}}
    if any(k in overrides for k in CANNY_SIDES):
        canny = list(merged.get("canny", Params().canny))
        for side, idx in CANNY_SIDES.items():
            if side in overrides:
                canny[idx] = overrides[side]
        merged["canny"] = canny
    return Params.from_dict(merged)


def validate(spec: SweepSpec) -> list[Params]:
    """Resolve every cell; raise one ParameterError naming every bad value and the axis values behind it."""
    failures: dict[str, list[dict]] = {}
    resolved: list[Params] = []
    for overrides in spec.expand():
        try:
            resolved.append(cell_params(spec, overrides).resolved())
        except ParameterError as exc:
            for line in _lines(exc):
                failures.setdefault(line, []).append(overrides)
    if failures:
        problems = []
        for line, cells in failures.items():
            # The axis values every failing cell shares are the ones to blame.
            common = {k: v for k, v in cells[0].items() if all(_same(c.get(k), v) for c in cells)}
            where = ", ".join(f"{k} = {v!r}" for k, v in common.items()) or "base"
            problems.append(f"{where}: {line} ({len(cells)} cell{'s' if len(cells) > 1 else ''})")
        more = f"\n  ... and {len(problems) - 30} more" if len(problems) > 30 else ""
        raise ParameterError("Invalid sweep values:\n  - " + "\n  - ".join(problems[:30]) + more)
    if any(isinstance(p.seed, list) for p in resolved):
        raise ParameterError("A sweep cell takes one seed; put several seeds on a 'seed' axis instead.")
    return resolved


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _lines(exc: ParameterError) -> list[str]:
    text = str(exc)
    if text.startswith("Invalid parameters:"):
        return [ln.strip()[2:] for ln in text.splitlines()[1:] if ln.strip().startswith("- ")]
    return [text]


def cell_id(p: Params, context: dict) -> str:
    """Content hash of a cell's resolved parameters and what they act on (preset, sketch)."""
    blob = json.dumps({"params": p.to_dict(), **context}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


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

    from . import provenance
    from .workbench import Workbench

    sp = load_spec(spec)
    if preset is not None:
        sp.preset = preset
    params = validate(sp)
    out = Path(out_dir) if out_dir is not None else Path("experiments") / "runs" / sp.name
    (out / "cells").mkdir(parents=True, exist_ok=True)
    (out / "rows").mkdir(exist_ok=True)
    for folder in (out, out / "cells", out / "rows"):
        for stale in folder.glob(".*.tmp"):
            stale.unlink()  # a temp file left by a killed writer; the file it was for was never renamed in
    library = _resolve(sp, sp.library) if sp.library else out / "library"
    wb = workbench or Workbench.from_preset(sp.preset, library_dir=library)
    styles = _resolve(sp, sp.styles) if sp.styles else DEFAULT_STYLES
    if styles.is_dir():
        wb.library.ingest(styles, progress=False)
    _check_styles(wb, params)
    sketch = load_image(_resolve(sp, sp.sketch) if sp.sketch else SAMPLE_SKETCH)
    sketch_sha = hashlib.sha256(sketch.tobytes()).hexdigest()
    if not (out / "sketch.png").is_file():
        # The run folder keeps its own copy of the sketch, so a cell can be reproduced from the folder alone.
        buf = io.BytesIO()
        sketch.save(buf, format="PNG")
        atomic_write_bytes(out / "sketch.png", buf.getvalue())
    context = {"preset": sp.preset, "sketch": sketch_sha}
    plan = _Plan(params=params, labels=[cell_params(sp, o).to_dict() for o in sp.expand()],
                 ids=[cell_id(p, context) for p in params])
    ids = plan.ids
    manifest = _manifest(sp, wb, out, sketch_sha, provenance)
    rows = _load_rows(out)
    todo = {i for i, cid in enumerate(ids) if rows.get(cid, {}).get("status") != "ok"}
    bar = tqdm(total=len(params), initial=len(params) - len(todo), desc=f"sweep {sp.name}", unit="cell",
               disable=not progress)
    for batch_no, chunk in _batches(sp, params):
        missing = [i for i in chunk if i in todo]
        if not missing:
            continue
        _run_chunk(wb, sp, sketch, plan, chunk, missing, batch_no, rows, out)
        _write_table(out, ids, rows)
        bar.update(len(missing))
    bar.close()
    table = _write_table(out, ids, rows)
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
    from .errors import StyleNotFoundError

    keys = {k for p in params for k in ([p.style] if isinstance(p.style, str) else [k for k, _ in p.style or []])}
    missing = []
    for key in sorted(keys):
        try:
            wb.library.get(key)
        except StyleNotFoundError as exc:
            missing.append(str(exc))
    if missing:
        raise StyleNotFoundError("Unknown styles in the sweep:\n  - " + "\n  - ".join(missing))


def _resolve(sp: SweepSpec, path: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_absolute() and sp.source_dir is not None and (sp.source_dir / p).exists():
        return sp.source_dir / p
    return p


def _batches(sp: SweepSpec, params: list[Params]):
    """Yield (batch number, cell indices): cells equal but for seed, up to `batch` per call, in an order
    that keeps expensive changes (style, prompt, Canny, size) in the outer loop."""
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(params):
        key = json.dumps({**p.to_dict(), "seed": None}, sort_keys=True, default=str)
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
    except (SdragError, RuntimeError, ValueError) as exc:  # torch errors (e.g. out of memory) fail cells only
        _fail(rows, out, plan, missing, batch_no, exc)
        return
    seconds = (time.perf_counter() - t0) / len(chunk)
    peak = torch.cuda.max_memory_allocated(wb.device) / 2**20 if cuda else _rss_mb()
    metrics = _metrics(wb, sp, p, res) if sp.metrics else {}
    for j, i in enumerate(chunk):
        if i not in missing:
            continue
        buf = io.BytesIO()
        res.images[j].save(buf, format="PNG")
        data = buf.getvalue()
        image_path = atomic_write_bytes(out / "cells" / f"{plan.ids[i]}.png", data)
        row = _base_row(plan, i, batch_no)
        row.update(status="ok", error="", seconds=round(seconds, 4), peak_mem_mb=round(peak, 1),
                   # Full precision: reproduce() blends with exactly these weights.
                   references=";".join(f"{s.id}:{w!r}" for s, w in res.references),
                   retrieved=";".join(f"{h.id}:{h.score:.4f}" for h in res.hits if h.score is not None),
                   image=str(image_path.relative_to(out)), image_sha256=hashlib.sha256(data).hexdigest())
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


def _manifest(sp: SweepSpec, wb, out: Path, sketch_sha: str, provenance) -> dict:
    path = out / "manifest.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if old.get("preset") != sp.preset or old.get("sketch_sha256") != sketch_sha:
            raise SweepError(
                f"{out} holds a sweep with preset {old.get('preset')!r} on another sketch or preset; resuming"
                " into it would mix runs. Fix: pass another out_dir."
            )
    manifest = {
        "name": sp.name, "preset": sp.preset, "spec": sp.to_dict(), "sketch_sha256": sketch_sha,
        "versions": provenance.versions(), "device": provenance.device_info(wb.device, wb.dtype),
        "models": wb.spec.to_dict(), "weights": provenance.weight_hashes(wb.spec),
        "library": {"path": str(wb.library.path), "embedder": wb.embedder_name, "styles": wb.library.snapshot()},
        "environment": provenance.environment_flags(),
    }
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
    batch = table[(table["batch"] == row["batch"]) & (table["status"] == "ok")].sort_values("cell")
    refs = [(part.rsplit(":", 1)[0], float(part.rsplit(":", 1)[1])) for part in str(row["references"]).split(";")]
    params = Params.from_dict(json.loads(row["resolved"])).update(
        style=refs, seed=[int(json.loads(r)["seed"]) for r in batch["resolved"]]).resolved()
    sketch = load_image(run.out_dir / "sketch.png")
    if hashlib.sha256(sketch.tobytes()).hexdigest() != run.manifest["sketch_sha256"]:
        raise SweepError(f"{run.out_dir / 'sketch.png'} is not the sketch this run used.")
    wb = workbench or Workbench.from_preset(run.manifest["preset"], library_dir=run.manifest["library"]["path"])
    res = wb.run(sketch, params=params)
    image = res.images[list(batch["cell_id"]).index(cell)]
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    same = hashlib.sha256(buf.getvalue()).hexdigest() == row["image_sha256"]
    return Image.open(io.BytesIO(buf.getvalue())), same
