"""The five repos of the `sd15` preset, laid out as on the hub (../shared/hub-fixtures/FILE_LISTS.md), for LocalHub.

Files sdrag loads are the `tiny` build's (its metadata is the published metadata, its weights random). The rest
of each real file list is added so that tests can prove it is never downloaded: pickled twins of every weight
(real pickles of the same tensors, so allow_pickle=True loads them), the unet's non-EMA weights, and, as small
placeholder bytes that nothing may fetch, the single-file checkpoints, flax/tf weights, other IP-Adapters,
READMEs and images. openai/clip-vit-base-patch32 has no model.safetensors on main; its refs/pr/66 commit adds it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from localhub import Repo
from safetensors.torch import load_file

from sdrag.models.sd15 import CLIP_REVISION, CONTROLNETS, SD15_REPOS

# The main commits of the real repos (sdrag/assets/hub/SOURCES.md).
COMMITS = {
    SD15_REPOS["base"]: "451f4fe16113bff5a5d2269ed5ad43b0592e9a14",
    CONTROLNETS["canny-v11"]: "115a470d547982438f70198e353a921996e2e819",
    CONTROLNETS["canny-v10"]: "7f2f69197050967007f6bbd23ab5e52f0384162a",
    SD15_REPOS["ip_adapter"]: "018e402774aeeddd60609b4ecdb7e298259dc729",
    SD15_REPOS["clip"]: "3d74acf9a28c67741b2f4f2ea7635f0aaf6f0268",
}
PLACEHOLDERS = {
    SD15_REPOS["base"]: [".gitattributes", "README.md", "v1-inference.yaml", "v1-5-pruned-emaonly.ckpt",
                         "v1-5-pruned-emaonly.safetensors", "v1-5-pruned.ckpt", "v1-5-pruned.safetensors"],
    CONTROLNETS["canny-v11"]: [".gitattributes", "README.md", "control_net_canny.py", "sd.png", "images/input.png",
                               "images/control.png", "images/image_out.png"],
    CONTROLNETS["canny-v10"]: [".gitattributes", "README.md", "sd.png", "images/bird_canny.png"],
    SD15_REPOS["ip_adapter"]: [".gitattributes", "README.md", "fig1.png"] + [
        f"models/{name}{ext}" for name in ("ip-adapter-full-face_sd15", "ip-adapter-plus-face_sd15",
                                           "ip-adapter-plus_sd15", "ip-adapter_sd15_light", "ip-adapter_sd15_vit-G")
        for ext in (".bin", ".safetensors")] + ["models/ip-adapter_sd15_light_v11.bin"],
    SD15_REPOS["clip"]: [".gitattributes", "README.md", "flax_model.msgpack", "tf_model.h5"],
}
# What a pipeline load must never fetch.
NEVER = (".bin", ".ckpt", ".msgpack", ".h5", "v1-5-pruned", "safety_checker/", "non_ema", ".png", "README.md",
         "models/ip-adapter-", "models/ip-adapter_sd15_")


def build_repos(tiny_root: Path, work: Path) -> dict[str, Repo]:
    """Repo objects for LocalHub; extra files are written under `work`."""
    repos = {}
    for repo, commit in COMMITS.items():
        files = {p.relative_to(tiny_root / repo).as_posix(): p for p in (tiny_root / repo).rglob("*") if p.is_file()}
        extra = work / repo
        for rel, path in list(files.items()):
            if path.suffix == ".safetensors":
                files.update(_pickled_twin(rel, path, extra))
        if repo == SD15_REPOS["base"]:
            unet = "unet/diffusion_pytorch_model"
            files[f"{unet}.non_ema.safetensors"] = files[f"{unet}.safetensors"]
            files[f"{unet}.non_ema.bin"] = files[f"{unet}.bin"]
        for rel in PLACEHOLDERS[repo]:
            target = extra / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(f"placeholder for {repo}/{rel}: never downloaded by sdrag\n".encode())
            files[rel] = target
        if repo == SD15_REPOS["clip"]:
            # main: pickled weights only; the converter bot's pull request adds the safetensors file.
            main = {rel: path for rel, path in files.items() if rel != "model.safetensors"}
            repos[repo] = Repo(commits={commit: main, CLIP_REVISION: files},
                               refs={"main": commit, "refs/pr/66": CLIP_REVISION})
        else:
            repos[repo] = Repo(commits={commit: files}, refs={"main": commit})
    return repos


def _pickled_twin(rel: str, path: Path, extra: Path) -> dict[str, Path]:
    """The .bin file the real repo has beside a .safetensors one (same tensors, pickled by torch.save)."""
    stem = Path(rel).name[: -len(".safetensors")]
    tensors = load_file(str(path))
    if stem.startswith("ip-adapter"):
        data: dict = {"image_proj": {}, "ip_adapter": {}}  # IP-Adapter's .bin nests the two halves
        for key, value in tensors.items():
            head, _, rest = key.partition(".")
            data[head][rest] = value
    else:
        data = tensors
    # transformers names its pickles pytorch_model*.bin; diffusers keeps the stem.
    twin = Path(rel).parent / (("pytorch_" if stem.split(".")[0] == "model" else "") + stem + ".bin")
    target = extra / twin
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, target)
    return {twin.as_posix(): target}
