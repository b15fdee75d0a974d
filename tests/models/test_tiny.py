"""`tiny` is the five sd15 repos with random weights: same metadata, same file names, only sizes changed."""

import hashlib
import json

import pytest
from transformers import CLIPTokenizer

from sdrag.models import tiny
from sdrag.models.sd15 import CONTROLNETS, SD15_REPOS

# sha256 of the published metadata files as recovered (sdrag/assets/hub/SOURCES.md): the copies must not drift.
PUBLISHED = {
    "h94/IP-Adapter/models/image_encoder/config.json":
        "625d37b31afbf2f0792a87846b3654ee23f20568409e35b78a1f795b04e1a7a1",
    "lllyasviel/sd-controlnet-canny/config.json": "dbeca6e56d9319a78d6a63758887334a6143bd270e590864b8182b0139d1a18c",
    "openai/clip-vit-base-patch32/config.json": "b575ef3c36f2a057fa19e221650105052d61cc9c1a972ec15019c6261ec98770",
    "openai/clip-vit-base-patch32/preprocessor_config.json":
        "910e70b3956ac9879ebc90b22fb3bc8a75b6a0677814500101a4c072bd7857bd",
    "openai/clip-vit-base-patch32/special_tokens_map.json":
        "f8c0d6c39aee3f8431078ef6646567b0aba7f2246e9c54b8b99d55c22b707cbf",
    "openai/clip-vit-base-patch32/tokenizer_config.json":
        "34b7336e4bee12e0a9730eaf5189f582ef3c3eea5027f65730e5717256755aad",
    "stable-diffusion-v1-5/stable-diffusion-v1-5/feature_extractor/preprocessor_config.json":
        "2a1da83b5e1032aaeef397552ddb408dca0d8cd1dc58f61bf6abf38d6f33a0a2",
    "stable-diffusion-v1-5/stable-diffusion-v1-5/model_index.json":
        "e2f6f22e274374010aec30c79eb2d6e53fff4a36ac0225523a92cb2d41a83347",
    "stable-diffusion-v1-5/stable-diffusion-v1-5/safety_checker/config.json":
        "5dd77a06cbd9b155060bd58deb81ffd1aafc1c6d7970acac674c1128bd4edfe2",
    "stable-diffusion-v1-5/stable-diffusion-v1-5/scheduler/scheduler_config.json":
        "699cce92eb7c122e2eb7dfdea78e6187fda76a5ed4a8e42319b85610e620e091",
    "stable-diffusion-v1-5/stable-diffusion-v1-5/text_encoder/config.json":
        "845df614cb9327ae7bbea027316246fae917827407da6df13572e41b5f93b4cc",
    "stable-diffusion-v1-5/stable-diffusion-v1-5/tokenizer/special_tokens_map.json":
        "c4864a9376a8401918425bed71fc14fc0e81f9b59ec45c1cf96cccb2df508eac",
    "stable-diffusion-v1-5/stable-diffusion-v1-5/tokenizer/tokenizer_config.json":
        "00439066fcba73de57644cf41e4e3b9f2dbb09d7f3fc2005898ba52399045882",
    "stable-diffusion-v1-5/stable-diffusion-v1-5/unet/config.json":
        "78f474de6bab3d893868f37be97b636ae65c0df3073ed3256ca458ff599b5f96",
    "stable-diffusion-v1-5/stable-diffusion-v1-5/vae/config.json":
        "786a7d21647ddea6a04b9675c03d3cb45e90a2f3c6da5fbda2c54ade040036de",
}
SIZED = {  # config file -> the SHAPES entry that may change its size keys
    "stable-diffusion-v1-5/stable-diffusion-v1-5/unet/config.json": "unet",
    "stable-diffusion-v1-5/stable-diffusion-v1-5/vae/config.json": "vae",
    "stable-diffusion-v1-5/stable-diffusion-v1-5/text_encoder/config.json": "text_encoder",
    "stable-diffusion-v1-5/stable-diffusion-v1-5/safety_checker/config.json": "safety_checker",
    "lllyasviel/control_v11p_sd15_canny/config.json": "controlnet",
    "lllyasviel/sd-controlnet-canny/config.json": "controlnet",
    "h94/IP-Adapter/models/image_encoder/config.json": "image_encoder",
    "openai/clip-vit-base-patch32/config.json": "clip",
}


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _digest(root):
    return {str(p.relative_to(root)): _sha(p) for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return tiny.build_tiny(tmp_path_factory.mktemp("tiny") / "t")


def test_published_metadata_copies_are_unchanged():
    assert {rel: _sha(tiny.METADATA / rel) for rel in PUBLISHED} == PUBLISHED


def test_tiny_build_is_deterministic_and_in_hub_layout(built, tmp_path):
    again = tiny.build_tiny(tmp_path / "b")
    digest = _digest(built)
    assert digest == _digest(again)
    assert not list(tmp_path.glob(".tiny-build-*")), "the temporary build folder must be gone"
    for repo in (*SD15_REPOS.values(), CONTROLNETS["canny-v10"]):
        assert (built / repo).is_dir(), repo
    assert not [k for k in digest if k.endswith((".bin", ".pt", ".ckpt", ".pth", ".msgpack", ".h5"))]


def test_tiny_has_the_real_weight_file_names_and_variants(built):
    base = built / SD15_REPOS["base"]
    for sub, stem in (("unet", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model"),
                      ("text_encoder", "model"), ("safety_checker", "model")):
        assert (base / sub / f"{stem}.safetensors").is_file() and (base / sub / f"{stem}.fp16.safetensors").is_file()
    v11, v10 = built / CONTROLNETS["canny-v11"], built / CONTROLNETS["canny-v10"]
    assert (v11 / "diffusion_pytorch_model.fp16.safetensors").is_file()
    # As on the hub: v1.0, the IP-Adapter image encoder and the retrieval CLIP publish no fp16 variant.
    assert not list(v10.glob("*.fp16.*"))
    assert sorted(p.name for p in (built / SD15_REPOS["ip_adapter"] / "models").iterdir()) == [
        "image_encoder", "ip-adapter_sd15.safetensors"]
    # Published weights are fp32, variants fp16, whatever dtype a config names (the image encoder's says float16).
    from safetensors import safe_open

    for path in built.rglob("*.safetensors"):
        with safe_open(str(path), "pt") as f:
            dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
        assert dtypes == ({"F16"} if ".fp16." in path.name else {"F32"}), (path, dtypes)
    clip = built / SD15_REPOS["clip"]
    assert sorted(p.name for p in clip.iterdir()) == [
        "config.json", "merges.txt", "model.safetensors", "preprocessor_config.json", "special_tokens_map.json",
        "tokenizer.json", "tokenizer_config.json", "vocab.json"]


def test_tiny_metadata_is_the_published_metadata(built):
    for rel, sha in PUBLISHED.items():
        if rel not in SIZED:
            assert _sha(built / rel) == sha, f"{rel} must be copied byte for byte"
    for rel, shape in SIZED.items():
        real, ours = json.loads((tiny.METADATA / rel).read_text()), json.loads((built / rel).read_text())
        assert list(ours) == list(real), f"{rel}: tiny must keep every key, in order"
        changed = {k for k in real if ours[k] != real[k]}
        assert changed <= set(tiny.SHAPES["tiny"][shape]) | {"vocab_size"}, (rel, changed)
        for nested in ("text_config", "vision_config"):
            if nested in real:
                assert list(ours[nested]) == list(real[nested])
                inner = {k for k in real[nested] if ours[nested][k] != real[nested][k]}
                assert inner <= set(tiny.SHAPES["tiny"][shape][nested]) | {"vocab_size"}, (rel, nested, inner)


def test_sd15_random_keeps_every_published_size():
    for rel, shape in SIZED.items():
        assert tiny.sized_config(tiny.METADATA / rel, tiny.SHAPES["full"][shape]) == json.loads(
            (tiny.METADATA / rel).read_text())
    encoder = json.loads((tiny.METADATA / SD15_REPOS["ip_adapter"] / "models/image_encoder/config.json").read_text())
    assert encoder["hidden_act"] == "gelu" and encoder["hidden_size"] == 1280


def test_sized_config_never_adds_a_key(tmp_path):
    with pytest.raises(KeyError, match="never add keys"):
        tiny.sized_config(tiny.METADATA / "openai/clip-vit-base-patch32/config.json", {"hidden_size": 8})


def test_schedulers_built_from_tiny_start_where_sd15_starts(built):
    from diffusers import DDIMScheduler, UniPCMultistepScheduler

    config = DDIMScheduler.load_config(built / SD15_REPOS["base"] / "scheduler")
    unipc = UniPCMultistepScheduler.from_config(config)
    unipc.set_timesteps(20)
    assert int(unipc.timesteps[0]) == 999  # "leading" spacing (the old tiny config) started at 941
    assert DDIMScheduler.from_config(config).config.clip_sample is False


def test_tiny_tokenizer_is_a_real_bpe_tokenizer(built):
    for folder in (built / SD15_REPOS["base"] / "tokenizer", built / SD15_REPOS["clip"]):
        tok = CLIPTokenizer.from_pretrained(folder)
        assert len(tok) > 500 and tok.model_max_length == 77
        ids = tok("a neon city").input_ids
        assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
        # As in CLIP, the end token has the highest id: the text encoder's legacy pooling relies on it.
        assert tok.eos_token_id == len(tok) - 1
        assert len(ids) - 2 < len("aneoncity")  # byte-pair merges are real: fewer tokens than characters
        assert len(tok("word " * 200, truncation=True, max_length=77).input_ids) == 77
