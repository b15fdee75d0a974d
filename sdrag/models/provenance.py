"""Provenance for manifests: library versions, device, model sources and the sha256 of every weight file."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import sys
from pathlib import Path

from ..files import atomic_write_json, cache_root
from .plan import Plan, snapshot_commit

PACKAGES = ("sdrag", "torch", "diffusers", "transformers", "accelerate", "safetensors", "huggingface_hub",
            "chromadb", "numpy", "pillow", "opencv-python-headless", "pandas")


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
    """The device, dtype and CUDA version; on CUDA the GPU's name, on CPU torch's thread count (CPU results depend
    on it: its kernels split sums by thread)."""
    import torch

    info = {"device": str(device), "dtype": str(dtype).split(".")[-1], "cuda": torch.version.cuda}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    else:
        info["threads"] = torch.get_num_threads()
    return info


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


def weight_hashes(plan: Plan) -> dict[str, list[dict]]:
    """sha256 of every weight file each component loads, with the commit it came from (memoised on disk).

    A file not on disk yet (its download comes with the first load) is listed with sha256 None.
    """
    memo_path = cache_root() / "weight-hashes.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    before = len(memo)
    out: dict[str, list[dict]] = {}
    for name, part in plan.items():
        commit = snapshot_commit(part)
        out[name] = []
        for rel in part.weights:
            path = part.path(rel)
            out[name].append({"file": rel, "source": part.source, "revision": part.revision, "commit": commit,
                              "path": str(path) if path else None,
                              "sha256": sha256_file(path, memo) if path else None,
                              "bytes": path.stat().st_size if path else None})
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
    """Which presets can run here: one row per preset, whether it is ready, and the full reason when not.

    Quick: nothing loads or downloads; at most the hub is asked for its file lists.
    """
    import pandas as pd

    from ..errors import SdragError
    from .device import pick_device, pick_dtype
    from .plan import plan
    from .presets import PRESET_NAMES, get_spec

    rows = []
    for name in PRESET_NAMES:
        if name == "sd15-random":
            from .tiny import built_folder, is_built

            built = is_built(built_folder("full"))
            rows.append({"preset": name, "ready": built,
                         "note": "" if built else "not built yet: its first use builds it (~15 GB on disk, minutes;"
                                                  " for GPU benchmarks)"})
            continue
        try:
            # With this machine's default dtype: on CUDA that is fp16, so the fp16 files are the ones listed.
            plan(get_spec(name), pick_dtype(pick_device()))
            rows.append({"preset": name, "ready": True, "note": ""})
        except SdragError as exc:
            rows.append({"preset": name, "ready": False, "note": str(exc)})
    return pd.DataFrame(rows)


def preset_report(status=None) -> str:
    """The preset table as text: every reason in full (the missing files, the fix), which a table would cut."""
    status = preset_status() if status is None else status
    lines = []
    for row in status.itertuples():
        lines.append(f"{row.preset}: {'ready' if row.ready else 'NOT READY'}")
        lines += [f"    {line}" for line in str(row.note).splitlines()]
    return "\n".join(lines)
