"""Which weights a preset uses, whether they can be had, and on which device and dtype they run."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from urllib.parse import urlparse

from .errors import ParameterError, WeightsUnavailableError

# The v1.1 Canny ControlNet was trained on cleaner data than v1.0; v1.0 stays one word away.
CONTROLNETS = {
    "canny-v11": "lllyasviel/control_v11p_sd15_canny",
    "canny-v10": "lllyasviel/sd-controlnet-canny",
}
# sd15-random: SD1.5's full-size architecture with random weights, for speed/memory benchmarks offline.
PRESET_NAMES = ("sd15", "tiny", "sd15-random")
PROBE_TIMEOUT_S = 1.5
_MIN_TOKENS = 100


@dataclass(frozen=True)
class ModelSpec:
    """Where each model comes from: hub repo ids or local folders in hub layout."""

    preset: str
    base: str
    controlnet: str
    ip_adapter: str
    clip: str
    ip_adapter_subfolder: str = "models"
    ip_adapter_weight: str = "ip-adapter_sd15.safetensors"
    image_encoder_folder: str = "image_encoder"
    allow_pickle: bool = False

    def to_dict(self) -> dict:
        """Return the spec as a JSON-serialisable dict."""
        return asdict(self)

    def sources(self) -> dict[str, tuple[str, list[str]]]:
        """Map each component to (repo id or folder, files that must exist there)."""
        sub = self.ip_adapter_subfolder
        encoder = f"{sub}/{self.image_encoder_folder}"
        return {
            "base": (self.base, ["model_index.json", "unet/config.json"]),
            "controlnet": (self.controlnet, ["config.json"]),
            # diffusers loads the image encoder without use_safetensors, so its safetensors file is required
            # here: otherwise a pickled pytorch_model.bin beside the config would be loaded silently.
            "ip_adapter": (self.ip_adapter, [f"{sub}/{self.ip_adapter_weight}", f"{encoder}/config.json"]
                           + ([] if self.allow_pickle else [f"{encoder}/model.safetensors"])),
            "clip": (self.clip, ["config.json"]),
        }


def get_spec(preset: str = "tiny", **overrides: str | bool) -> ModelSpec:
    """Return the ModelSpec of a preset, with any field replaced by `overrides` (ids or local folders)."""
    if preset == "sd15":
        spec = ModelSpec(
            preset="sd15",
            base="stable-diffusion-v1-5/stable-diffusion-v1-5",
            controlnet=CONTROLNETS["canny-v11"],
            ip_adapter="h94/IP-Adapter",
            clip="openai/clip-vit-base-patch32",
        )
    elif preset in ("tiny", "sd15-random"):
        from . import tiny

        root = tiny.tiny_root(shapes="tiny" if preset == "tiny" else "full")
        spec = ModelSpec(
            preset=preset,
            base=str(root / tiny.BASE_DIR),
            controlnet=str(root / tiny.CONTROLNET_DIR),
            ip_adapter=str(root / tiny.IP_ADAPTER_DIR),
            clip=str(root / tiny.CLIP_DIR),
            ip_adapter_weight=tiny.IP_ADAPTER_WEIGHT,
        )
    else:
        raise ParameterError(f"Unknown preset {preset!r}. Use one of {', '.join(PRESET_NAMES)}.")
    fields = set(spec.to_dict()) - {"preset"}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ParameterError(f"Unknown model override(s) {unknown}. Overridable: {sorted(fields)}.")
    if "controlnet" in overrides:
        overrides["controlnet"] = CONTROLNETS.get(str(overrides["controlnet"]), overrides["controlnet"])
    return replace(spec, **overrides)


def is_local(source: str) -> bool:
    """Tell whether a model source names a local folder rather than a hub repo id."""
    return source.startswith(("/", "./", "../", "~")) or Path(source).expanduser().is_dir()


def hub_offline() -> bool:
    """Tell whether the user asked for no hub access at all."""
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "") or os.environ.get("SDRAG_OFFLINE", "")
    return bool(constants.HF_HUB_OFFLINE) or flag.strip().lower() in {"1", "true", "yes", "on"}


_probe_cache: dict[str, tuple[float, bool]] = {}


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Tell whether the hub endpoint accepts a TCP connection within `timeout` seconds (cached for 60 s)."""
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    host = url.hostname or "huggingface.co"
    port = url.port or (443 if url.scheme == "https" else 80)
    key = f"{host}:{port}"
    hit = _probe_cache.get(key)
    if hit and time.monotonic() - hit[0] < 60:
        return hit[1]
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    # Name resolution ignores socket timeouts, so the whole probe runs on a thread we stop waiting for.
    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(timeout)
    ok = bool(result and result[0])
    _probe_cache[key] = (time.monotonic(), ok)
    return ok


def check_available(spec: ModelSpec) -> bool:
    """Raise one WeightsUnavailableError listing every missing part; return True when loads must stay local.

    Local folders must hold the expected files. Hub ids must be in the local cache, or the hub must answer.
    """
    from huggingface_hub import try_to_load_from_cache

    missing: list[str] = []
    remote: list[str] = []
    for part, (source, files) in spec.sources().items():
        if is_local(source):
            folder = Path(source).expanduser()
            for name in files:
                if not (folder / name).is_file():
                    missing.append(f"{part}: {folder / name} (local folder)")
            continue
        for name in files:
            cached = try_to_load_from_cache(source, name)
            if not isinstance(cached, str):
                remote.append(f"{part}: {source}/{name}")
    if missing:
        raise WeightsUnavailableError(
            "Model files are missing from local folders:\n  " + "\n  ".join(missing)
            + "\nFix: point the override at a complete folder in hub layout (safetensors weights; pickled ones"
            " need allow_pickle=True), or use preset='tiny'."
        )
    if not remote:
        return True
    offline = hub_offline()
    if offline or not hub_reachable():
        why = "HF_HUB_OFFLINE/SDRAG_OFFLINE is set" if offline else "the Hugging Face hub is unreachable"
        raise WeightsUnavailableError(
            f"Preset {spec.preset!r} needs weights that are not downloaded, and {why}:\n  "
            + "\n  ".join(remote)
            + "\nTwo ways out: go online once so they download into the Hugging Face cache (or pass local"
            " folders as overrides), or use preset='tiny' (random weights, works offline)."
        )
    return False


def checked_tokenizer(tokenizer, source: str):
    """Return `tokenizer`, or raise if it loaded degraded (transformers returns a 2-token one silently)."""
    if len(tokenizer) < _MIN_TOKENS:
        raise WeightsUnavailableError(
            f"The tokenizer from {source} has only {len(tokenizer)} tokens: its vocabulary files are missing."
            " Fix: re-download the model or point at a folder with tokenizer files."
        )
    return tokenizer


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def load_errors() -> tuple[type[BaseException], ...]:
    """Exception types a from_pretrained call raises for missing, damaged or refused weights."""
    from huggingface_hub.errors import EntryNotFoundError

    return OSError, ValueError, EntryNotFoundError


def load_failure(part: str, source: str, exc: BaseException, allow_pickle: bool) -> WeightsUnavailableError:
    """Build the one clear error for a component that failed to load."""
    fix = "re-download it, or point the override at a complete folder in hub layout"
    folder = Path(source).expanduser()
    if not allow_pickle and folder.is_dir() and any(
        p.suffix in PICKLE_SUFFIXES for p in folder.rglob("*") if p.is_file()
    ):
        fix = ("it holds pickled weights only, which can run code when loaded; convert them to safetensors, or"
               " opt in with allow_pickle=True if you trust the source")
    return WeightsUnavailableError(f"Could not load {part} from {source}: {exc}\nFix: {fix}.")


def load_kwargs(spec: ModelSpec, local_only: bool) -> dict:
    """Keyword arguments every from_pretrained call of this spec shares."""
    # None lets diffusers fall back to pickled .bin files; False/True would refuse them.
    return {"local_files_only": local_only, "use_safetensors": None if spec.allow_pickle else True}


@contextlib.contextmanager
def quiet_loading():
    """Silence load-time progress bars and advisory warnings of diffusers/transformers (errors still raise)."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    levels = dlog.get_verbosity(), tlog.get_verbosity()
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    dlog.set_verbosity_error()
    tlog.set_verbosity_error()
    try:
        yield
    finally:
        dlog.set_verbosity(levels[0])
        tlog.set_verbosity(levels[1])
        dlog.enable_progress_bar()
        tlog.enable_progress_bar()


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
