import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import sdrag
from sdrag import ParameterError, WeightsUnavailableError
from sdrag.models.device import pick_device, pick_dtype
from sdrag.models.loading import checked_tokenizer
from sdrag.models.plan import plan
from sdrag.models.presets import get_spec
from sdrag.models.sd15 import CLIP_REVISION, CONTROLNETS, SD15_REPOS

# The clock starts after the heavy imports (3-4 s on a slow machine): what is timed is how the hub is reached.
OFFLINE_PROBE = textwrap.dedent("""
    import time, sdrag
    import diffusers, huggingface_hub, torch, transformers
    t = time.perf_counter()
    try:
        sdrag.Workbench.from_preset("sd15", library_dir={lib!r})
    except sdrag.WeightsUnavailableError as exc:
        print(round(time.perf_counter() - t, 3))
        print(exc)
    else:
        print("NO ERROR")
""")


@pytest.mark.parametrize("env", [
    {"HF_HUB_OFFLINE": "1"},
    # Not marked offline, but nothing answers at the endpoint: the probe must fail fast, not retry.
    {"HF_HUB_OFFLINE": "", "HF_ENDPOINT": "http://127.0.0.1:9"},
], ids=["offline-flag", "unreachable-endpoint"])
def test_real_preset_offline_fails_clearly_in_under_2s(env, tmp_path):
    full_env = {**os.environ, **env, "HF_HOME": str(tmp_path / "hf")}
    code = OFFLINE_PROBE.format(lib=str(tmp_path / "lib"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=60)
    assert out.returncode == 0, out.stderr
    seconds, *message = out.stdout.strip().splitlines()
    text = "\n".join(message)
    assert float(seconds) < 2.0
    for needle in ("stable-diffusion-v1-5/stable-diffusion-v1-5", "lllyasviel/control_v11p_sd15_canny",
                   "h94/IP-Adapter", "openai/clip-vit-base-patch32", "go online", "preset='tiny' in Python",
                   "--preset tiny on the command line"):
        assert needle in text


def test_a_hanging_hub_is_abandoned_within_the_probe_timeout(monkeypatch, tmp_path):
    import huggingface_hub.utils
    from huggingface_hub import constants

    from sdrag.models import hub

    class Hanging:
        def head(self, *args, **kwargs):
            time.sleep(10)

    monkeypatch.setenv("HF_HUB_OFFLINE", "")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(hub, "_probe_cache", {})
    # The probe goes through huggingface_hub's own HTTP client (so proxies apply), never a raw socket.
    monkeypatch.setattr(huggingface_hub.utils, "get_session", Hanging)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: pytest.fail("raw socket probe"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    t = time.perf_counter()
    with pytest.raises(WeightsUnavailableError, match="cannot be reached"):
        plan(get_spec("sd15"))
    assert time.perf_counter() - t < 2.0


def test_overrides_and_controlnet_alias(tmp_path):
    spec = get_spec("sd15", controlnet="canny-v10", clip=str(tmp_path))
    assert spec.controlnet == CONTROLNETS["canny-v10"] == "lllyasviel/sd-controlnet-canny"
    assert spec.clip == str(tmp_path) and spec.revision("clip") is None
    tiny = get_spec("tiny", controlnet="canny-v10")
    assert tiny.controlnet.endswith(CONTROLNETS["canny-v10"]) and tiny.revision("controlnet") is None
    with pytest.raises(ParameterError, match="Unknown model override"):
        get_spec("tiny", unet="x")
    with pytest.raises(ParameterError, match="Unknown preset"):
        get_spec("sdxl")


def test_local_override_missing_files_names_them(tmp_path):
    empty = tmp_path / "my-controlnet"
    empty.mkdir()
    with pytest.raises(WeightsUnavailableError) as err:
        sdrag.Workbench.from_preset("tiny", library_dir=tmp_path / "lib", controlnet=str(empty))
    assert str(empty / "config.json") in str(err.value) and "tiny" in str(err.value)


def test_degraded_tokenizer_is_refused(tmp_path):
    from transformers import CLIPTokenizer

    from sdrag.models.tiny import tiny_root

    good = CLIPTokenizer.from_pretrained(tiny_root() / SD15_REPOS["base"] / "tokenizer")
    assert checked_tokenizer(good, "tiny") is good

    class TwoTokens:
        def __len__(self):
            return 2

    with pytest.raises(WeightsUnavailableError, match="only 2 tokens"):
        checked_tokenizer(TwoTokens(), "somewhere")


def test_device_and_dtype_choice():
    cpu = pick_device("cpu")
    assert pick_dtype(cpu) == torch.float32
    assert pick_dtype(cpu, "fp16") == torch.float16 and pick_dtype(cpu, "bf16") == torch.bfloat16
    assert pick_dtype(torch.device("cuda"), None) == torch.float16
    with pytest.raises(ParameterError):
        pick_dtype(cpu, "fp8-ish")
    with pytest.raises(ParameterError):
        pick_device("quantum")
    if not torch.cuda.is_available():
        assert pick_device(None).type == "cpu"
        with pytest.raises(ParameterError, match="no CUDA"):
            pick_device("cuda")


def test_a_pickled_ip_adapter_image_encoder_is_not_loaded_silently(tmp_path):
    import shutil

    from safetensors.torch import load_file

    from sdrag.models.tiny import tiny_root

    ip = tmp_path / "IP-Adapter"
    shutil.copytree(tiny_root() / SD15_REPOS["ip_adapter"], ip)
    encoder = ip / "models" / "image_encoder"
    torch.save(load_file(encoder / "model.safetensors"), encoder / "pytorch_model.bin")
    (encoder / "model.safetensors").unlink()
    with pytest.raises(WeightsUnavailableError, match="only pickled weights .models/image_encoder/pytorch_model.bin"):
        plan(get_spec("tiny", ip_adapter=str(ip)))
    parts = plan(get_spec("tiny", ip_adapter=str(ip), allow_pickle=True))
    assert parts["ip_adapter"].weights == ("models/ip-adapter_sd15.safetensors",
                                           "models/image_encoder/pytorch_model.bin")


def test_sd15_pins_a_clip_revision_that_has_safetensors_and_a_new_source_drops_the_pin():
    spec = get_spec("sd15")
    assert spec.clip == SD15_REPOS["clip"] and spec.revision("clip") == CLIP_REVISION
    assert get_spec("sd15", clip="laion/CLIP-ViT-B-32-laion2B-s34B-b79K").revision("clip") is None
    assert get_spec("sd15", clip="x/y", clip_revision="v2").revision("clip") == "v2"
    assert all(get_spec("sd15").revision(part) is None for part in ("base", "controlnet", "ip_adapter"))


def test_an_image_encoder_folder_with_a_slash_is_read_from_the_repo_root_as_diffusers_reads_it(tmp_path):
    import shutil

    from sdrag.models.tiny import tiny_root

    ip = tmp_path / "IP-Adapter"
    shutil.copytree(tiny_root() / SD15_REPOS["ip_adapter"], ip)
    (ip / "encoders").mkdir()
    (ip / "models" / "image_encoder").rename(ip / "encoders" / "vit-h")
    spec = get_spec("tiny", ip_adapter=str(ip), image_encoder_folder="encoders/vit-h")
    assert spec.image_encoder_subfolder == "encoders/vit-h"
    assert get_spec("tiny").image_encoder_subfolder == "models/image_encoder"
    wb = sdrag.Workbench(spec, library_dir=tmp_path / "lib")
    assert wb.plan["ip_adapter"].weights == ("models/ip-adapter_sd15.safetensors", "encoders/vit-h/model.safetensors")
    assert len(wb.generator.ip_processors()) == 16
    hashed = wb.weight_hashes()["ip_adapter"]
    assert [f["path"] for f in hashed] == [str(ip / "models/ip-adapter_sd15.safetensors"),
                                           str(ip / "encoders/vit-h/model.safetensors")]


def test_a_local_folder_saved_by_transformers_5_with_only_tokenizer_json_is_complete(tmp_path, sketch):
    import shutil

    from transformers import CLIPTokenizer

    from sdrag.models.tiny import tiny_root

    base = tmp_path / "sd15"
    shutil.copytree(tiny_root() / SD15_REPOS["base"], base)
    tokenizer = CLIPTokenizer.from_pretrained(base / "tokenizer")
    shutil.rmtree(base / "tokenizer")
    tokenizer.save_pretrained(base / "tokenizer")  # transformers 5 writes tokenizer.json, no vocab.json/merges.txt
    assert not (base / "tokenizer" / "vocab.json").exists()
    from conftest import STYLES

    wb = sdrag.Workbench.from_preset("tiny", library_dir=tmp_path / "lib", base=str(base))
    wb.library.ingest(STYLES, progress=False)
    assert wb.run(sketch, "a neon city " * 40, size=64, steps=1).image.size == (64, 64)  # > 77 tokens: cut
    (base / "tokenizer" / "tokenizer.json").unlink()
    with pytest.raises(WeightsUnavailableError, match="tokenizer/vocab.json"):
        plan(get_spec("tiny", base=str(base)))
