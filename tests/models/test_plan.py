"""The load plan against a Hugging Face cache laid out on disk, and how `load` treats failures (no server here)."""

import shutil

import httpx2
import pytest
import torch
from huggingface_hub import constants

from sdrag import WeightsUnavailableError
from sdrag.models import loading
from sdrag.models.loading import load
from sdrag.models.plan import Part, plan, snapshot_commit
from sdrag.models.presets import get_spec
from sdrag.models.sd15 import CONTROLNETS
from sdrag.models.tiny import tiny_root

COMMIT = "1" * 40
REPO = CONTROLNETS["canny-v11"]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache; `put(files)` fills REPO's main snapshot as huggingface_hub would."""
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    folder = tmp_path / f"models--{REPO.replace('/', '--')}"

    def put(*names):
        (folder / "refs").mkdir(parents=True, exist_ok=True)
        (folder / "refs" / "main").write_text(COMMIT)
        snapshot = folder / "snapshots" / COMMIT
        snapshot.mkdir(parents=True, exist_ok=True)
        for name in names:
            shutil.copyfile(tiny_root() / REPO / name, snapshot / name)
        return snapshot

    return put


def test_a_cached_config_without_its_weights_is_not_called_cached(cache):
    cache("config.json")
    with pytest.raises(WeightsUnavailableError) as err:
        plan(get_spec("tiny", controlnet=REPO))
    text = str(err.value)
    assert f"controlnet: {REPO}: diffusion_pytorch_model.safetensors" in text and "go online" in text


def test_cached_weights_load_from_disk_and_fp16_prefers_the_variant(cache):
    cache("config.json", "diffusion_pytorch_model.safetensors")
    part = plan(get_spec("tiny", controlnet=REPO))["controlnet"]
    assert part.local_only and part.variant is None and part.weights == ("diffusion_pytorch_model.safetensors",)
    # fp16 with only fp32 files cached: those serve; with the variant cached too, the variant is used.
    assert plan(get_spec("tiny", controlnet=REPO), torch.float16)["controlnet"].variant is None
    cache("diffusion_pytorch_model.fp16.safetensors")
    half = plan(get_spec("tiny", controlnet=REPO), torch.float16)["controlnet"]
    assert half.variant == "fp16" and half.weights == ("diffusion_pytorch_model.fp16.safetensors",)
    assert snapshot_commit(half) == COMMIT


def test_a_damaged_cached_file_gives_one_error_with_the_way_to_replace_it(cache):
    from diffusers import ControlNetModel

    snapshot = cache("config.json", "diffusion_pytorch_model.safetensors")
    weights = snapshot / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    part = plan(get_spec("tiny", controlnet=REPO))["controlnet"]
    with pytest.raises(WeightsUnavailableError) as err:
        load(part, lambda p: ControlNetModel.from_pretrained(p.source, **p.kwargs()))
    text = str(err.value)
    assert text.startswith(f"Could not load the ControlNet from {REPO}")
    assert f"hf cache verify {REPO}" in text and "Traceback" not in text


def _part(local_only=True):
    return Part(name="controlnet", source=REPO, revision=None, variant=None, configs=("config.json",),
                weights=("diffusion_pytorch_model.safetensors",), local_only=local_only)


def test_a_failed_disk_only_load_downloads_when_the_hub_answers(monkeypatch):
    calls = []

    def call(part):
        calls.append(part.hub_kwargs()["local_files_only"])
        if part.local_only:
            raise OSError("a file the plan did not foresee is missing")
        return "loaded"

    monkeypatch.setattr(loading, "hub_offline", lambda: False)
    monkeypatch.setattr(loading, "hub_reachable", lambda: True)
    assert load(_part(), call) == "loaded" and calls == [True, False]
    monkeypatch.setattr(loading, "hub_reachable", lambda: False)
    calls.clear()
    with pytest.raises(WeightsUnavailableError, match="Could not load the ControlNet"):
        load(_part(), call)
    assert calls == [True]


def test_a_network_failure_inside_a_loader_becomes_the_download_error():
    def call(part):
        try:
            raise httpx2.ConnectError("All connection attempts failed")
        except httpx2.ConnectError as exc:
            raise OSError("loader's own wrapping") from exc  # as transformers and diffusers wrap errors

    with pytest.raises(WeightsUnavailableError) as err:
        load(_part(local_only=False), call)
    assert "Downloading the ControlNet from" in str(err.value) and "ConnectError" in str(err.value)
    assert "run the same call again" in str(err.value)
