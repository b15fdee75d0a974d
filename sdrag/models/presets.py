"""The preset table: which model sources (hub repos at revisions, or local folders) each preset names."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from ..errors import ParameterError
from .sd15 import CLIP_REVISION, CONTROLNETS, IP_ADAPTER_WEIGHT, SD15_REPOS

# sd15-random: SD1.5's full-size architecture with random weights, for speed/memory benchmarks offline.
PRESET_NAMES = ("sd15", "tiny", "sd15-random")


@dataclass(frozen=True)
class ModelSpec:
    """Where each model comes from: hub repo ids (at a revision) or local folders in hub layout."""

    preset: str
    base: str
    controlnet: str
    ip_adapter: str
    clip: str
    ip_adapter_subfolder: str = "models"
    ip_adapter_weight: str = IP_ADAPTER_WEIGHT
    image_encoder_folder: str = "image_encoder"
    allow_pickle: bool = False
    # A branch, tag or commit per hub source; None means the repo's main branch. Ignored for local folders.
    base_revision: str | None = None
    controlnet_revision: str | None = None
    ip_adapter_revision: str | None = None
    clip_revision: str | None = None

    def to_dict(self) -> dict:
        """Return the spec as a JSON-serialisable dict."""
        return asdict(self)

    def revision(self, part: str) -> str | None:
        """The revision a hub source is loaded at (None for local folders and for `main`)."""
        return None if is_local(getattr(self, part)) else getattr(self, f"{part}_revision")

    @property
    def image_encoder_subfolder(self) -> str:
        """Where the IP-Adapter image encoder lives in its repo, read as diffusers' load_ip_adapter reads it."""
        # A bare name sits inside the weights' subfolder; a path with "/" is taken from the repo root as is.
        if "/" in self.image_encoder_folder:
            return self.image_encoder_folder.strip("/")
        return f"{self.ip_adapter_subfolder}/{self.image_encoder_folder}".strip("/")


def get_spec(preset: str = "tiny", **overrides: str | bool | None) -> ModelSpec:
    """Return the ModelSpec of a preset, with any field replaced by `overrides` (ids or local folders).

    A source overridden without its `*_revision` loads from its main branch: a pin made for one repo never
    follows the name to another. `controlnet="canny-v10"` picks the v1.0 Canny ControlNet (locally on tiny).
    """
    if preset not in PRESET_NAMES:
        raise ParameterError(f"Unknown preset {preset!r}. Use one of {', '.join(PRESET_NAMES)}.")
    known = {f.name for f in fields(ModelSpec)} - {"preset"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ParameterError(f"Unknown model override(s) {unknown}. Overridable: {sorted(known)}.")
    local = _local_repos(preset)
    spec = ModelSpec(preset=preset, clip_revision=None if local else CLIP_REVISION,
                     **{part: local(repo) if local else repo for part, repo in SD15_REPOS.items()})
    overrides = dict(overrides)
    if "controlnet" in overrides and str(overrides["controlnet"]) in CONTROLNETS:
        repo = CONTROLNETS[str(overrides["controlnet"])]
        overrides["controlnet"] = local(repo) if local else repo
    for part in SD15_REPOS:
        if part in overrides and f"{part}_revision" not in overrides:
            overrides[f"{part}_revision"] = None
    return replace(spec, **overrides)


def _local_repos(preset: str):
    """For the random-weight presets, a function from hub id to its local folder; None for `sd15`."""
    if preset == "sd15":
        return None
    from .tiny import tiny_root

    root = tiny_root(shapes="tiny" if preset == "tiny" else "full")
    return lambda repo: str(root / repo)


def is_local(source: str) -> bool:
    """Tell whether a model source names a local folder rather than a hub repo id."""
    return source.startswith(("/", "./", "../", "~")) or Path(source).expanduser().is_dir()
