"""IP-Adapter scales: a number, an InstantStyle preset or a block map, expanded to SD1.5's attention layers."""

from __future__ import annotations

import math
import numbers
from typing import Any

from ..errors import ParameterError
from ..models.sd15 import ATTENTION_LAYOUT, IP_SCALE_PRESETS

IP_SCALE_RANGE = (0.0, 5.0)


def is_number(value: Any) -> bool:
    """A real number that is not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def normalize_ip_scale(scale: Any) -> float | dict:
    """Turn a float, a preset name ('style', 'style+layout', optionally ':0.6') or a block map into a float
    or a full SD1.5 block map; refuse unknown blocks and maps that switch IP-Adapter off."""
    lo, hi = IP_SCALE_RANGE
    if is_number(scale):
        if not math.isfinite(float(scale)) or not lo <= float(scale) <= hi:
            raise ParameterError(f"ip_adapter_scale must be from {lo} to {hi}, got {scale!r}.")
        return float(scale)
    if isinstance(scale, str):
        return _preset(scale)
    if isinstance(scale, dict):
        return _scale_map(scale, 1.0)
    raise ParameterError(f"ip_adapter_scale must be a number, a preset name or a block map; got {scale!r}.")


def _preset(scale: str) -> dict:
    """A preset name with an optional ':strength', as a full block map."""
    lo, hi = IP_SCALE_RANGE
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


def _layer_values(where: str, v: Any, count: int, factor: float, problems: list[str]) -> list[float]:
    """One block's per-layer scales (one number for all, or one per layer), times `factor`."""
    lo, hi = IP_SCALE_RANGE
    vals = list(v) if isinstance(v, (list, tuple)) else [v] * count
    if len(vals) != count:
        problems.append(f"{where} has {count} attention layers in SD1.5; give one number or {count}.")
        return [0.0] * count
    if not all(is_number(x) and math.isfinite(float(x)) and lo <= float(x) <= hi for x in vals):
        problems.append(f"{where} scales must be numbers from {lo} to {hi}; got {v!r}.")
        return [0.0] * count
    return [float(x) * factor for x in vals]


def _check_block_names(part: str, given: dict, problems: list[str]) -> None:
    """Exact block names only: 'block_01' or 1 would otherwise be skipped silently, leaving that block at 0."""
    valid = [f"block_{i}" for i in ATTENTION_LAYOUT[part]]
    for key in given:
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


def _scale_map(block_map: dict, factor: float) -> dict:
    """Expand a block map into SD1.5's full map (every attention block, one value per layer)."""
    problems = [f"unknown part {part!r}; a block map has keys down, mid, up." for part in block_map
                if part not in ATTENTION_LAYOUT]
    full: dict[str, Any] = {"down": {}, "mid": 0.0, "up": {}}
    for part in ("down", "up"):
        layout = ATTENTION_LAYOUT[part]
        given = block_map.get(part, {})
        if not isinstance(given, dict):
            given = {f"block_{i}": given for i in layout}
        _check_block_names(part, given, problems)
        for i, count in layout.items():
            full[part][f"block_{i}"] = _layer_values(f"{part}.block_{i}", given.get(f"block_{i}", 0.0), count,
                                                     factor, problems)
    if "mid" in block_map:
        mid = block_map["mid"]
        full["mid"] = _layer_values("mid", mid if isinstance(mid, (list, tuple)) else [mid], 1, factor, problems)[0]
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
        for layer_scales_ in full[part].values():
            vals.extend(layer_scales_)
    return vals


def layer_scales(scale: float | dict) -> dict[str, float]:
    """Per-layer IP-Adapter scales keyed like diffusers' attention processor prefixes."""
    full = scale if isinstance(scale, dict) else {
        "down": {f"block_{i}": [scale] * n for i, n in ATTENTION_LAYOUT["down"].items()}, "mid": scale,
        "up": {f"block_{i}": [scale] * n for i, n in ATTENTION_LAYOUT["up"].items()}}
    out = {}
    for part in ("down", "up"):
        for block, vals in full[part].items():
            i = block.removeprefix("block_")
            out.update({f"{part}_blocks.{i}.attentions.{j}": float(v) for j, v in enumerate(vals)})
    out["mid_block.attentions.0"] = float(full["mid"])
    return out
