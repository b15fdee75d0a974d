"""Sweep specs: base parameters with axes, zipped axes and explicit cells, expanded and validated up front."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ParameterError, SdragError, StorageError
from ..files import atomic_save_image, atomic_write_bytes, canonical, safe_name
from ..generation.params import Params, ResolvedParams
from ..models.presets import PRESET_NAMES
from ..retrieval.store import server_url

if TYPE_CHECKING:
    from PIL import Image

SPEC_KEYS = ("name", "preset", "sketch", "styles", "library", "base", "axes", "zip", "cells", "batch",
             "metrics", "edge_tolerance", "engine")
# How a sweep's batches are generated: in this process, or spread over Ray workers (sweeps/distributed.py).
ENGINES = ("local", "ray")
ENGINE_KEYS = ("name", "address", "workers", "gpus_per_worker")
# Pseudo-axes that set one side of the Canny pair, so low and high can be separate grid axes.
CANNY_SIDES = {"canny_low": 0, "canny_high": 1}
MAX_CELLS = 100_000


class SweepError(SdragError):
    """A sweep spec is malformed, or a run folder belongs to another sweep."""


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
    # {"name": "local" | "ray", "address": a Ray cluster or None (start one here), "workers": N or None (one per
    # GPU, else per CPU), "gpus_per_worker": G}; where cells are made, never what they are.
    engine: dict = field(default_factory=lambda: engine_settings(None))
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

    def resolve_path(self, path: str) -> Path | str:
        """A path from the spec: relative ones are looked up beside the spec file first."""
        if server_url(path):  # a chroma server, not a file
            return path
        p = Path(path).expanduser()
        if not p.is_absolute() and self.source_dir is not None and (self.source_dir / p).exists():
            return self.source_dir / p
        return p


def load_spec(spec: str | Path | dict | SweepSpec, *, base: dict | None = None, **changes: Any) -> SweepSpec:
    """Parse a YAML file, a dict or a SweepSpec into a checked SweepSpec, expanding ranges; errors all at once.

    `changes` replace top-level spec keys (axes, zip, cells, batch, ...) and `base` updates the base parameters
    key by key; None values change nothing. Both go through the same checks as the file itself.
    """
    data, source_dir = _read(spec)
    data.update({k: v for k, v in changes.items() if v is not None})
    if base:
        data["base"] = {**(data.get("base") or {}), **{k: v for k, v in base.items() if v is not None}}
    problems: list[str] = []
    fields_ = _check_structure(data, problems)
    _check_settings(data, problems)
    axes, zipped, cells = fields_["axes"], fields_["zip"], fields_["cells"]
    size = math.prod(len(v) for v in axes.values()) * (len(next(iter(zipped.values()))) if zipped else 1) * \
        max(len(cells), 1)
    if size > MAX_CELLS:
        problems.append(f"the spec expands to {size} cells, more than {MAX_CELLS}; split it into several sweeps")
    if problems:
        raise SweepError("Invalid sweep spec:\n  - " + "\n  - ".join(problems))
    return SweepSpec(name=str(data.get("name", "sweep")), base=fields_["base"], axes=axes, zip=zipped, cells=cells,
                     preset=data.get("preset", "tiny"), sketch=data.get("sketch"), styles=data.get("styles"),
                     library=data.get("library"), batch=data.get("batch", 4), metrics=data.get("metrics", True),
                     edge_tolerance=data.get("edge_tolerance", 2), engine=engine_settings(data.get("engine")),
                     source_dir=source_dir)


def _read(spec: str | Path | dict | SweepSpec) -> tuple[dict, Path | None]:
    """The spec as a fresh dict, and the folder its relative paths are read from."""
    import yaml

    if isinstance(spec, SweepSpec):
        return spec.to_dict(), spec.source_dir
    if isinstance(spec, dict):
        return dict(spec), None
    if not isinstance(spec, (str, Path)):
        raise SweepError("A sweep spec must be a mapping with keys such as base, axes, zip, cells.")
    path = Path(spec).expanduser()
    if not path.is_file():
        raise SweepError(f"Sweep spec not found: {path}. Fix: pass a YAML file or a dict.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SweepError(f"Cannot parse the sweep spec {path}: {exc}") from None
    if not isinstance(data, dict):
        raise SweepError("A sweep spec must be a mapping with keys such as base, axes, zip, cells.")
    data.setdefault("name", path.stem)
    return data, path.parent


def _check_structure(data: dict, problems: list[str]) -> dict:
    """Check the keys, base, axes, zip and cells; return them parsed (ranges expanded)."""
    unknown = sorted(map(str, set(data) - set(SPEC_KEYS)))
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
        problems += [f"cells: unknown parameter {name!r}" for name in sorted(map(str, set(c) - known_names))]
    problems += [f"base: unknown parameter {name!r}" for name in sorted(map(str, set(base) - set(Params.names())))]
    return {"base": base, "axes": axes, "zip": zipped, "cells": cells}


def _check_settings(data: dict, problems: list[str]) -> None:
    """Check the name, batch, metrics, tolerance, preset and paths."""
    try:
        safe_name(str(data.get("name", "sweep")), "sweep name")
    except ParameterError as exc:
        problems.append(str(exc))
    batch = data.get("batch", 4)
    if not _whole(batch, 1, 64):
        problems.append(f"batch must be a whole number from 1 to 64, got {batch!r}")
    tolerance = data.get("edge_tolerance", 2)
    if not _whole(tolerance, 0, 64):
        problems.append(f"edge_tolerance must be a whole number of pixels from 0 to 64, got {tolerance!r}")
    metrics = data.get("metrics", True)
    if not isinstance(metrics, bool):
        problems.append(f"metrics must be true or false, got {metrics!r}")
    preset = data.get("preset", "tiny")
    if preset not in PRESET_NAMES:
        problems.append(f"preset must be one of {', '.join(PRESET_NAMES)}; got {preset!r}")
    for key in ("sketch", "styles", "library"):
        if data.get(key) is not None and (not isinstance(data[key], str) or "\x00" in data[key]):
            problems.append(f"{key} must be a path (a string), got {data[key]!r}")
    problems += engine_problems(data.get("engine"))


def engine_settings(raw: Any) -> dict:
    """The engine settings of a spec's `engine` value (a name, a mapping or None), defaults filled in."""
    given = {"name": raw} if isinstance(raw, str) else dict(raw or {})
    return {"name": "local", "address": None, "workers": None, "gpus_per_worker": 1, **given}


def engine_problems(raw: Any) -> list[str]:
    """What is wrong with a spec's `engine` value."""
    if raw is not None and not isinstance(raw, (str, dict)):
        return [f"engine must be 'local', 'ray' or a mapping with keys {', '.join(ENGINE_KEYS)}; got {raw!r}"]
    settings = engine_settings(raw)
    problems = [f"engine: unknown key(s) {sorted(map(str, set(settings) - set(ENGINE_KEYS)))}; known:"
                f" {', '.join(ENGINE_KEYS)}"] if set(settings) - set(ENGINE_KEYS) else []
    if settings["name"] not in ENGINES:
        problems.append(f"engine name must be one of {', '.join(ENGINES)}; got {settings['name']!r}")
    address = settings["address"]
    if address is not None and (not isinstance(address, str) or not address.strip() or "\x00" in address):
        problems.append(f"engine address must be a Ray address such as 'auto' or 'ray://head:10001', got {address!r}")
    if settings["workers"] is not None and not _whole(settings["workers"], 1, 1024):
        problems.append(f"engine workers must be a whole number from 1 to 1024, got {settings['workers']!r}")
    gpus = settings["gpus_per_worker"]
    if isinstance(gpus, bool) or not isinstance(gpus, (int, float)) or not 0 <= gpus <= 64:
        problems.append(f"engine gpus_per_worker must be a number from 0 to 64 (0: CPU workers), got {gpus!r}")
    return problems


def _whole(value: Any, lo: int, hi: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


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
        canny = merged.get("canny", Params().canny)
        canny = list(canny) if isinstance(canny, (list, tuple)) and len(canny) == 2 else [None, None]
        for side, idx in CANNY_SIDES.items():
            if side in overrides:
                canny[idx] = overrides[side]
        merged["canny"] = canny
    return Params.from_dict(merged)


def validate(spec: SweepSpec) -> list[ResolvedParams]:
    """Resolve every cell; raise one ParameterError naming every bad value and the axis values behind it."""
    failures: dict[str, list[dict]] = {}
    resolved: list[ResolvedParams] = []
    for overrides in spec.expand():
        try:
            resolved.append(cell_params(spec, overrides).resolved())
        except ParameterError as exc:
            for line in exc.problems:
                failures.setdefault(line, []).append(overrides)
    problems = []
    for line, cells in failures.items():
        # The axis values every failing cell shares are the ones to blame.
        common = {k: v for k, v in cells[0].items() if all(_same(c.get(k), v) for c in cells)}
        where = ", ".join(f"{k} = {v!r}" for k, v in common.items()) or "base"
        problems.append(f"{where}: {line} ({len(cells)} cell{'s' if len(cells) > 1 else ''})")
    if not failures:
        if any(isinstance(p.seed, list) for p in resolved):
            problems.append("a sweep cell takes one seed; put several seeds on a 'seed' axis instead")
        problems += _duplicates(spec.expand(), resolved)
    if problems:
        more = f"\n  ... and {len(problems) - 30} more" if len(problems) > 30 else ""
        raise ParameterError("Invalid sweep values:\n  - " + "\n  - ".join(problems[:30]) + more, problems=problems)
    return resolved


def _duplicates(overrides: list[dict], resolved: list[ResolvedParams]) -> list[str]:
    """Cells that resolve to the same parameters would be one image counted twice: name them."""
    first: dict[str, int] = {}
    out = []
    for i, p in enumerate(resolved):
        key = canonical(p.to_dict())
        if key in first:
            out.append(f"cells {first[key]} ({_show(overrides[first[key]])}) and {i} ({_show(overrides[i])}) "
                       "resolve to the same parameters; remove the repeated value")
        else:
            first[key] = i
    return out


def _show(overrides: dict) -> str:
    return ", ".join(f"{k} = {v!r}" for k, v in overrides.items()) or "base"


def _same(a: Any, b: Any) -> bool:
    return canonical(a) == canonical(b)


def grid_dims(spec: dict) -> list[list[str]]:
    """The report's grid dimensions, each a list of names that vary together: every axis alone, the zipped
    axes as one, the explicit cells as one; seeds last (X/Y/Z plot order: the first two are X and Y)."""
    axes, zipped, cells = spec.get("axes") or {}, spec.get("zip") or {}, spec.get("cells") or []
    dims = [[name] for name in axes if name != "seed"]
    if zipped:
        dims.append(list(zipped))
    if cells:
        dims.append(list(dict.fromkeys(k for c in cells for k in c)))
    if "seed" in axes:
        dims.append(["seed"])
    return dims


def spec_from_params(params: Params, name: str, axes: dict[str, list] | None = None, **settings: Any) -> dict:
    """A sweep spec as plain data (ready for YAML): `params` as its base, `axes` as its grid.

    `settings` are further top-level keys (preset, sketch, library, batch, ...). The spec is checked as
    `load_spec` and `validate` check a file, so one written from it loads, and each cell is `params` with that
    cell's axis values applied. Values left at None are left out (None means "the default" in a spec).
    """
    base = {key: value for key, value in params.to_dict().items() if value is not None}
    data = {"name": name, **settings, "base": base, "axes": dict(axes or {})}
    validate(load_spec(data))
    return data


def write_spec(spec: dict, folder: str | Path, sketch: Image.Image | None = None) -> Path:
    """Write `spec` (a dict such as `spec_from_params` returns) as YAML into `folder`, atomically, under a name
    no file there has yet: `<name>.yaml`, else `<name>-2.yaml`, ... (a user's spec is never replaced).

    `sketch` is saved beside it as `<name>.sketch.png` and the spec points at it, so the sweep runs on the same
    picture. The spec's name follows the file's, so its run folder is a new one too. Returns the spec's path.
    """
    import yaml

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path, name = _reserve(folder, safe_name(str(spec["name"]), "sweep name"))
    except OSError as exc:
        raise StorageError(f"Cannot write a sweep spec into {folder}: {exc.strerror or exc}. Fix: pick a folder"
                           " you can write to.") from None
    written = [path]
    try:
        spec = {**spec, "name": name}
        if sketch is not None:
            written.append(atomic_save_image(sketch, folder / f"{name}.sketch.png"))
            spec["sketch"] = written[-1].name
        text = "# Written by sdrag. Run: python -m sdrag sweep <this file>\n" + \
            yaml.safe_dump(spec, sort_keys=False, allow_unicode=True)
        atomic_write_bytes(path, text.encode())
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    return path


def _reserve(folder: Path, stem: str) -> tuple[Path, str]:
    """Claim `<stem>.yaml`, else `<stem>-2.yaml`, ...: created exclusively, so a file made meanwhile is kept."""
    for n in itertools.count(1):
        name = stem if n == 1 else f"{stem}-{n}"
        if (folder / f"{name}.sketch.png").exists():
            continue
        try:
            with open(folder / f"{name}.yaml", "x"):
                return folder / f"{name}.yaml", name
        except FileExistsError:
            continue
    raise AssertionError("itertools.count never ends")
