"""Which torch device and dtype a workbench runs on."""

from __future__ import annotations

from typing import Any

from ..errors import ParameterError

_DTYPES = {"fp16": "float16", "float16": "float16", "half": "float16", "bf16": "bfloat16",
           "bfloat16": "bfloat16", "fp32": "float32", "float32": "float32", "float": "float32"}


def pick_device(device: str | None = None) -> Any:
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


def pick_dtype(device: Any, dtype: Any = None) -> Any:
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
