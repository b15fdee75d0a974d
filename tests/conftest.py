"""Shared fixtures: a fresh tiny preset per session, a workbench with the starter styles, test sketches."""

import os
import socket
import tempfile
from pathlib import Path

# Before anything imports huggingface_hub: tests never touch the network, and build tiny from scratch.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["SDRAG_CACHE"] = tempfile.mkdtemp(prefix="sdrag-test-cache-")
os.environ.setdefault("MPLBACKEND", "Agg")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
STYLES = REPO / "styles"
FAST = {"size": 64, "steps": 2}


def draw_sketch(width: int = 160, height: int = 120) -> np.ndarray:
    """A sketch with strong and faint strokes, so Canny thresholds change what is kept."""
    img = np.full((height, width, 3), 255, np.uint8)
    cv2.rectangle(img, (20, 30), (width - 20, height - 15), (0, 0, 0), 3)
    cv2.line(img, (20, 30), (width // 2, 5), (0, 0, 0), 3)
    cv2.line(img, (width // 2, 5), (width - 20, 30), (0, 0, 0), 3)
    cv2.circle(img, (width // 2, height // 2 + 10), 18, (215, 215, 215), 2)
    cv2.line(img, (30, height - 30), (width - 30, 40), (232, 232, 232), 2)
    return img


def fingerprint(image, blocks: int = 4) -> np.ndarray:
    """Mean colour of each of `blocks` x `blocks` tiles of a square image: numbers that move when a knob is
    mis-wired, yet stay within a hundredth of a grey level when only the CPU's float kernels differ (another
    thread count, AVX2 or AVX-512), where the PNG's bytes do not."""
    pixels = np.asarray(image, float)
    side = pixels.shape[0] // blocks
    return pixels.reshape(blocks, side, blocks, side, 3).mean(axis=(1, 3)).flatten()


@pytest.fixture(scope="session")
def sketch() -> np.ndarray:
    return draw_sketch()


@pytest.fixture(scope="session")
def wb(tmp_path_factory):
    import sdrag

    bench = sdrag.Workbench.from_preset("tiny", library_dir=tmp_path_factory.mktemp("library"))
    report = bench.library.ingest(STYLES)
    assert report.added, report.table()
    return bench.load()


def noise_styles(folder: Path, n: int, seed: int, side: int = 24) -> Path:
    """`n` distinct small noise images in `folder`: cheap to embed, each a different content hash."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(folder / f"s{seed}_{i:03d}.png")
    return folder


def hostile_styles(folder: Path, payloads: list[str], plain: str) -> Path:
    """Two styles in `folder`: one whose name, caption and tag are `payloads[1]`, `[0]`, `[2]`, and one named
    `plain` (captioned "teal")."""
    import yaml
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), "orange").save(folder / "a.png")
    Image.new("RGB", (32, 32), "teal").save(folder / "b.png")
    (folder / "manifest.yaml").write_text(yaml.safe_dump([
        {"file": "a.png", "name": payloads[1], "caption": payloads[0], "tags": [payloads[2]]},
        {"file": "b.png", "name": plain, "caption": "teal"}]))
    return folder


def upload(widget, data: bytes, name: str = "sketch.png") -> None:
    """Put `data` into a FileUpload widget as a browser upload does."""
    import datetime

    widget.value = ({"name": name, "type": "image/png", "size": len(data), "content": memoryview(data),
                     "last_modified": datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)},)


def free_port() -> int:
    """A localhost TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fail_generation(wb, monkeypatch, error, seed=None, times=None) -> list[dict]:
    """Make `wb`'s generation raise `error()` for calls holding `seed` (every call if None), at most `times` times.

    Returns, per raised error, the memory savers that were on at the time."""
    original, raised = wb.generator.generate, []

    def generate(control, params, **kw):
        if (seed is None or seed in params.seeds) and (times is None or len(raised) < times):
            raised.append(wb.memory.to_dict())
            raise error()
        return original(control, params, **kw)

    monkeypatch.setattr(wb.generator, "generate", generate)
    return raised


@pytest.fixture(scope="session")
def clip():
    """The tiny preset's CLIP embedder, built as a Workbench builds it, without loading the generator."""
    from sdrag.models.device import pick_device, pick_dtype
    from sdrag.models.plan import plan
    from sdrag.models.presets import get_spec
    from sdrag.retrieval.embed import ClipEmbedder

    device = pick_device()
    dtype = pick_dtype(device)
    return ClipEmbedder(plan(get_spec("tiny"), dtype)["clip"], device, dtype)


@pytest.fixture
def lib(tmp_path, clip):
    """A fresh library on a copy of the starter styles, sharing the session's embedder: (library, folder)."""
    import shutil

    from sdrag.models.tiny import TINY_VERSION
    from sdrag.retrieval.library import StyleLibrary

    folder = tmp_path / "styles"
    shutil.copytree(STYLES, folder)
    return StyleLibrary(tmp_path / "db", lambda: clip, f"tiny-v{TINY_VERSION}"), folder
