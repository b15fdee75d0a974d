"""Provenance for manifests: library versions, device, model sources and the sha256 of every weight file."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import sys
from pathlib import Path

from .files import atomic_write_json
from .presets import PICKLE_SUFFIXES, ModelSpec, is_local
from .tiny import cache_dir

PACKAGES = ("sdrag", "torch", "diffusers", "transformers", "accelerate", "safetensors", "huggingface_hub",
            "chromadb", "numpy", "pillow", "opencv-python-headless", "pandas")
WEIGHT_SUFFIXES = (".safetensors",) + PICKLE_SUFFIXES


def versions() -> dict[str, str | None]:
    """Installed versions of the packages that decide sdrag's output."""
    out: dict[str, str | None] = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def device_info(device, dtype) -> dict:
    """The device, dtype and (on CUDA) GPU name and CUDA version."""
    import torch

    info = {"device": str(device), "dtype": str(dtype).split(".")[-1], "cuda": torch.version.cuda}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _component_files(spec: ModelSpec) -> dict[str, list[Path]]:
    """The weight files each component loads, found locally (hub ids: in the Hugging Face cache)."""
    sub = spec.ip_adapter_subfolder
    parts = {
        "base": (spec.base, ["unet", "vae", "text_encoder"]),
        "controlnet": (spec.controlnet, [""]),
        "ip_adapter": (spec.ip_adapter, [f"{sub}/{spec.ip_adapter_weight}", f"{sub}/{spec.image_encoder_folder}"]),
        "clip": (spec.clip, [""]),
    }
    found: dict[str, list[Path]] = {}
    for part, (source, subpaths) in parts.items():
        root = _local_root(source)
        files: list[Path] = []
        for rel in subpaths:
            target = root / rel if root else None
            if target is None or not target.exists():
                continue
            candidates = [target] if target.is_file() else sorted(target.rglob("*"))
            files += [f for f in candidates if f.is_file() and f.suffix in WEIGHT_SUFFIXES]
        found[part] = files
    return found


def _local_root(source: str) -> Path | None:
    if is_local(source):
        return Path(source).expanduser()
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(source, local_files_only=True))
    except Exception:  # not cached: nothing to hash, recorded as an empty list
        return None


def sha256_file(path: Path, memo: dict | None = None) -> str:
    """sha256 of a file, reusing `memo` entries keyed by (path, size, mtime)."""
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    if memo is not None and key in memo:
        return memo[key]
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    if memo is not None:
        memo[key] = h.hexdigest()
    return h.hexdigest()


def weight_hashes(spec: ModelSpec) -> dict[str, list[dict]]:
    """sha256 of every weight file each component uses (memoised on disk, so GBs are hashed once)."""
    memo_path = cache_dir() / "weight-hashes.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    before = len(memo)
    out = {part: [{"file": str(f), "sha256": sha256_file(f, memo), "bytes": f.stat().st_size} for f in files]
           for part, files in _component_files(spec).items()}
    if len(memo) != before:
        try:
            atomic_write_json(memo_path, memo)
        except OSError:
            pass  # a read-only cache only costs re-hashing next time
    return out


def environment_flags() -> dict[str, str | None]:
    """Environment variables that change what is loaded or reached."""
    return {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "SDRAG_OFFLINE", "HF_ENDPOINT", "SDRAG_CACHE")}


def preset_status():
    """Which presets can run here: one row per preset with 'ready' and why not (checks in under 2 s)."""
    import pandas as pd

    from .errors import SdragError
    from .presets import PRESET_NAMES, check_available, get_spec

    rows = []
    for name in PRESET_NAMES:
        if name == "sd15-random":
            rows.append({"preset": name, "ready": True, "note": "built on first use (~8.4 GB, for benchmarks)"})
            continue
        try:
            check_available(get_spec(name))
            rows.append({"preset": name, "ready": True, "note": ""})
        except SdragError as exc:
            rows.append({"preset": name, "ready": False, "note": str(exc).splitlines()[0]})
    return pd.DataFrame(rows)
