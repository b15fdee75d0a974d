"""Build the `tiny` preset: random-weight SD1.5-shaped components saved in hub layout as safetensors.

Every part is written where a hub snapshot would put it, so the `tiny` preset is loaded by exactly the
same `from_pretrained` / `load_ip_adapter` calls as the real `sd15` preset. Weights are random but fixed
(seeded), so two builds on any machine hold identical tensors.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

# Bump when the layout or any config below changes, so stale caches are rebuilt, not reused.
TINY_VERSION = "1"
SEED = 20241124

IP_TOKENS = 4

# Two shapes behind one builder: `tiny` for tests and offline demos, `full` with SD1.5's real sizes (CLIP-L
# text encoder, ViT-H IP-Adapter encoder, ViT-B/32 retrieval CLIP) for speed and memory benchmarks on a GPU.
_SMALL_TF = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4}
SHAPES: dict[str, dict] = {
    "tiny": {
        "unet": {"block_out_channels": (32, 32, 64, 64), "cross_attention_dim": 32, "sample_size": 8},
        "vae": {"block_out_channels": (16, 32, 32, 32), "layers_per_block": 1, "norm_num_groups": 8,
                "sample_size": 64},
        "text": {**_SMALL_TF, "vocab_size": 0},
        "image_encoder": {**_SMALL_TF, "image_size": 32, "patch_size": 4, "projection_dim": 32},
        "clip_text": {**_SMALL_TF, "vocab_size": 0},
        "clip_vision": {**_SMALL_TF, "image_size": 32, "patch_size": 4},
        "clip_projection": 32,
    },
    "full": {
        "unet": {"block_out_channels": (320, 640, 1280, 1280), "cross_attention_dim": 768, "sample_size": 64},
        "vae": {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "norm_num_groups": 32,
                "sample_size": 512},
        "text": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                 "num_attention_heads": 12, "vocab_size": 49408},
        "image_encoder": {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
                          "num_attention_heads": 16, "image_size": 224, "patch_size": 14, "projection_dim": 1024},
        "clip_text": {"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12,
                      "num_attention_heads": 8, "vocab_size": 49408},
        "clip_vision": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                        "num_attention_heads": 12, "image_size": 224, "patch_size": 32},
        "clip_projection": 512,
    },
}

# Folder names mirror the hub repos the sd15 preset uses.
BASE_DIR = "stable-diffusion-v1-5"
CONTROLNET_DIR = "control_v11p_sd15_canny"
IP_ADAPTER_DIR = "IP-Adapter"
CLIP_DIR = "clip-vit-base-patch32"
IP_ADAPTER_WEIGHT = "ip-adapter_sd15.safetensors"

# A small corpus so the tokenizer learns real merges and splits words the way CLIP's BPE does.
_CORPUS = (
    "a the of and in on with style painting photo sketch drawing house city neon night watercolor ink "
    "pastel bauhaus geometric pixel art mosaic blueprint galaxy space stars cat coffee rocket astronaut "
    "brick grass gravel texture colorful dark light bright soft warm cool portrait landscape street tree "
    "sun window door roof building architecture abstract pattern lines glowing vintage retro modern"
)
_MERGES = 120


def cache_dir() -> Path:
    """Return sdrag's cache folder (`$SDRAG_CACHE`, else `~/.cache/sdrag`)."""
    return Path(os.environ.get("SDRAG_CACHE") or Path.home() / ".cache" / "sdrag").expanduser()


def tiny_root(root: str | os.PathLike | None = None, shapes: str = "tiny") -> Path:
    """Return the folder of random-weight components of `shapes`, building it on first use."""
    name = f"tiny-v{TINY_VERSION}" if shapes == "tiny" else f"random-{shapes}-v{TINY_VERSION}"
    target = Path(root) if root is not None else cache_dir() / name
    if not (target / "COMPLETE").is_file():
        build_tiny(target, shapes)
    return target


def build_tiny(target: str | os.PathLike, shapes: str = "tiny") -> Path:
    """Write every component under `target` (atomically: a half-built folder is never visible)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".tiny-build-", dir=target.parent))
    from .presets import quiet_loading

    try:
        with quiet_loading():
            _build_into(work, SHAPES[shapes])
        stamp = {"version": TINY_VERSION, "seed": SEED, "shapes": shapes}
        (work / "COMPLETE").write_text(json.dumps(stamp) + "\n")
        if target.exists():
            # Another process finished first; its build is identical, keep it.
            if (target / "COMPLETE").is_file():
                return target
            shutil.rmtree(target)
        os.replace(work, target)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return target


def _build_into(root: Path, shape: dict) -> None:
    from diffusers import (
        AutoencoderKL,
        ControlNetModel,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import (
        CLIPConfig,
        CLIPModel,
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTokenizer,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    tok_dir = root / "_tokenizer"
    write_tokenizer_files(tok_dir)
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.eos_token_id, "max_position_embeddings": 77}

    def text_config(cfg: dict, projection_dim: int) -> CLIPTextConfig:
        # A full-size vocabulary keeps the embedding table real-sized; extra rows are never indexed.
        cfg = {**cfg, "vocab_size": max(cfg["vocab_size"], len(tokenizer))}
        return CLIPTextConfig(**cfg, **ids, projection_dim=projection_dim)

    text_cfg = text_config(shape["text"], shape["unet"]["cross_attention_dim"])
    encoder_cfg = CLIPVisionConfig(**shape["image_encoder"])
    cross_dim = shape["unet"]["cross_attention_dim"]

    torch.manual_seed(SEED)
    # SD1.5's block structure (3 cross-attention down blocks, 2 layers each; 3 cross-attention up blocks
    # after a plain one) so IP-Adapter block maps mean the same thing on tiny as on the real model.
    unet = UNet2DConditionModel(
        **shape["unet"], in_channels=4, out_channels=4, layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        attention_head_dim=8, norm_num_groups=32,
    )
    torch.manual_seed(SEED + 1)
    vae = AutoencoderKL(
        **shape["vae"], in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    )
    torch.manual_seed(SEED + 2)
    text_encoder = CLIPTextModel(text_cfg)
    # The real SD1.5 scheduler config, so `from_config` swaps behave as they do on the real model.
    scheduler = PNDMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
        skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False,
    )
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(root / BASE_DIR, safe_serialization=True)

    torch.manual_seed(SEED + 3)
    controlnet = ControlNetModel.from_unet(unet)
    # ControlNet starts with zero convolutions; random ones make the control signal reach the UNet.
    _randomize_zero_convs(controlnet)
    controlnet.save_pretrained(root / CONTROLNET_DIR, safe_serialization=True)

    torch.manual_seed(SEED + 4)
    image_encoder = CLIPVisionModelWithProjection(encoder_cfg)
    image_encoder.save_pretrained(root / IP_ADAPTER_DIR / "models" / "image_encoder", safe_serialization=True)
    _write_ip_adapter(unet, root / IP_ADAPTER_DIR / "models" / IP_ADAPTER_WEIGHT, encoder_cfg.projection_dim,
                      cross_dim)

    torch.manual_seed(SEED + 5)
    proj = shape["clip_projection"]
    clip_text = text_config(shape["clip_text"], proj)
    clip_vision = CLIPVisionConfig(**shape["clip_vision"], projection_dim=proj)
    clip = CLIPModel(CLIPConfig(text_config=clip_text.to_dict(), vision_config=clip_vision.to_dict(),
                                projection_dim=proj))
    clip.save_pretrained(root / CLIP_DIR, safe_serialization=True)
    tokenizer.save_pretrained(root / CLIP_DIR)
    _write_image_processor(root / CLIP_DIR, clip_vision.image_size)
    shutil.rmtree(tok_dir)


def _randomize_zero_convs(controlnet: torch.nn.Module) -> None:
    zero_convs = list(controlnet.controlnet_down_blocks) + [controlnet.controlnet_mid_block]
    zero_convs.append(controlnet.controlnet_cond_embedding.conv_out)
    for conv in zero_convs:
        torch.nn.init.normal_(conv.weight, std=0.2)
        torch.nn.init.normal_(conv.bias, std=0.05)


def _write_ip_adapter(unet: torch.nn.Module, path: Path, encoder_dim: int, cross_dim: int) -> None:
    from safetensors.torch import save_file

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape) / shape[-1] ** 0.5

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


def _write_image_processor(folder: Path, size: int) -> None:
    # Written by hand: without torchvision, transformers would record a Pil-only class name here.
    cfg = {
        "crop_size": {"height": size, "width": size},
        "do_center_crop": True, "do_convert_rgb": True, "do_normalize": True, "do_rescale": True,
        "do_resize": True, "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_processor_type": "CLIPImageProcessor", "image_std": [0.26862954, 0.26130258, 0.27577711],
        "resample": 3, "rescale_factor": 1 / 255, "size": {"shortest_edge": size},
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(cfg, indent=2) + "\n")


def bytes_to_unicode() -> dict[int, str]:
    """Map every byte to a printable unicode character, as GPT-2/CLIP byte-level BPE does."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def write_tokenizer_files(folder: Path) -> None:
    """Write a CLIP-style vocab.json and merges.txt learned by byte-pair merging on a small corpus."""
    folder.mkdir(parents=True, exist_ok=True)
    base = list(bytes_to_unicode().values())
    vocab = base + [c + "</w>" for c in base]
    words = collections.Counter(_CORPUS.split())
    splits = {w: [*w[:-1], w[-1] + "</w>"] for w in words}
    merges: list[tuple[str, str]] = []
    for _ in range(_MERGES):
        pairs: collections.Counter = collections.Counter()
        for w, parts in splits.items():
            for a, b in zip(parts, parts[1:]):
                pairs[a, b] += words[w]
        if not pairs:
            break
        # Ties broken by the pair itself, so the result never depends on dict order.
        (a, b), _count = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        merges.append((a, b))
        vocab.append(a + b)
        for w, parts in splits.items():
            out, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and parts[i] == a and parts[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(parts[i])
                    i += 1
            splits[w] = out
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "model_max_length": 77, "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "do_lower_case": True,
        "tokenizer_class": "CLIPTokenizer",
    }))
