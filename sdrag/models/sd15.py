"""What sdrag knows about Stable Diffusion 1.5 and its companions: repos, revisions, attention layout, schedulers.

Every other module asks here; a fact about SD1.5 written anywhere else is a second copy that can drift.
"""

from __future__ import annotations

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
# The components a workbench loads, in load order.
PARTS = tuple(SD15_REPOS)
IP_ADAPTER_WEIGHT = "ip-adapter_sd15.safetensors"
# The plain SD1.5 IP-Adapter projects an image into this many extra cross-attention tokens.
IP_TOKENS = 4
# `main` of openai/clip-vit-base-patch32 holds pickled, flax and tf weights only; the safetensors conversion lives
# in the converter bot's pull request refs/pr/66. Pinning its commit keeps loads safetensors-only, the cache in
# one snapshot, and the weights fixed even if the PR moves. (Checked against the repo's file lists in
# sdrag/assets/hub/SOURCES.md.)
CLIP_REVISION = "c237dc49a33fc61debc9276459120b7eac67e7ef"

# Attention layers per block of the SD1.5 UNet: the map IP-Adapter block scales address.
# up.block_0 has no attention in SD1.5 (SDXL recipes that target it silently do nothing here).
ATTENTION_LAYOUT: dict[str, dict[int, int] | int] = {"down": {0: 2, 1: 2, 2: 2}, "mid": 1, "up": {1: 3, 2: 3, 3: 3}}
ATTENTION_LAYERS = (sum(ATTENTION_LAYOUT["down"].values()) + ATTENTION_LAYOUT["mid"]
                    + sum(ATTENTION_LAYOUT["up"].values()))

# InstantStyle's block choice for SD1.5: style lives in up.block_1, layout in down.block_2 and mid.
IP_SCALE_PRESETS: dict[str, dict] = {
    "style": {"up": {"block_1": 1.0}},
    "style+layout": {"down": {"block_2": 1.0}, "mid": 1.0, "up": {"block_1": 1.0}},
}

# Scheduler names a user picks, and the diffusers class each one means (all share SD1.5's scheduler config).
SCHEDULERS = {
    "unipc": "UniPCMultistepScheduler",
    "ddim": "DDIMScheduler",
    "pndm": "PNDMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "dpm++2m": "DPMSolverMultistepScheduler",
}
# The VAE downsamples by this factor: image sides must be multiples of it.
VAE_SCALE = 8
# How messages name each component.
LABELS = {"base": "Stable Diffusion 1.5", "controlnet": "the ControlNet", "ip_adapter": "IP-Adapter",
          "clip": "the retrieval CLIP"}
