"""Which weights a preset uses (the SD1.5 repos, their revisions) and on which device and dtype they run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from .errors import ParameterError, WeightsUnavailableError

# The v1.1 Canny ControlNet was trained on cleaner data than v1.0; v1.0 stays one word away.
CONTROLNETS = {
    "canny-v11": "lllyasviel/control_v11p_sd15_canny",
    "canny-v10": "lllyasviel/sd-controlnet-canny",
}
# The hub repos of the `sd15` preset; `tiny` and `sd15-random` hold one local folder per id, same layout.
SD15_REPOS = {
    "base": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "controlnet": CONTROLNETS["canny-v11"],
    "ip_adapter": "h94/IP-Adapter",
    "clip": "openai/clip-vit-base-patch32",
}
IP_ADAPTER_WEIGHT = "ip-adapter_sd15.safetensors"
# `main` of openai/clip-vit-base-patch32 holds pickled, flax and tf weights only; the safetensors conversion lives
# in the converter bot's pull request refs/pr/66. Pinning its commit keeps loads safetensors-only, the cache in
# one snapshot, and the weights fixed even if the PR moves. (Checked against the repo's file lists in
# sdrag/assets/hub/SOURCES.md.)
CLIP_REVISION = "c237dc49a33fc61debc9276459120b7eac67e7ef"
# sd15-random: SD1.5's full-size architecture with random weights, for speed/memory benchmarks offline.
PRESET_NAMES = ("sd15", "tiny", "sd15-random")
_MIN_TOKENS = 100


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
    from . import tiny

    root = tiny.tiny_root(shapes="tiny" if preset == "tiny" else "full")
    return lambda repo: str(root / repo)


def is_local(source: str) -> bool:
    """Tell whether a model source names a local folder rather than a hub repo id."""
    return source.startswith(("/", "./", "../", "~")) or Path(source).expanduser().is_dir()


def checked_tokenizer(tokenizer, source: str):
    """Return `tokenizer`, or raise if it loaded degraded (transformers returns a 2-token one silently)."""
    if len(tokenizer) < _MIN_TOKENS:
        raise WeightsUnavailableError(
            f"The tokenizer from {source} has only {len(tokenizer)} tokens: its vocabulary files are missing."
            " Fix: re-download the model or point at a folder with tokenizer files."
        )
    return tokenizer


def pick_device(device: str | None = None):
    """Return the torch device to run on: `device` if given, else CUDA when present, else CPU."""
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ParameterError(f"Unknown device {device!r}. Use 'cpu', 'cuda', 'cuda:0' or 'auto'.") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ParameterError("device='cuda' was asked for but torch sees no CUDA GPU. Use device='cpu'.")
    return dev


_DTYPES = {"fp16": "float16", "float16": "float16", "half": "float16", "bf16": "bfloat16",
           "bfloat16": "bfloat16", "fp32": "float32", "float32": "float32", "float": "float32"}


def pick_dtype(device, dtype=None):
    """Return the torch dtype: `dtype` if given, else fp16 on CUDA and fp32 elsewhere (fp16 is slow on CPU)."""
    import torch

    if dtype in (None, "auto"):
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    name = _DTYPES.get(str(dtype).lower())
    if name is None:
        raise ParameterError(f"Unknown dtype {dtype!r}. Use 'fp16', 'bf16', 'fp32' or 'auto'.")
    return getattr(torch, name)
