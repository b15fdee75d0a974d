"""Build the `tiny` preset: the five hub repos of `sd15`, with random weights, as local folders in hub layout.

`tiny` differs from the real repos only in weight values and layer sizes: every metadata file is the
published one (sdrag/assets/hub, sources in its SOURCES.md), copied byte for byte where it names no layer size
and with only the size keys changed where it does. Weights are written under the real names, with the real
fp16 variant files, so `tiny` is loaded by exactly the same `from_pretrained` / `load_ip_adapter` calls, with
the same variant choice, as `sd15`. Weights are random but seeded: two builds hold identical tensors.
"""

from __future__ import annotations

import collections
import copy
import json
import os
import shutil
import tempfile
from pathlib import Path

from ..files import cache_root
from .quiet import quiet_loading
from .sd15 import CONTROLNETS, IP_ADAPTER_WEIGHT, IP_TOKENS, SD15_REPOS
from .tokenizer import write_tokenizer_files

# Bump when the layout, a config or a seed below changes, so stale caches are rebuilt, not reused.
TINY_VERSION = "2"
SEED = 20241124
METADATA = Path(__file__).resolve().parents[1] / "assets" / "hub"

_SMALL_TF = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4}
_SMALL_UNET = {"block_out_channels": [32, 32, 64, 64], "cross_attention_dim": 32}
# Per config file, the layer-size keys `tiny` changes (nested dicts change nested keys). `full` changes
# nothing: it is SD1.5's real architecture with random weights, for speed and memory benchmarks on a GPU.
SHAPES: dict[str, dict[str, dict]] = {
    "tiny": {
        "unet": {**_SMALL_UNET},
        "controlnet": {**_SMALL_UNET},
        "vae": {"block_out_channels": [16, 32, 32, 32], "layers_per_block": 1, "norm_num_groups": 8},
        "text_encoder": {**_SMALL_TF, "projection_dim": 32},
        "image_encoder": {**_SMALL_TF, "projection_dim": 32},
        "clip": {"projection_dim": 32, "text_config": {**_SMALL_TF, "projection_dim": 32},
                 "vision_config": {**_SMALL_TF, "projection_dim": 32}},
        "safety_checker": {"projection_dim": 32, "text_config": {**_SMALL_TF}, "vision_config": {**_SMALL_TF},
                           "text_config_dict": {**_SMALL_TF}, "vision_config_dict": {**_SMALL_TF}},
    },
    "full": collections.defaultdict(dict),
}

def built_folder(shapes: str = "tiny") -> Path:
    """Where the build of `shapes` lives in sdrag's cache (it may not be built yet: see `is_built`)."""
    return cache_root() / (f"tiny-v{TINY_VERSION}" if shapes == "tiny" else f"random-{shapes}-v{TINY_VERSION}")


def is_built(folder: Path) -> bool:
    """Whether a build finished in `folder`."""
    return (folder / "COMPLETE").is_file()


def tiny_root(root: str | os.PathLike | None = None, shapes: str = "tiny") -> Path:
    """Return the folder holding one sub-folder per hub repo id (`<root>/<org>/<name>`), building it on first use."""
    target = Path(root) if root is not None else built_folder(shapes)
    if not is_built(target):
        build_tiny(target, shapes)
    return target


def build_tiny(target: str | os.PathLike, shapes: str = "tiny") -> Path:
    """Write every repo under `target` (atomically: a half-built folder is never visible)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".tiny-build-", dir=target.parent))
    try:
        with quiet_loading():
            _build_into(work, SHAPES[shapes])
        stamp = {"version": TINY_VERSION, "seed": SEED, "shapes": shapes}
        (work / "COMPLETE").write_text(json.dumps(stamp) + "\n")
        if target.exists():
            # Another process finished first; its build is identical, keep it.
            if is_built(target):
                return target
            shutil.rmtree(target)
        os.replace(work, target)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return target


def _build_into(root: Path, shape: dict[str, dict]) -> None:
    tokenizer = _build_tokenizer(root / SD15_REPOS["base"] / "tokenizer", METADATA / SD15_REPOS["base"] / "tokenizer")
    unet = _build_base(root / SD15_REPOS["base"], METADATA / SD15_REPOS["base"], shape, len(tokenizer))
    for i, repo in enumerate((CONTROLNETS["canny-v11"], CONTROLNETS["canny-v10"])):
        # The v1.0 repo publishes no fp16 variant; v1.1 does.
        _build_controlnet(root / repo, METADATA / repo, shape, unet, seed=SEED + 3 + i, fp16=i == 0)
    _build_ip_adapter(root / SD15_REPOS["ip_adapter"], METADATA / SD15_REPOS["ip_adapter"], shape, unet)
    clip_dir = root / SD15_REPOS["clip"]
    _build_tokenizer(clip_dir, METADATA / SD15_REPOS["clip"], with_json=True)
    _build_clip(clip_dir, METADATA / SD15_REPOS["clip"], shape, len(tokenizer))


def sized_config(path: Path, sizes: dict) -> dict:
    """The published config at `path` with only the layer-size keys in `sizes` replaced (unknown keys refused)."""
    config = json.loads(path.read_text())

    def apply(into: dict, changes: dict, where: str) -> None:
        for key, value in changes.items():
            if key not in into:
                raise KeyError(f"{where}{key} is not in {path}: tiny may change sizes only, never add keys")
            if isinstance(value, dict):
                apply(into[key], value, f"{where}{key}.")
            else:
                into[key] = copy.deepcopy(value)

    apply(config, sizes, "")
    return config


def _write_config(folder: Path, source: Path, sizes: dict) -> dict:
    """Copy a published config (verbatim when no size changes); return a fresh dict of it to build a model from."""
    folder.mkdir(parents=True, exist_ok=True)
    if not sizes:
        shutil.copyfile(source, folder / source.name)
    else:
        (folder / source.name).write_text(json.dumps(sized_config(source, sizes), indent=2) + "\n")
    # Config classes may add keys to the dict they are given; the file on disk stays as written.
    return json.loads((folder / source.name).read_text())


def _copy_verbatim(folder: Path, source: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(source / name, folder / name)


def _save_weights(model, folder: Path, fp16: bool) -> None:
    """Save fp32 safetensors weights under the library's own file names (and the .fp16 variant).

    save_pretrained rewrites config.json in its own words: the text `_write_config` put there is restored.
    """
    import torch

    published = (folder / "config.json").read_bytes()
    # fp32 as published, even where a config says otherwise (the image encoder's says float16; its file is fp32).
    model.to(torch.float32).save_pretrained(folder)
    if fp16:
        # From a copy: the caller keeps its fp32 model (the ControlNets are built from the UNet).
        copy.deepcopy(model).to(torch.float16).save_pretrained(folder, variant="fp16")
    (folder / "config.json").write_bytes(published)


def _with_vocab(sizes: dict, vocab: int, tower: str | None = None) -> dict:
    """Size changes for a config with a CLIP text tower (nested under `tower`, if given): its vocabulary follows
    the tokenizer's (extra rows would never be indexed)."""
    sizes = copy.deepcopy(sizes)
    if sizes:
        (sizes[tower] if tower else sizes)["vocab_size"] = vocab
    return sizes


def _new_model(folder: Path, config_source: Path, sizes: dict, seed: int, make, fp16: bool = True):
    """Write the sized published config into `folder`, build a model from it with `seed`, save its weights."""
    import torch

    config = _write_config(folder, config_source, sizes)
    torch.manual_seed(seed)
    model = make(config)
    _save_weights(model, folder, fp16=fp16)
    return model


def _build_base(repo: Path, meta: Path, shape: dict, vocab: int):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPTextConfig, CLIPTextModel, CLIPVisionConfig

    def safety_checker(cfg: dict):
        return StableDiffusionSafetyChecker(CLIPConfig(
            text_config=CLIPTextConfig.from_dict(cfg["text_config"]).to_dict(),
            vision_config=CLIPVisionConfig.from_dict(cfg["vision_config"]).to_dict(),
            projection_dim=cfg["projection_dim"]))

    _copy_verbatim(repo, meta, ["model_index.json"])
    _copy_verbatim(repo / "scheduler", meta / "scheduler", ["scheduler_config.json"])
    _copy_verbatim(repo / "feature_extractor", meta / "feature_extractor", ["preprocessor_config.json"])
    unet = _new_model(repo / "unet", meta / "unet" / "config.json", shape["unet"], SEED,
                      UNet2DConditionModel.from_config)
    _new_model(repo / "vae", meta / "vae" / "config.json", shape["vae"], SEED + 1, AutoencoderKL.from_config)
    _new_model(repo / "text_encoder", meta / "text_encoder" / "config.json", _with_vocab(shape["text_encoder"], vocab),
               SEED + 2, lambda cfg: CLIPTextModel(CLIPTextConfig.from_dict(cfg)))
    _new_model(repo / "safety_checker", meta / "safety_checker" / "config.json",
               _with_vocab(shape["safety_checker"], vocab, "text_config"), SEED + 6, safety_checker)
    return unet


def _build_controlnet(repo: Path, meta: Path, shape: dict, unet, seed: int, fp16: bool) -> None:
    import torch
    from diffusers import ControlNetModel

    config = _write_config(repo, meta / "config.json", shape["controlnet"])
    torch.manual_seed(seed)
    # Initialised from the UNet's encoder, as ControlNets are before training, shaped as the published config.
    controlnet = ControlNetModel.from_unet(
        unet, conditioning_embedding_out_channels=tuple(config["conditioning_embedding_out_channels"]))
    # ControlNet starts with zero convolutions; random ones make the control signal reach the UNet.
    zero_convs = [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block,
                  controlnet.controlnet_cond_embedding.conv_out]
    for conv in zero_convs:
        torch.nn.init.normal_(conv.weight, std=0.2)
        torch.nn.init.normal_(conv.bias, std=0.05)
    _save_weights(controlnet, repo, fp16=fp16)


def _build_ip_adapter(repo: Path, meta: Path, shape: dict, unet) -> None:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    encoder = _new_model(repo / "models" / "image_encoder", meta / "models" / "image_encoder" / "config.json",
                         shape["image_encoder"], SEED + 4,
                         lambda cfg: CLIPVisionModelWithProjection(CLIPVisionConfig.from_dict(cfg)), fp16=False)
    _write_ip_adapter(unet, repo / "models" / IP_ADAPTER_WEIGHT, encoder.config.projection_dim,
                      unet.config.cross_attention_dim)


def _build_clip(repo: Path, meta: Path, shape: dict, vocab: int) -> None:
    from transformers import CLIPConfig, CLIPModel

    _copy_verbatim(repo, meta, ["preprocessor_config.json"])
    _new_model(repo, meta / "config.json", _with_vocab(shape["clip"], vocab, "text_config"), SEED + 5,
               lambda cfg: CLIPModel(CLIPConfig.from_dict(cfg)), fp16=False)


def _write_ip_adapter(unet, path: Path, encoder_dim: int, cross_dim: int) -> None:
    import torch
    from safetensors.torch import save_file

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape) / shape[-1] ** 0.5

    torch.manual_seed(SEED + 7)
    tensors = {
        "image_proj.proj.weight": randn(IP_TOKENS * cross_dim, encoder_dim),
        "image_proj.proj.bias": torch.zeros(IP_TOKENS * cross_dim),
        "image_proj.norm.weight": torch.ones(cross_dim),
        "image_proj.norm.bias": torch.zeros(cross_dim),
    }
    # diffusers numbers IP layers 1, 3, 5, ... over the cross-attention processors in this order.
    cross = [n for n in unet.attn_processors if n.endswith("attn2.processor")]
    for i, name in enumerate(cross):
        hidden = unet.get_submodule(name.rsplit(".", 1)[0]).to_k.out_features
        k = 2 * i + 1
        tensors[f"ip_adapter.{k}.to_k_ip.weight"] = randn(hidden, cross_dim) * 3
        tensors[f"ip_adapter.{k}.to_v_ip.weight"] = randn(hidden, cross_dim) * 3
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))


def _build_tokenizer(folder: Path, meta: Path, with_json: bool = False):
    """Write a byte-level BPE vocab.json/merges.txt beside the published tokenizer configs; return the tokenizer."""
    from transformers import CLIPTokenizer

    write_tokenizer_files(folder)
    _copy_verbatim(folder, meta, ["tokenizer_config.json", "special_tokens_map.json"])
    tokenizer = CLIPTokenizer.from_pretrained(folder)
    if with_json:
        # The CLIP repo also ships the fast tokenizer's tokenizer.json; derive it from the same vocabulary.
        with tempfile.TemporaryDirectory() as tmp:
            tokenizer.save_pretrained(tmp)
            shutil.copyfile(Path(tmp) / "tokenizer.json", folder / "tokenizer.json")
    return tokenizer
