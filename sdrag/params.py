"""The one parameters object that flows from a widget or papermill cell to the pipeline and the manifest."""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .errors import ParameterError

# Attention layers per block of the SD1.5 UNet: the map IP-Adapter block scales address.
# up.block_0 has no attention in SD1.5 (SDXL recipes that target it silently do nothing here).
SD15_LAYOUT: dict[str, dict[int, int] | int] = {"down": {0: 2, 1: 2, 2: 2}, "mid": 1, "up": {1: 3, 2: 3, 3: 3}}

# InstantStyle's block choice for SD1.5: style lives in up.block_1, layout in down.block_2 and mid.
IP_SCALE_PRESETS: dict[str, dict] = {
    "style": {"up": {"block_1": 1.0}},
    "style+layout": {"down": {"block_2": 1.0}, "mid": 1.0, "up": {"block_1": 1.0}},
}
SCHEDULERS = ("unipc", "ddim", "pndm", "euler", "euler_a", "dpm++2m")
FITS = ("pad", "crop")

LIMITS = {
    "steps": (1, 500),
    "guidance": (0.0, 50.0),
    "controlnet_scale": (0.0, 5.0),
    "ip_adapter_scale": (0.0, 5.0),
    "canny": (0, 255),
    "size": (8, 2048),
    "seeds": 64,
    "top_k": (1, 16),
}


@dataclass
class Params:
    """Everything that decides one generation; `resolved()` validates it and fills in derived values."""

    prompt: str = ""
    negative_prompt: str = ""
    steps: int = 20
    guidance: float = 7.5
    controlnet_scale: float = 1.5
    control_start: float = 0.0
    control_end: float = 1.0
    ip_adapter_scale: Any = 0.8
    canny: tuple[float, float] = (50, 150)
    seed: int | list[int] = 0
    size: int | tuple[int, int] = 512
    fit: str = "pad"
    scheduler: str = "unipc"
    style: Any = None
    top_k: int = 1
    tags: list[str] | None = None

    @classmethod
    def names(cls) -> list[str]:
        """Return the parameter names (what `Workbench.run` and sweep axes accept)."""
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, data: dict) -> Params:
        """Build Params from a dict, refusing unknown keys with the list of known ones."""
        unknown = sorted(set(data) - set(cls.names()))
        if unknown:
            raise ParameterError(f"Unknown parameter(s) {unknown}. Known: {', '.join(cls.names())}.")
        return cls(**data)

    def update(self, **changes: Any) -> Params:
        """Return a copy with `changes` applied (unknown names refused)."""
        return Params.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict:
        """Return a JSON-serialisable dict."""
        data = asdict(self)
        data["canny"] = list(self.canny) if isinstance(self.canny, (tuple, list)) else self.canny
        if isinstance(self.size, tuple):
            data["size"] = list(self.size)
        if isinstance(self.style, list):
            data["style"] = [list(s) if isinstance(s, tuple) else s for s in self.style]
        return data

    @property
    def seeds(self) -> list[int]:
        """The seeds as a list (one image per seed)."""
        return list(self.seed) if isinstance(self.seed, (list, tuple)) else [self.seed]

    @property
    def width_height(self) -> tuple[int, int]:
        """The output (width, height) after validation."""
        return tuple(self.size) if isinstance(self.size, (list, tuple)) else (self.size, self.size)

    def resolved(self) -> Params:
        """Validate every field; raise one ParameterError listing all problems, else return a normalised copy."""
        errors: list[str] = []
        out = replace(self)
        out.prompt = _text("prompt", self.prompt, errors)
        out.negative_prompt = _text("negative_prompt", self.negative_prompt, errors)
        out.steps = _int("steps", self.steps, *LIMITS["steps"], errors)
        out.guidance = _num("guidance", self.guidance, *LIMITS["guidance"], errors)
        out.controlnet_scale = _num("controlnet_scale", self.controlnet_scale, *LIMITS["controlnet_scale"], errors)
        out.control_start = _num("control_start", self.control_start, 0.0, 1.0, errors)
        out.control_end = _num("control_end", self.control_end, 0.0, 1.0, errors)
        if isinstance(out.control_start, float) and isinstance(out.control_end, float):
            if out.control_start >= out.control_end:
                errors.append(f"control_start ({out.control_start}) must be below control_end ({out.control_end}).")
        try:
            out.ip_adapter_scale = normalize_ip_scale(self.ip_adapter_scale)
        except ParameterError as exc:
            errors.append(str(exc))
        out.canny = _canny(self.canny, errors)
        out.seed = _seed(self.seed, errors)
        out.size = _size(self.size, errors)
        out.fit = _choice("fit", self.fit, FITS, errors)
        out.scheduler = _choice("scheduler", self.scheduler, SCHEDULERS, errors)
        out.style = _style(self.style, errors)
        out.top_k = _int("top_k", self.top_k, *LIMITS["top_k"], errors)
        if self.tags is not None:
            tags = [self.tags] if isinstance(self.tags, str) else self.tags
            if not isinstance(tags, (list, tuple)) or not all(isinstance(t, str) and t for t in tags):
                errors.append(f"tags must be a list of non-empty strings, got {self.tags!r}.")
            else:
                out.tags = list(tags)
        if errors:
            raise ParameterError("Invalid parameters:\n  - " + "\n  - ".join(errors))
        return out


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _num(name: str, value: Any, lo: float, hi: float, errors: list[str]) -> Any:
    if not _is_number(value) or not math.isfinite(float(value)) or not lo <= float(value) <= hi:
        errors.append(f"{name} must be a number from {lo} to {hi}, got {value!r}.")
        return value
    return float(value)


def _int(name: str, value: Any, lo: int, hi: int, errors: list[str]) -> Any:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or not lo <= value <= hi:
        errors.append(f"{name} must be a whole number from {lo} to {hi}, got {value!r}.")
        return value
    return int(value)


def _text(name: str, value: Any, errors: list[str]) -> Any:
    if not isinstance(value, str):
        errors.append(f"{name} must be a string, got {type(value).__name__}.")
    return value


def _choice(name: str, value: Any, allowed: tuple[str, ...], errors: list[str]) -> Any:
    if value not in allowed:
        errors.append(f"{name} must be one of {', '.join(allowed)}; got {value!r}.")
    return value


def _canny(value: Any, errors: list[str]) -> Any:
    lo, hi = LIMITS["canny"]
    if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(_is_number(v) for v in value):
        errors.append(f"canny must be a pair (low, high) of numbers, got {value!r}. Example: canny=(50, 150).")
        return value
    low, high = (float(v) for v in value)
    if not all(math.isfinite(v) and lo <= v <= hi for v in (low, high)):
        errors.append(f"canny thresholds must be from {lo} to {hi}, got {value!r}.")
    elif low > high:
        errors.append(f"canny low threshold ({low:g}) is above the high one ({high:g}); swap them.")
    return (int(low) if low.is_integer() else low, int(high) if high.is_integer() else high)


def _seed(value: Any, errors: list[str]) -> Any:
    seeds = list(value) if isinstance(value, (list, tuple)) else [value]
    bad = [s for s in seeds if not isinstance(s, numbers.Integral) or isinstance(s, bool) or not 0 <= s < 2**63]
    if bad or not seeds:
        errors.append(f"seed must be a whole number from 0 to 2**63-1 or a non-empty list of them; got {value!r}.")
    elif len(seeds) > LIMITS["seeds"]:
        errors.append(f"at most {LIMITS['seeds']} seeds per call, got {len(seeds)}; split them over calls.")
    elif isinstance(value, (list, tuple)):
        return [int(s) for s in seeds]
    else:
        return int(value)
    return value


def _size(value: Any, errors: list[str]) -> Any:
    lo, hi = LIMITS["size"]
    sides = list(value) if isinstance(value, (list, tuple)) else [value]
    if len(sides) not in (1, 2) or not all(
        isinstance(s, numbers.Integral) and not isinstance(s, bool) and lo <= s <= hi for s in sides
    ):
        errors.append(f"size must be a whole number or (width, height) from {lo} to {hi}; got {value!r}.")
        return value
    # The VAE downsamples by 8: other sizes would be cut silently by diffusers, so round here and record it.
    rounded = [int(s) // 8 * 8 for s in sides]
    return rounded[0] if len(rounded) == 1 else tuple(rounded)


def _style(value: Any, errors: list[str]) -> Any:
    if value is None or value == "auto":
        return None
    if isinstance(value, str):
        if not value.strip():
            errors.append("style is an empty string. Fix: use None or 'auto' to retrieve, or a style id or name.")
        return value
    pairs = list(value.items()) if isinstance(value, dict) else value
    if isinstance(pairs, (list, tuple)) and pairs:
        out = []
        for item in pairs:
            if isinstance(item, str) and item.strip():
                out.append((item, 1.0))
            elif (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str)
                  and item[0].strip() and _is_number(item[1]) and math.isfinite(item[1]) and item[1] > 0):
                out.append((item[0], float(item[1])))
            else:
                errors.append(f"style blend entries must be (style id, weight > 0); got {item!r}.")
                return value
        return out
    errors.append(f"style must be None/'auto', a style id, or a list of (id, weight); got {value!r}.")
    return value


def normalize_ip_scale(scale: Any) -> float | dict:
    """Turn a float, a preset name ('style', 'style+layout', optionally ':0.6') or a block map into a float
    or a full SD1.5 block map; refuse unknown blocks and maps that switch IP-Adapter off."""
    lo, hi = LIMITS["ip_adapter_scale"]
    if _is_number(scale):
        if not math.isfinite(float(scale)) or not lo <= float(scale) <= hi:
            raise ParameterError(f"ip_adapter_scale must be from {lo} to {hi}, got {scale!r}.")
        return float(scale)
    if isinstance(scale, str):
        name, _, strength = scale.partition(":")
        if name not in IP_SCALE_PRESETS:
            raise ParameterError(
                f"Unknown ip_adapter_scale preset {scale!r}. Use a number, {', '.join(IP_SCALE_PRESETS)}"
                " (optionally with ':strength', e.g. 'style:0.6'), or a block map."
            )
        try:
            factor = float(strength) if strength else 1.0
        except ValueError:
            raise ParameterError(f"ip_adapter_scale {scale!r}: strength after ':' must be a number.") from None
        if not math.isfinite(factor) or not lo < factor <= hi:
            raise ParameterError(f"ip_adapter_scale {scale!r}: strength must be above {lo} and at most {hi}.")
        return _scale_map(IP_SCALE_PRESETS[name], factor)
    if isinstance(scale, dict):
        return _scale_map(scale, 1.0)
    raise ParameterError(f"ip_adapter_scale must be a number, a preset name or a block map; got {scale!r}.")


def _scale_map(block_map: dict, factor: float) -> dict:
    """Expand a block map into SD1.5's full map (every attention block, one value per layer)."""
    lo, hi = LIMITS["ip_adapter_scale"]
    problems: list[str] = []

    def value(where: str, v: Any, count: int) -> list[float]:
        vals = list(v) if isinstance(v, (list, tuple)) else [v] * count
        if len(vals) != count:
            problems.append(f"{where} has {count} attention layers in SD1.5; give one number or {count}.")
            return [0.0] * count
        if not all(_is_number(x) and math.isfinite(float(x)) and lo <= float(x) <= hi for x in vals):
            problems.append(f"{where} scales must be numbers from {lo} to {hi}; got {v!r}.")
            return [0.0] * count
        return [float(x) * factor for x in vals]

    full: dict[str, Any] = {"down": {}, "mid": 0.0, "up": {}}
    for part in block_map:
        if part not in SD15_LAYOUT:
            problems.append(f"unknown part {part!r}; a block map has keys down, mid, up.")
    for part in ("down", "up"):
        layout = SD15_LAYOUT[part]
        given = block_map.get(part, {})
        if not isinstance(given, dict):
            given = {f"block_{i}": given for i in layout}
        valid = [f"block_{i}" for i in layout]
        for key in given:
            # Exact names only: 'block_01' or 1 would otherwise be skipped silently, leaving that block at 0.
            if key in valid:
                continue
            idx = key.removeprefix("block_") if isinstance(key, str) else ""
            if idx.isdigit() and key == f"block_{int(idx)}":
                sdxl = (part, key) == ("up", "block_0")
                hint = " (an SDXL recipe? on SD1.5 use 'style' = up.block_1)" if sdxl else ""
                problems.append(f"{part}.{key} has no attention layers in SD1.5{hint}; valid {part} blocks:"
                                f" {', '.join(valid)}.")
            else:
                problems.append(f"{part} key {key!r} is not a block name; valid {part} blocks: {', '.join(valid)}.")
        for i, count in layout.items():
            full[part][f"block_{i}"] = value(f"{part}.block_{i}", given.get(f"block_{i}", 0.0), count)
    if "mid" in block_map:
        mid = block_map["mid"]
        full["mid"] = value("mid", mid if isinstance(mid, (list, tuple)) else [mid], 1)[0]
    if problems:
        raise ParameterError("ip_adapter_scale block map: " + " ".join(problems))
    if not any(_flatten(full)):
        raise ParameterError(
            "ip_adapter_scale block map resolves to all zeros, which switches IP-Adapter off. Use"
            " ip_adapter_scale=0 to switch it off on purpose, or 'style' / 'style+layout'."
        )
    return full


def _flatten(full: dict) -> list[float]:
    vals = [full["mid"]]
    for part in ("down", "up"):
        for layer_scales in full[part].values():
            vals.extend(layer_scales)
    return vals


def layer_scales(scale: float | dict) -> dict[str, float]:
    """Per-layer IP-Adapter scales keyed like diffusers' attention processor prefixes."""
    if not isinstance(scale, dict):
        out = {}
        for part in ("down", "up"):
            for i, count in SD15_LAYOUT[part].items():
                out.update({f"{part}_blocks.{i}.attentions.{j}": float(scale) for j in range(count)})
        out["mid_block.attentions.0"] = float(scale)
        return out
    out = {}
    for part in ("down", "up"):
        for block, vals in scale[part].items():
            i = block.removeprefix("block_")
            out.update({f"{part}_blocks.{i}.attentions.{j}": v for j, v in enumerate(vals)})
    out["mid_block.attentions.0"] = scale["mid"]
    return out
