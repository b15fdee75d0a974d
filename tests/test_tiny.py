import hashlib
import json

from transformers import CLIPTokenizer

from sdrag import tiny


def _digest(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_tiny_build_is_deterministic_and_in_hub_layout(tmp_path):
    a = tiny.build_tiny(tmp_path / "a")
    b = tiny.build_tiny(tmp_path / "b")
    da, db = _digest(a), _digest(b)
    assert da == db
    for rel in ["stable-diffusion-v1-5/model_index.json", "stable-diffusion-v1-5/unet/config.json",
                "control_v11p_sd15_canny/config.json", "IP-Adapter/models/ip-adapter_sd15.safetensors",
                "IP-Adapter/models/image_encoder/config.json", "clip-vit-base-patch32/config.json"]:
        assert rel in da, rel
    weights = [k for k in da if "model" in k and k.endswith((".bin", ".pt", ".ckpt", ".pth"))]
    assert not weights, "tiny must be safetensors only"
    index = json.loads((a / "stable-diffusion-v1-5/model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert not list(tmp_path.glob(".tiny-build-*")), "the temporary build folder must be gone"


def test_tiny_tokenizer_is_a_real_bpe_tokenizer():
    tok = CLIPTokenizer.from_pretrained(tiny.tiny_root() / tiny.BASE_DIR / "tokenizer")
    assert len(tok) > 500 and tok.model_max_length == 77
    ids = tok("a neon city").input_ids
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    # Byte-pair merges are real: fewer tokens than characters.
    assert len(ids) - 2 < len("aneoncity")
    long = tok("word " * 200, truncation=True, max_length=77).input_ids
    assert len(long) == 77
