"""The one parameters object that flows from a widget or papermill cell to the pipeline and the manifest.

`Params` holds values as a user gives them; `Params.resolved()` checks them all and returns `ResolvedParams`,
the canonical form the generator takes and the manifest records.
"""

from __future__ import annotations

import difflib
import functools
import math
import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..errors import ParameterError
from ..models.sd15 import SCHEDULERS, VAE_SCALE
from ..retrieval.ranking import METHODS
from .ipscale import IP_SCALE_RANGE, is_number, normalize_ip_scale

FITS = ("pad", "crop")

# The range of every bounded parameter: validation and the widgets' sliders read them here.
LIMITS = {
    "steps": (1, 500),
    "guidance": (0.0, 50.0),
    "controlnet_scale": (0.0, 5.0),
    "control": (0.0, 1.0),
    "ip_adapter_scale": IP_SCALE_RANGE,
    "canny": (0, 255),
    "size": (8, 2048),
    "seeds": 64,
    "top_k": (1, 16),
    "diversity": (0.0, 1.0),
}

# Names other tools (diffusers, web UIs) give our parameters: an unknown name here is pointed at ours.
ALIASES = {
    "cfg": "guidance", "cfg_scale": "guidance", "guidance_scale": "guidance",
    "num_inference_steps": "steps", "sampler": "scheduler", "negative": "negative_prompt",
    "controlnet_conditioning_scale": "controlnet_scale",
    "control_guidance_start": "control_start", "control_guidance_end": "control_end",
    "ip_scale": "ip_adapter_scale", "width": "size", "height": "size",
    "low_threshold": "canny", "high_threshold": "canny",
}


class _Fields:
    """What raw and resolved parameters share: names, the JSON form, seeds and size."""

    @classmethod
    def names(cls) -> list[str]:
        """Return the parameter names (what `Workbench.run` and sweep axes accept)."""
        return [f.name for f in fields(Params)]

    def to_dict(self) -> dict:
        """Return a JSON-serialisable dict."""
        data = asdict(self)
        data["canny"] = list(self.canny) if isinstance(self.canny, (tuple, list)) else self.canny
        if isinstance(self.size, tuple):
            data["size"] = list(self.size)
        if isinstance(self.style, list):
            data["style"] = [list(s) if isinstance(s, tuple) else s for s in self.style]
        return data

    def update(self, **changes: Any) -> Params:
        """Return raw Params with `changes` applied (unknown names refused); resolve them again to use them."""
        return Params.from_dict({**self.to_dict(), **changes})

    @property
    def seeds(self) -> list[int]:
        """The seeds as a list (one image per seed)."""
        return list(self.seed) if isinstance(self.seed, (list, tuple)) else [self.seed]

    @property
    def width_height(self) -> tuple[int, int]:
        """The output (width, height)."""
        return tuple(self.size) if isinstance(self.size, (list, tuple)) else (self.size, self.size)


def _refuses_misuse(cls: type) -> type:
    """Make `cls(...)` raise ParameterError (not TypeError) for unknown names, too many or doubled values.

    The dataclass's own `__init__` still does the work, so fields, replace, asdict, pickling and copying are as
    generated; `inspect.signature(cls)` still shows every field.
    """
    generated, names = cls.__init__, [f.name for f in fields(cls) if f.init]

    @functools.wraps(generated)
    def __init__(self, /, *args: Any, **kwargs: Any) -> None:
        _check_call(cls.__name__, names, args, kwargs)
        generated(self, *args, **kwargs)

    cls.__init__ = __init__
    return cls


def _check_call(owner: str, names: list[str], args: tuple, kwargs: dict) -> None:
    problems = []
    if len(args) > len(names):
        problems.append(f"{owner} takes at most {len(names)} values by position ({', '.join(names)}), got "
                        f"{len(args)}. Fix: pass them by name, e.g. {owner}(prompt=..., steps=...).")
    twice = [n for n in names[:len(args)] if n in kwargs]
    if twice:
        problems.append(f"{_quoted(twice)} given both by position and by name. Fix: give each once.")
    unknown = [k for k in kwargs if k not in names]
    if unknown:
        problems.append(unknown_names_message(unknown, names))
    if len(problems) == 1:
        raise ParameterError(problems[0])
    if problems:
        raise ParameterError("Invalid parameters:\n  - " + "\n  - ".join(problems), problems=problems)


def unknown_names_message(unknown: list, names: list[str]) -> str:
    """'Unknown parameter ...': each unknown name, the known name it most likely meant, and the known names."""
    noun = "parameter" if len(unknown) == 1 else "parameters"
    guesses = {key: _closest(key, names) for key in unknown}
    fixes = [f"{key!r} -> {guess!r}" for key, guess in guesses.items() if guess]
    if len(unknown) == 1 and guesses[unknown[0]]:
        fix = f"Fix: did you mean {guesses[unknown[0]]!r}?"
    elif fixes:
        rest = "" if len(fixes) == len(unknown) else " Drop or rename the others."
        fix = f"Fix: did you mean {', '.join(fixes)}?{rest}"
    else:
        fix = "Fix: drop or rename " + ("it." if len(unknown) == 1 else "them.")
    return f"Unknown {noun} {_quoted(unknown)}. {fix} Known: {', '.join(names)}."


def _quoted(keys: list) -> str:
    return ", ".join(repr(k) for k in keys)


def _closest(key: Any, names: list[str]) -> str | None:
    """The known name `key` most likely meant, if one is clear: a known alias, else the nearest spelling."""
    if not isinstance(key, str):
        return None
    plain = key.strip().lower().replace("-", "_").replace(" ", "_")
    if plain in names:
        return plain
    if ALIASES.get(plain) in names:
        return ALIASES[plain]
    close = difflib.get_close_matches(plain, names, n=1, cutoff=0.6)
    return close[0] if close else None


@_refuses_misuse
@dataclass
class Params(_Fields):
    """Everything that decides one generation, as given; `resolved()` validates it into ResolvedParams."""

    prompt: str = ""
    negative_prompt: str = ""
    steps: int = 20
    guidance: float = 7.5
    controlnet_scale: float = 1.5
    control_start: float = 0.0
    control_end: float = 1.0
    # A number, a preset name ('style', 'style+layout', with ':strength') or a block map.
    ip_adapter_scale: float | str | dict = 0.8
    canny: tuple[float, float] = (50, 150)
    seed: int | list[int] = 0
    size: int | tuple[int, int] = 512
    fit: str = "pad"
    scheduler: str = "unipc"
    # None or 'auto' retrieves; a style id or name; or a blend: [(id, weight), ...] or {id: weight}.
    style: str | list | dict | None = None
    top_k: int = 1
    tags: list[str] | None = None
    # How retrieval ranks styles: CLIP ("dense"), words of names/captions/tags ("lexical"), or both fused.
    retrieval: str = "hybrid"
    # A text whose own ranking demotes the styles it finds ("dark"); '' for none.
    avoid: str = ""
    # 0 ranks by relevance alone; towards 1 the top_k styles blended are picked to be unlike each other (MMR).
    diversity: float = 0.0

    @classmethod
    def from_dict(cls, data: Mapping) -> Params:
        """Build Params from a dict, refusing unknown keys with the closest known name and the known ones."""
        if not isinstance(data, Mapping):
            raise ParameterError(f"Params.from_dict takes a dict of parameters, got {type(data).__name__}."
                                 " Fix: pass e.g. {'prompt': 'a city', 'steps': 20}.")
        names = cls.names()
        unknown = [key for key in data if key not in names]
        if unknown:
            raise ParameterError(unknown_names_message(unknown, names))
        return cls(**data)

    def resolved(self) -> ResolvedParams:
        """Validate every field; raise one ParameterError listing all problems, else return the canonical form."""
        errors: list[str] = []
        out = {
            "prompt": _text("prompt", self.prompt, errors),
            "negative_prompt": _text("negative_prompt", self.negative_prompt, errors),
            "steps": _int("steps", self.steps, *LIMITS["steps"], errors),
            "guidance": _num("guidance", self.guidance, *LIMITS["guidance"], errors),
            "controlnet_scale": _num("controlnet_scale", self.controlnet_scale, *LIMITS["controlnet_scale"], errors),
            "control_start": _num("control_start", self.control_start, *LIMITS["control"], errors),
            "control_end": _num("control_end", self.control_end, *LIMITS["control"], errors),
            "ip_adapter_scale": _ip_scale(self.ip_adapter_scale, errors),
            "canny": _canny(self.canny, errors),
            "seed": _seed(self.seed, errors),
            "size": _size(self.size, errors),
            "fit": _choice("fit", self.fit, FITS, errors),
            "scheduler": _choice("scheduler", self.scheduler, tuple(SCHEDULERS), errors),
            "style": _style(self.style, errors),
            "top_k": _int("top_k", self.top_k, *LIMITS["top_k"], errors),
            "tags": _tags(self.tags, errors),
            "retrieval": _choice("retrieval", self.retrieval, METHODS, errors),
            "avoid": _text("avoid", self.avoid, errors),
            "diversity": _num("diversity", self.diversity, *LIMITS["diversity"], errors),
        }
        start, end = out["control_start"], out["control_end"]
        if isinstance(start, float) and isinstance(end, float) and start >= end:
            errors.append(f"control_start ({start}) must be below control_end ({end}).")
        if errors:
            raise ParameterError("Invalid parameters:\n  - " + "\n  - ".join(errors), problems=errors)
        return ResolvedParams(**out)


@dataclass(frozen=True)
class ResolvedParams(_Fields):
    """Checked parameters in canonical form: what the generator takes and a manifest records."""

    prompt: str
    negative_prompt: str
    steps: int
    guidance: float
    controlnet_scale: float
    control_start: float
    control_end: float
    ip_adapter_scale: float | dict  # a number, or SD1.5's full block map
    canny: tuple[float, float]
    seed: int | list[int]
    size: int | tuple[int, int]  # sides rounded down to multiples of 8
    fit: str
    scheduler: str
    style: str | list[tuple[str, float]] | None  # None retrieves; an id or name; or a weighted blend
    top_k: int
    tags: list[str] | None
    retrieval: str
    avoid: str
    diversity: float

    def resolved(self) -> ResolvedParams:
        """Already resolved: itself."""
        return self


def _ip_scale(value: Any, errors: list[str]) -> Any:
    try:
        return normalize_ip_scale(value)
    except ParameterError as exc:
        errors.append(str(exc))
        return value


def _tags(value: Any, errors: list[str]) -> Any:
    if value is None:
        return None
    tags = [value] if isinstance(value, str) else value
    if not isinstance(tags, (list, tuple)) or not all(isinstance(t, str) and t for t in tags):
        errors.append(f"tags must be a list of non-empty strings, got {value!r}.")
        return value
    return list(tags)


def _num(name: str, value: Any, lo: float, hi: float, errors: list[str]) -> Any:
    if not is_number(value) or not math.isfinite(float(value)) or not lo <= float(value) <= hi:
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
    if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(is_number(v) for v in value):
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
    rounded = [int(s) // VAE_SCALE * VAE_SCALE for s in sides]
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
                  and item[0].strip() and is_number(item[1]) and math.isfinite(item[1]) and item[1] > 0):
                out.append((item[0], float(item[1])))
            else:
                errors.append(f"style blend entries must be (style id, weight > 0); got {item!r}.")
                return value
        return out
    errors.append(f"style must be None/'auto', a style id, or a list of (id, weight); got {value!r}.")
    return value
