"""Which files each component loads — from a local folder, the Hugging Face cache or the hub — decided up front.

`plan(spec, dtype)` decides before anything loads, per component, the exact files the loader will read (fp16
variant and safetensors/pickle format included), whether all of them are on disk and, when they are not,
whether the hub can be reached. `load(part, call)` runs one from_pretrained-style call with those decisions:
from disk when everything is there, downloading (with progress bars) when not, and every failure becomes one
WeightsUnavailableError that says what to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import WeightsUnavailableError
from .hub import cached, cached_listing, endpoint, hub_listing, hub_offline, hub_reachable
from .presets import ModelSpec, is_local
from .sd15 import LABELS, PARTS

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


@dataclass(frozen=True)
class Slot:
    """One weight file a loader looks for: its folder and whose naming it follows (or one exact file name)."""

    folder: str
    library: str = "diffusers"  # "diffusers" or "transformers": how a weight file is named
    exact: str | None = None

    def candidates(self, half: bool, allow_pickle: bool) -> list[str]:
        """File names in the order the loader prefers them (fp16 variant first when running in half precision)."""
        if self.exact:
            return [self._join(self.exact)]
        safe, pickled = (("diffusion_pytorch_model", "diffusion_pytorch_model") if self.library == "diffusers"
                         else ("model", "pytorch_model"))
        variants = (".fp16", "") if half else ("",)
        names = [f"{safe}{v}.safetensors" for v in variants]
        if allow_pickle:
            names += [f"{pickled}{v}.bin" for v in variants]
        return [self._join(n) for n in names]

    def pickles(self, half: bool) -> list[str]:
        """The pickled file names this slot would refuse without allow_pickle."""
        return [n for n in self.candidates(half, True) if n.endswith(PICKLE_SUFFIXES)]

    def _join(self, name: str) -> str:
        return f"{self.folder}/{name}" if self.folder else name


def layout(spec: ModelSpec, part: str) -> tuple[list[str], list[Slot]]:
    """The metadata files and weight slots one component's loader reads (the SD1.5 repos' layout)."""
    if part == "base":
        # Without its tokenizer config the tokenizer loads anyway, with no length limit, and long prompts then
        # crash deep in the text encoder: so it counts as required.
        configs = ["model_index.json", "scheduler/scheduler_config.json", "tokenizer/vocab.json",
                   "tokenizer/merges.txt", "tokenizer/tokenizer_config.json", "unet/config.json", "vae/config.json",
                   "text_encoder/config.json"]
        return configs, [Slot("unet"), Slot("vae"), Slot("text_encoder", "transformers")]
    if part == "controlnet":
        return ["config.json"], [Slot("")]
    if part == "ip_adapter":
        encoder = spec.image_encoder_subfolder
        return [f"{encoder}/config.json"], [Slot(spec.ip_adapter_subfolder, exact=spec.ip_adapter_weight),
                                            Slot(encoder, "transformers")]
    configs = ["config.json", "preprocessor_config.json", "tokenizer_config.json", "vocab.json", "merges.txt"]
    return configs, [Slot("", "transformers")]


def needed(rel: str, listing: set[str]) -> bool:
    """Whether a metadata file must be present: a tokenizer.json (all transformers 5 saves) stands in for
    vocab.json + merges.txt."""
    path = Path(rel)
    return path.name not in ("vocab.json", "merges.txt") or path.with_name("tokenizer.json").as_posix() not in listing


@dataclass(frozen=True)
class Part:
    """One component as it will load: source, revision, variant, the files read, and whether all are on disk."""

    name: str
    source: str
    revision: str | None
    variant: str | None
    configs: tuple[str, ...]
    weights: tuple[str, ...]
    local_only: bool
    allow_pickle: bool = False

    @property
    def label(self) -> str:
        """How messages name this component."""
        return LABELS[self.name]

    @property
    def where(self) -> str:
        """The source with its revision, as messages show it."""
        return f"{self.source}@{self.revision[:12]}" if self.revision else self.source

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for this component's from_pretrained calls of model weights."""
        # None lets the loaders fall back to pickled files; True refuses them.
        return {**self.hub_kwargs(), "variant": self.variant,
                "use_safetensors": None if self.allow_pickle else True}

    def hub_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for calls that read no weights (tokenizers, processors, load_ip_adapter)."""
        return {"local_files_only": self.local_only, "revision": self.revision}

    def path(self, rel: str) -> Path | None:
        """Where a file of this component is on disk (the folder, or the Hugging Face cache); None if not there."""
        if is_local(self.source):
            found = Path(self.source).expanduser() / rel
            return found if found.is_file() else None
        return cached(self.source, rel, self.revision)


Plan = dict[str, Part]


def plan(spec: ModelSpec, dtype: Any = None) -> Plan:
    """Decide, for every component, the files it will load and whether they are all on disk.

    `dtype` is the torch dtype the models will run in (fp16 prefers the repos' fp16 variants). Nothing is
    downloaded here; the hub is asked only for the file lists of repos not fully cached. Raises one
    WeightsUnavailableError listing every problem: files missing from local folders, pickled-only weights
    without allow_pickle, or files not cached while the hub is out of reach.
    """
    half = "float16" in str(dtype) and "bfloat" not in str(dtype)
    parts: Plan = {}
    problems: list[str] = []
    need_hub: list[str] = []
    for name in PARTS:
        part = _plan_from_disk(spec, name, half, problems)
        if part is None:
            need_hub.append(name)
        else:
            parts[name] = part
    _raise_problems(problems)
    if need_hub:
        _require_hub(spec, need_hub, half)
        for name in need_hub:
            parts[name] = _plan_from_hub(spec, name, half, problems)
        _raise_problems(problems)
    return {name: parts[name] for name in PARTS}


def _plan_from_disk(spec: ModelSpec, name: str, half: bool, problems: list[str]) -> Part | None:
    """The component's Part when its files are all on disk; None when the hub has to be asked."""
    source, revision = getattr(spec, name), spec.revision(name)
    configs, slots = layout(spec, name)
    if is_local(source):
        folder = Path(source).expanduser()
        listing = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
        weights = _choose(slots, listing, half, spec.allow_pickle, problems, f"{name}: {folder}")
        for rel in configs:
            if rel not in listing and needed(rel, listing):
                problems.append(f"{name}: {folder / rel} (local folder) is missing")
        return _part(spec, name, configs, weights, local_only=True)
    listing, complete = cached_listing(source, revision, configs)
    # In half precision, fp32 files already cached serve as well as the fp16 variant (same numbers once cast):
    # use them rather than download the variant.
    for want_half in ((True, False) if half else (False,)):
        missing: list[str] = []
        weights = _choose(slots, listing, want_half, spec.allow_pickle, missing, "")
        wanted = [rel for rel in configs if (rel in listing or not complete) and needed(rel, listing)] + weights
        if not missing and all(cached(source, rel, revision) for rel in wanted):
            return _part(spec, name, configs, weights, local_only=True)
    return None


def _plan_from_hub(spec: ModelSpec, name: str, half: bool, problems: list[str]) -> Part:
    """The component's Part chosen from the repo's file list on the hub (its files then download on load)."""
    source, revision = getattr(spec, name), spec.revision(name)
    configs, slots = layout(spec, name)
    listing = hub_listing(name, source, revision)
    weights = _choose(slots, listing, half, spec.allow_pickle, problems, f"{name}: {source}")
    return _part(spec, name, [c for c in configs if c in listing], weights, local_only=False)


def _part(spec: ModelSpec, name: str, configs: list[str], weights: list[str], local_only: bool) -> Part:
    variant = "fp16" if any(".fp16." in Path(w).name for w in weights) else None
    return Part(name=name, source=getattr(spec, name), revision=spec.revision(name), variant=variant,
                configs=tuple(configs), weights=tuple(weights), local_only=local_only, allow_pickle=spec.allow_pickle)


def _choose(slots: list[Slot], listing: set[str], half: bool, allow_pickle: bool, problems: list[str],
            where: str) -> list[str]:
    """Pick each slot's file from `listing` as the loader would; note a problem for each slot with none."""
    chosen = []
    for slot in slots:
        pick = next((c for c in slot.candidates(half, allow_pickle) if c in listing), None)
        if pick is not None and pick.endswith(PICKLE_SUFFIXES) and not allow_pickle:
            pick = None  # an exact weight name that is pickled
        if pick is not None:
            chosen.append(pick)
            continue
        pickled = [c for c in slot.pickles(half) if c in listing]
        if pickled:
            problems.append(f"{where}: only pickled weights ({pickled[0]}), which can run code when loaded."
                            " Fix: use a safetensors copy (or a revision that has one), or opt in with"
                            " allow_pickle=True if you trust the source")
        else:
            problems.append(f"{where}: no {' or '.join(slot.candidates(half, allow_pickle))}")
    return chosen


def _raise_problems(problems: list[str]) -> None:
    if problems:
        raise WeightsUnavailableError(
            "Model weights cannot be loaded:\n  " + "\n  ".join(problems)
            + "\nFix: point the override at a complete folder or repo in hub layout (safetensors weights; pickled"
            " ones need allow_pickle=True), or use the tiny preset (preset='tiny' in Python, --preset tiny on the"
            " command line)."
        )


def _require_hub(spec: ModelSpec, names: list[str], half: bool) -> None:
    """Raise the offline error, listing what each component still needs, unless the hub can be reached."""
    offline = hub_offline()
    if not offline and hub_reachable():
        return
    why = ("HF_HUB_OFFLINE/SDRAG_OFFLINE is set" if offline
           else f"the Hugging Face hub ({endpoint()}) cannot be reached")
    lines = []
    for name in names:
        source, revision = getattr(spec, name), spec.revision(name)
        configs, slots = layout(spec, name)
        wanted = configs + [slot.candidates(half, spec.allow_pickle)[0] for slot in slots]
        missing = [rel for rel in wanted if not cached(source, rel, revision)]
        at = f"@{revision}" if revision else ""
        lines.append(f"{name}: {source}{at}: " + ", ".join(missing))
    raise WeightsUnavailableError(
        f"Preset {spec.preset!r} needs files that are not in the Hugging Face cache, and {why}:\n  "
        + "\n  ".join(lines)
        + "\nTwo ways out: go online once so they download into the Hugging Face cache (sizes in the README;"
        " behind a proxy set HTTPS_PROXY), or pass local folders as overrides; or use the tiny preset"
        " (preset='tiny' in Python, --preset tiny on the command line: random weights, works offline)."
    )


def snapshot_commit(part: Part) -> str | None:
    """The commit a hub component's cached files come from (None for local folders)."""
    if is_local(part.source) or not part.weights:
        return None
    found = part.path(part.weights[0])
    if found is None:
        return None
    parts = found.parts
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts else None

