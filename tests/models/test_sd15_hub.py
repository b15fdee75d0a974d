"""The `sd15` preset end to end against a local hub serving the five real repos' layout (tiny weights).

Only the network is replaced: every run is a fresh interpreter whose huggingface_hub talks to LocalHub through
HF_ENDPOINT (or an HTTP proxy), and sdrag loads through the same calls a user's first online run makes.
"""

import hashlib
import io
import json
import subprocess
import sys
import textwrap

import pytest
from conftest import STYLES
from localhub import LocalHub
from sd15hub import NEVER, build_repos

import sdrag
from sdrag.models.sd15 import CLIP_REVISION, CONTROLNETS, SD15_REPOS
from sdrag.models.tiny import tiny_root

PROMPT, RUN = "a watercolour house", {"size": 64, "steps": 2, "seed": 0}

SCRIPT = textwrap.dedent("""
    import hashlib, io, json, os, socket
    args = json.loads(os.environ["SD15_ARGS"])
    attempts = []
    if args.get("block"):
        def refuse(*a, **k):
            attempts.append(repr(a[1:] if a else k))
            raise OSError("network blocked by test")
        socket.socket.connect = socket.socket.connect_ex = socket.create_connection = socket.getaddrinfo = refuse
    import sdrag
    try:
        wb = sdrag.Workbench.from_preset("sd15", library_dir=args["lib"], dtype=args.get("dtype"),
                                         **args.get("overrides", {}))
        wb.library.ingest(args["styles"], progress=False)
        res = wb.run(sdrag.SAMPLE_SKETCH, args["prompt"], **args["run"])
        buf = io.BytesIO()
        res.image.save(buf, format="PNG")
        out = {"ok": True, "png": hashlib.sha256(buf.getvalue()).hexdigest(), "style": res.style.name,
               "plan": {n: {"variant": p.variant, "weights": list(p.weights)} for n, p in wb.plan.items()},
               "weights": wb.weight_hashes(), "embedder": wb.embedder_name}
    except sdrag.SdragError as exc:
        out = {"ok": False, "error": type(exc).__name__, "message": str(exc)}
    out["attempts"] = attempts
    print("RESULT " + json.dumps(out))
""")


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with LocalHub(build_repos(tiny_root(), tmp_path_factory.mktemp("hub-extra"))) as h:
        yield h


def sd15(hub, home, *, offline=False, endpoint=None, env=None, **args):
    """Run the sd15 chain in a fresh interpreter against `hub`; return (result dict, stderr)."""
    full = hub.client_env(home / "hf", endpoint) | {"SD15_ARGS": json.dumps(
        {"lib": str(home / "lib"), "styles": str(STYLES), "prompt": PROMPT, "run": RUN, **args})}
    if offline:
        full["HF_HUB_OFFLINE"] = "1"
    full |= env or {}
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=full, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-4000:]
    line = next(x for x in reversed(done.stdout.splitlines()) if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):]), done.stderr


def downloads(hub, since):
    """(repo, commit, file) of every file body the hub served after request number `since`."""
    got = []
    for r in hub.requests[since:]:
        if r.get("download"):
            repo, _, rest = r["download"].partition("@")
            commit, _, path = rest.partition(":")
            got.append((repo, commit, path))
    return got


def png_sha(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return hashlib.sha256(buf.getvalue()).hexdigest()


def test_first_run_downloads_what_it_loads_with_progress_then_runs_offline_unchanged(hub, tmp_path, wb):
    since = len(hub.requests)
    # TQDM_POSITION=-1 makes huggingface_hub draw its bars although stderr is no terminal here.
    first, err = sd15(hub, tmp_path, env={"TQDM_POSITION": "-1"})
    assert first["ok"], first
    got = downloads(hub, since)
    files = {f"{repo}/{path}" for repo, _, path in got}
    # Exactly the planned weight files were fetched, each once; nothing the pipeline does not load.
    planned = {f"{SD15_REPOS[n]}/{w}" for n, p in first["plan"].items() for w in p["weights"]}
    assert planned <= files and len(planned) == 7
    weights = [f for f in files if f.endswith((".safetensors", ".bin", ".ckpt"))]
    assert sorted(weights) == sorted(planned) and len(weights) == len([g for g in got if g[2].endswith(".safetensors")])
    assert not [f for f in files if any(bad in f for bad in NEVER)], files
    assert {commit for repo, commit, _ in got if repo == SD15_REPOS["clip"]} == {CLIP_REVISION}
    assert not [r for r in hub.requests[since:] if "discussions" in r["path"] or r["method"] == "POST"]
    # Downloads show progress; the manifest's hashes cover every loaded file, CLIP (from the pinned commit) too.
    bars = [line for line in err.replace("\r", "\n").splitlines() if "100%|" in line]
    for name in ("diffusion_pytorch_model.safetensors", "model.safetensors", "ip-adapter_sd15.safetensors"):
        assert any(name in bar for bar in bars), (name, bars)
    assert "Warning" not in err, err
    hashes = first["weights"]
    assert {n: len(v) for n, v in hashes.items()} == {"base": 3, "controlnet": 1, "ip_adapter": 2, "clip": 1}
    clip = hashes["clip"][0]
    assert clip["commit"] == CLIP_REVISION and clip["file"] == "model.safetensors"
    assert clip["sha256"] == hashlib.sha256((tiny_root() / SD15_REPOS["clip"] / "model.safetensors").read_bytes()
                                            ).hexdigest()
    assert all(f["sha256"] and f["commit"] for files in hashes.values() for f in files)
    assert first["embedder"] == f"{SD15_REPOS['clip']}@{CLIP_REVISION}"  # library vectors say which weights

    since = len(hub.requests)
    second, err = sd15(hub, tmp_path, offline=True, block=True)
    assert second["ok"], second
    assert second["attempts"] == [] and len(hub.requests) == since
    assert second["png"] == first["png"] and second["weights"] == hashes
    assert "%|" not in err, err  # loading from the cache prints no bars
    # Asked for fp16 now, the cached fp32 files serve (cast on load) instead of a download of the fp16 variant.
    half, _ = sd15(hub, tmp_path, offline=True, block=True, dtype="fp16")
    assert half["ok"] and half["attempts"] == [], half
    assert half["plan"]["base"]["variant"] is None and half["weights"] == hashes
    # The same weights in tiny's local folders give the same picture: one code path.
    assert png_sha(wb.run(sdrag.SAMPLE_SKETCH, PROMPT, **RUN).image) == first["png"]


def test_fp16_downloads_the_fp16_variants_and_falls_back_where_a_repo_has_none(hub, tmp_path):
    since = len(hub.requests)
    res, _ = sd15(hub, tmp_path, dtype="fp16", overrides={"controlnet": "canny-v10"})
    assert res["ok"], res
    assert res["plan"]["base"] == {"variant": "fp16", "weights": [
        "unet/diffusion_pytorch_model.fp16.safetensors", "vae/diffusion_pytorch_model.fp16.safetensors",
        "text_encoder/model.fp16.safetensors"]}
    assert res["plan"]["controlnet"] == {"variant": None, "weights": ["diffusion_pytorch_model.safetensors"]}
    weights = sorted(f"{repo}/{path}" for repo, _, path in downloads(hub, since) if path.endswith(".safetensors"))
    assert weights == sorted([
        f"{SD15_REPOS['base']}/unet/diffusion_pytorch_model.fp16.safetensors",
        f"{SD15_REPOS['base']}/vae/diffusion_pytorch_model.fp16.safetensors",
        f"{SD15_REPOS['base']}/text_encoder/model.fp16.safetensors",
        f"{CONTROLNETS['canny-v10']}/diffusion_pytorch_model.safetensors",
        f"{SD15_REPOS['ip_adapter']}/models/ip-adapter_sd15.safetensors",
        f"{SD15_REPOS['ip_adapter']}/models/image_encoder/model.safetensors",
        f"{SD15_REPOS['clip']}/model.safetensors"])


PREFILL = textwrap.dedent("""
    import json, os
    from huggingface_hub import hf_hub_download
    for repo, revision, files in json.loads(os.environ["PREFILL"]):
        for name in files:
            hf_hub_download(repo, name, revision=revision)
""")


def test_a_cache_with_configs_and_pickles_only_downloads_when_online_and_names_the_files_offline(hub, tmp_path):
    base = ["model_index.json", "scheduler/scheduler_config.json", "tokenizer/vocab.json", "tokenizer/merges.txt",
            "tokenizer/special_tokens_map.json",
            "feature_extractor/preprocessor_config.json"]
    base += [f"{sub}/{name}" for sub, name in (("unet", "config.json"), ("unet", "diffusion_pytorch_model.bin"),
                                               ("vae", "config.json"), ("vae", "diffusion_pytorch_model.bin"),
                                               ("text_encoder", "config.json"), ("text_encoder", "pytorch_model.bin"))]
    prefill = [
        (SD15_REPOS["base"], None, base),
        (SD15_REPOS["controlnet"], None, ["config.json", "diffusion_pytorch_model.bin"]),
        (SD15_REPOS["ip_adapter"], None, ["models/ip-adapter_sd15.bin", "models/image_encoder/config.json",
                                          "models/image_encoder/pytorch_model.bin"]),
        (SD15_REPOS["clip"], CLIP_REVISION, ["config.json", "preprocessor_config.json", "tokenizer_config.json",
                                             "special_tokens_map.json", "vocab.json", "merges.txt", "tokenizer.json",
                                             "pytorch_model.bin"]),
    ]
    env = hub.client_env(tmp_path / "hf") | {"PREFILL": json.dumps(prefill)}
    subprocess.run([sys.executable, "-c", PREFILL], env=env, check=True, capture_output=True, timeout=120)

    offline, _ = sd15(hub, tmp_path, offline=True)
    assert not offline["ok"] and offline["error"] == "WeightsUnavailableError"
    # Missing a tokenizer config, the tokenizer would load anyway, without a length limit: it counts as missing.
    for needle in ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors",
                   "tokenizer/tokenizer_config.json",
                   f"{SD15_REPOS['clip']}@{CLIP_REVISION}: model.safetensors", "go online"):
        assert needle in offline["message"], offline["message"]
    assert "re-download" not in offline["message"]

    since = len(hub.requests)
    online, _ = sd15(hub, tmp_path)
    assert online["ok"], online
    fetched = {path for _, _, path in downloads(hub, since)}
    assert {"unet/diffusion_pytorch_model.safetensors", "model.safetensors"} <= fetched
    assert {f for f in fetched if not f.endswith(".safetensors")} == {"tokenizer/tokenizer_config.json"}



def test_pickled_only_weights_on_the_hub_need_the_opt_in(hub, tmp_path):
    # openai/clip-vit-base-patch32's main branch has only pytorch_model.bin (and flax/tf files).
    refused, _ = sd15(hub, tmp_path, overrides={"clip_revision": "main"})
    assert not refused["ok"] and "only pickled weights (pytorch_model.bin)" in refused["message"]
    assert "allow_pickle=True" in refused["message"]
    since = len(hub.requests)
    allowed, _ = sd15(hub, tmp_path, overrides={"clip_revision": "main", "allow_pickle": True})
    assert allowed["ok"], allowed
    got = downloads(hub, since)
    assert [path for _, _, path in got if path.endswith(".bin")] == ["pytorch_model.bin"]
    # transformers would ask the hub's conversion service about pickled weights; sdrag switches that off.
    assert not [r for r in hub.requests[since:] if "discussions" in r["path"] or r["method"] == "POST"]


def test_a_hub_dying_mid_download_gives_one_sdrag_error_and_a_rerun_completes(hub, tmp_path):
    hub.die_after("unet/diffusion_pytorch_model.safetensors", 4096)
    try:
        broken, _ = sd15(hub, tmp_path)
    finally:
        hub.start()
    assert not broken["ok"] and broken["error"] == "WeightsUnavailableError", broken
    assert "Downloading Stable Diffusion 1.5" in broken["message"] and "run the same call again" in broken["message"]
    since = len(hub.requests)
    again, _ = sd15(hub, tmp_path)
    assert again["ok"], again
    fetched = {path for _, _, path in downloads(hub, since)}
    # What finished before the cut (CLIP, the ControlNet) is not fetched again.
    assert "unet/diffusion_pytorch_model.safetensors" in fetched and "model.safetensors" not in fetched


def test_behind_a_proxy_the_hub_is_not_reported_down(hub, tmp_path):
    # The endpoint's name does not even resolve here: only the proxy can reach it, as in many labs.
    since = len(hub.requests)
    res, _ = sd15(hub, tmp_path, endpoint="http://hub.invalid",
                  env={"HTTP_PROXY": hub.url, "http_proxy": hub.url, "HTTPS_PROXY": hub.url})
    assert res["ok"], res
    targets = [r["target"] for r in hub.requests[since:]]
    assert targets and all(t.startswith(("http://hub.invalid/", "http://cdn-lfs.hub.invalid/")) for t in targets)
