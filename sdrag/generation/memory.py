"""GPU memory savers: which are on, and what an out-of-memory generation retries with.

The Workbench owns the one MemoryOptions in effect; the Generator only applies what it is handed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import ParameterError


@dataclass(frozen=True)
class MemoryOptions:
    """Memory savers; each keeps IP-Adapter active (checked after they are applied)."""

    attention_slicing: bool = False
    vae_tiling: bool = False
    cpu_offload: bool = False

    @classmethod
    def from_any(cls, value: MemoryOptions | dict | None) -> MemoryOptions:
        """Accept an instance, a dict of flags, or None (all off)."""
        if value is None or isinstance(value, cls):
            return value or cls()
        if not isinstance(value, dict):
            raise ParameterError(f"memory must be a dict of flags, got {value!r}.")
        unknown = sorted(set(value) - set(cls.__dataclass_fields__))
        if unknown:
            raise ParameterError(f"Unknown memory option(s) {unknown}. Known: {sorted(cls.__dataclass_fields__)}.")
        return cls(**{k: bool(v) for k, v in value.items()})

    def works_on(self, device) -> bool:
        """Whether every saver here can work on `device` (a torch device)."""
        return not self.cpu_offload or device.type == "cuda"

    def check(self, device) -> None:
        """Refuse savers that cannot work on `device` (a torch device)."""
        if not self.works_on(device):
            raise ParameterError("memory cpu_offload needs a CUDA device; on CPU everything is in RAM already.")

    def __or__(self, other: MemoryOptions) -> MemoryOptions:
        """Every saver on in either."""
        return MemoryOptions(**{k: v or getattr(other, k) for k, v in asdict(self).items()})

    def beyond(self, current: MemoryOptions) -> MemoryOptions:
        """The savers on here that are not on in `current` (what switching these on would add)."""
        return MemoryOptions(**{k: v and not getattr(current, k) for k, v in asdict(self).items()})

    def names(self) -> list[str]:
        """The savers that are on, by name."""
        return [k for k, v in asdict(self).items() if v]

    def to_dict(self) -> dict[str, bool]:
        """Return a JSON-serialisable dict."""
        return asdict(self)


# What a generation that ran out of GPU memory retries with, in order (each rung once).
OOM_LADDER = (MemoryOptions(attention_slicing=True, vae_tiling=True), MemoryOptions(cpu_offload=True))
