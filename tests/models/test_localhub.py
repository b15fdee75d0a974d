"""The local hub stand-in, driven by the real huggingface_hub / transformers download code in subprocesses."""

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from localhub import LocalHub, Repo

MIB = 1024 * 1024
BIG = 12 * MIB  # over huggingface_hub's 10 MiB read chunk, so a cut after 11 MiB has 10 MiB on disk to resume from
MAIN, PR, BIG_MAIN = (hashlib.sha1(name.encode()).hexdigest() for name in ("main", "pr", "big"))

PRELUDE = """
import json, os, sys
ARGS = json.loads(os.environ["LOCALHUB_ARGS"])
def out(obj):
    print(json.dumps(obj))
"""


@pytest.fixture(scope="module")
def repos(tmp_path_factory) -> dict:
    """acme/tiny: text files and random weights on main, a tiny CLIP text model on refs/pr/1; acme/big: 12 MiB."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    root = tmp_path_factory.mktemp("hubfiles")
    main, pr = root / "main", root / "pr"
    (main / "notes").mkdir(parents=True)
    (main / "README.md").write_text("# tiny\n")
    (main / "notes" / "a.txt").write_text("note a\n")
    (main / "notes" / "b.txt").write_text("note b\n")
    (main / "model.safetensors").write_bytes(os.urandom(200_000))
    torch.manual_seed(0)
    config = CLIPTextConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        vocab_size=100,
        max_position_embeddings=77,
        projection_dim=16,
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
    )
    CLIPTextModel(config).save_pretrained(pr)  # safetensors is the only format transformers 5 writes
    assert (pr / "model.safetensors").is_file() and (pr / "config.json").is_file()
    (root / "big.bin").write_bytes(os.urandom(BIG))

    main_files = {"README.md": main / "README.md", "notes/a.txt": main / "notes/a.txt"}
    main_files |= {"notes/b.txt": main / "notes/b.txt", "model.safetensors": main / "model.safetensors"}
    pr_files = {**main_files, **{p.name: p for p in pr.iterdir()}}
    return {
        "acme/tiny": Repo(commits={MAIN: main_files, PR: pr_files}, refs={"main": MAIN, "refs/pr/1": PR}),
        "acme/big": Repo(commits={BIG_MAIN: {"big.bin": root / "big.bin"}}, refs={"main": BIG_MAIN}),
    }


@pytest.fixture
def hub(repos):
    with LocalHub(repos) as h:
        yield h


def client(hub: LocalHub, hf_home: Path, code: str, args: object = None, **env: str) -> dict:
    """Run `code` in a fresh interpreter pointed at the hub; return the JSON it printed last."""
    full = hub.client_env(hf_home) | {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "LOCALHUB_ARGS": json.dumps(args)} | env
    r = subprocess.run([sys.executable, "-c", PRELUDE + code], env=full, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-4000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def unsupported(hub: LocalHub) -> list[dict]:
    """Requests the hub answered with a 404 that names no hub error: routes the stand-in does not speak."""
    return [r for r in hub.requests if r.get("error") == "unsupported"]


def test_download_main_into_cache(hub, repos, tmp_path):
    got = client(
        hub,
        tmp_path / "hf",
        """
from huggingface_hub import hf_hub_download, try_to_load_from_cache
paths = [hf_hub_download("acme/tiny", f) for f in ("README.md", "model.safetensors")]
again = hf_hub_download("acme/tiny", "model.safetensors", revision=ARGS)
cached = [try_to_load_from_cache("acme/tiny", f) for f in ("README.md", "model.safetensors")]
out({"paths": paths, "again": again, "cached": cached, "bytes": [open(p, "rb").read().hex() for p in paths]})
""",
        args=MAIN,
    )
    files = repos["acme/tiny"].commits[MAIN]
    assert got["bytes"] == [files["README.md"].read_bytes().hex(), files["model.safetensors"].read_bytes().hex()]
    for path in got["paths"]:
        assert f"/models--acme--tiny/snapshots/{MAIN}/" in path
    assert got["cached"] == got["paths"] and got["again"] == got["paths"][1]
    blob = Path(got["paths"][1]).resolve()
    assert blob.name == hashlib.sha256(files["model.safetensors"].read_bytes()).hexdigest()  # LFS: blob named sha256
    assert (tmp_path / "hf/hub/models--acme--tiny/refs/main").read_text() == MAIN
    # The LFS file is answered with a redirect to the "CDN" origin, where its body is fetched; the sha lookup is cached.
    assert [(r["method"], r["status"], r["host"].split(":")[0]) for r in hub.requests] == [
        ("HEAD", 200, "127.0.0.1"),
        ("GET", 200, "127.0.0.1"),
        ("HEAD", 302, "127.0.0.1"),
        ("GET", 200, "localhost"),
    ]
    assert hub.downloads() == [f"acme/tiny@{MAIN}:README.md", f"acme/tiny@{MAIN}:model.safetensors"]


def test_revisions_and_missing_entries(hub, repos, tmp_path):
    got = client(
        hub,
        tmp_path / "hf",
        """
from huggingface_hub import hf_hub_download
res = {"by_sha": hf_hub_download("acme/tiny", "model.safetensors", revision=ARGS),
       "by_pr": hf_hub_download("acme/tiny", "config.json", revision="refs/pr/1"),
       "main": hf_hub_download("acme/tiny", "model.safetensors")}
for name, kw in [("missing", {"filename": "config.json"}), ("bad_rev", {"filename": "README.md", "revision": "nope"}),
                 ("bad_repo", {"filename": "README.md", "repo_id": "acme/nope"})]:
    try:
        hf_hub_download(**{"repo_id": "acme/tiny", **kw})
    except Exception as e:
        res[name] = [c.__name__ for c in type(e).__mro__]
res["bytes"] = {k: open(res[k], "rb").read().hex() for k in ("by_sha", "by_pr", "main")}
out(res)
""",
        args=PR,
    )
    files = repos["acme/tiny"].commits
    assert got["bytes"]["by_sha"] == files[PR]["model.safetensors"].read_bytes().hex()
    assert got["bytes"]["by_pr"] == files[PR]["config.json"].read_bytes().hex()
    assert got["bytes"]["main"] == files[MAIN]["model.safetensors"].read_bytes().hex() != got["bytes"]["by_sha"]
    assert f"/snapshots/{PR}/config.json" in got["by_pr"] and f"/snapshots/{MAIN}/" in got["main"]
    assert got["missing"][:1] == ["RemoteEntryNotFoundError"] and "EntryNotFoundError" in got["missing"]
    assert got["bad_rev"][0] == "RevisionNotFoundError" and got["bad_repo"][0] == "RepositoryNotFoundError"
    cache = tmp_path / "hf/hub/models--acme--tiny"
    assert (cache / ".no_exist" / MAIN / "config.json").is_file()  # the 404 named the commit it looked at
    assert (cache / "refs/refs/pr/1").read_text() == PR
    assert any(r["target"] == "/acme/tiny/resolve/refs%2Fpr%2F1/config.json" for r in hub.requests)
    assert not unsupported(hub)


def test_snapshot_download_patterns(hub, tmp_path):
    got = client(
        hub,
        tmp_path / "hf",
        """
from pathlib import Path
from huggingface_hub import snapshot_download
folder = snapshot_download("acme/tiny", allow_patterns=["*.md", "notes/a*"])
pr = snapshot_download("acme/tiny", revision="refs/pr/1", ignore_patterns=["*.safetensors", "notes/*"])
out({k: sorted(str(p.relative_to(v)) for p in Path(v).rglob("*") if p.is_file()) for k, v in
     {"main": folder, "pr": pr}.items()} | {"folder": folder})
""",
    )
    assert got["main"] == ["README.md", "notes/a.txt"] and got["folder"].endswith(f"/snapshots/{MAIN}")
    assert got["pr"] == ["README.md", "config.json"]
    assert sorted(hub.downloads()) == sorted(
        [f"acme/tiny@{MAIN}:README.md", f"acme/tiny@{MAIN}:notes/a.txt", f"acme/tiny@{PR}:config.json"]
    )  # README.md has the same blob on both commits: fetched once
    assert not unsupported(hub)


def test_model_info(hub, repos, tmp_path):
    got = client(
        hub,
        tmp_path / "hf",
        """
from huggingface_hub import HfApi
api = HfApi()
res = {}
for rev in (None, "refs/pr/1", ARGS):
    info = api.model_info("acme/tiny", revision=rev, files_metadata=True)
    res[str(rev)] = {"sha": info.sha, "id": info.id,
                     "siblings": {s.rfilename: [s.size, s.lfs.sha256 if s.lfs else None] for s in info.siblings}}
res["files"] = api.list_repo_files("acme/tiny", revision="refs/pr/1")
res["templates"] = [e.path for e in api.list_repo_tree("acme/tiny", "notes")]
out(res)
""",
        args=MAIN,
    )
    commits = repos["acme/tiny"].commits
    assert got["None"] == got[MAIN] and got[MAIN]["sha"] == MAIN and got[MAIN]["id"] == "acme/tiny"
    assert got["refs/pr/1"]["sha"] == PR and set(got["refs/pr/1"]["siblings"]) == set(commits[PR])
    assert set(got[MAIN]["siblings"]) == set(commits[MAIN]) and "config.json" not in got[MAIN]["siblings"]
    weights = commits[MAIN]["model.safetensors"].read_bytes()
    assert got[MAIN]["siblings"]["model.safetensors"] == [len(weights), hashlib.sha256(weights).hexdigest()]
    assert got[MAIN]["siblings"]["README.md"] == [commits[MAIN]["README.md"].stat().st_size, None]
    assert sorted(got["files"]) == sorted(commits[PR]) and got["templates"] == ["notes/a.txt", "notes/b.txt"]
    assert hub.downloads() == []


def test_clip_from_pretrained_then_offline(hub, repos, tmp_path):
    code = """
import torch
from safetensors.torch import load_file
from transformers import CLIPTextModel
model = CLIPTextModel.from_pretrained("acme/tiny", revision=ARGS["rev"], use_safetensors=True,
                                      local_files_only=ARGS["offline"])
saved, state = load_file(ARGS["src"]), model.state_dict()
out({"n": len(saved), "equal": [k for k, v in saved.items() if k in state and torch.equal(state[k], v)],
     "layers": model.config.num_hidden_layers, "vocab": model.config.vocab_size})
"""
    src = str(repos["acme/tiny"].commits[PR]["model.safetensors"])
    args = {"rev": PR, "src": src, "offline": False}
    online = client(hub, tmp_path / "hf", code, args=args)
    assert online["n"] > 10 and len(online["equal"]) == online["n"]
    assert (online["layers"], online["vocab"]) == (2, 100)
    assert f"acme/tiny@{PR}:model.safetensors" in hub.downloads() and f"acme/tiny@{PR}:config.json" in hub.downloads()
    assert not unsupported(hub)
    assert all(r["status"] in (200, 302) or r.get("error") == "EntryNotFound" for r in hub.requests), hub.requests

    seen = len(hub.requests)
    offline = client(hub, tmp_path / "hf", code, args=args | {"offline": True}, HF_HUB_OFFLINE="1")
    assert offline == online
    assert len(hub.requests) == seen  # nothing asked of the hub


def test_dropped_download(hub, repos, tmp_path):
    code = """
import glob, hashlib
from huggingface_hub import hf_hub_download
try:
    path = hf_hub_download("acme/big", "big.bin")
    res = {"sha256": hashlib.sha256(open(path, "rb").read()).hexdigest()}
except Exception as e:
    res = {"mro": [f"{c.__module__}.{c.__qualname__}" for c in type(e).__mro__], "oserror": isinstance(e, OSError)}
res["incomplete"] = glob.glob(os.environ["HF_HOME"] + "/**/*.incomplete", recursive=True)
out(res)
"""
    want = hashlib.sha256(repos["acme/big"].commits[BIG_MAIN]["big.bin"].read_bytes()).hexdigest()

    # The hub dies 11 MiB into the body and stays down: the client retries, then raises an httpx2 error.
    hub.die_after("big.bin", 11 * MIB)
    t0 = time.monotonic()
    failed = client(hub, tmp_path / "hf", code)
    print("dropped download raised", failed["mro"], f"after {time.monotonic() - t0:.1f}s")
    assert failed["mro"][0] == "httpx2.ConnectError" and not failed["oserror"]
    assert failed["incomplete"] == []  # huggingface_hub 2.4 deletes its per-process temp file on failure
    assert not hub.running and [r.get("died") for r in hub.requests if r.get("download")] == [True]
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", hub.port), timeout=2):
        pass

    # Back up on the same port: a rerun fetches it whole (nothing was kept to resume from).
    hub.start()
    seen = len(hub.requests)
    assert client(hub, tmp_path / "hf", code) == {"sha256": want, "incomplete": []}
    assert [(r["range"], r["status"]) for r in hub.requests[seen:] if r.get("download")] == [(None, 200)]

    # Dies again but comes back within the client's retries: the same call resumes with a Range request.
    hub.die_after("big.bin", 11 * MIB)

    def restart() -> None:
        deadline = time.monotonic() + 60
        while hub.running and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(1.5)
        hub.start()

    restarter = threading.Thread(target=restart, daemon=True)
    restarter.start()
    seen = len(hub.requests)
    assert client(hub, tmp_path / "hf2", code) == {"sha256": want, "incomplete": []}
    restarter.join()
    bodies = [(r["range"], r["status"], r.get("bytes")) for r in hub.requests[seen:] if r.get("download")]
    assert bodies[0] == (None, 200, 11 * MIB) and len(bodies) == 2, bodies
    resume = int(bodies[1][0].removeprefix("bytes=").removesuffix("-"))
    assert 0 < resume <= 11 * MIB and bodies[1][1:] == (206, BIG - resume)


def test_proxy_mode(hub, repos, tmp_path):
    got = client(
        hub,
        tmp_path / "hf",
        """
from huggingface_hub import HfApi, hf_hub_download
paths = [hf_hub_download("acme/tiny", f) for f in ("README.md", "model.safetensors")]
out({"bytes": [open(p, "rb").read().hex() for p in paths], "sha": HfApi().model_info("acme/tiny").sha})
""",
        HF_ENDPOINT="http://hub.invalid",
        HTTP_PROXY=hub.url,
        http_proxy=hub.url,
    )
    files = repos["acme/tiny"].commits[MAIN]
    assert got["bytes"] == [files["README.md"].read_bytes().hex(), files["model.safetensors"].read_bytes().hex()]
    assert got["sha"] == MAIN
    targets = [(r["method"], r["status"], r["target"].split("/")[2]) for r in hub.requests]
    assert targets == [
        ("HEAD", 200, "hub.invalid"),
        ("GET", 200, "hub.invalid"),
        ("HEAD", 302, "hub.invalid"),
        ("GET", 200, "cdn-lfs.hub.invalid"),
        ("GET", 200, "hub.invalid"),
    ]
    assert all(r["target"].startswith("http://") for r in hub.requests)  # absolute-form: we were the proxy
