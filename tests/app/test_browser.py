"""A real browser: JupyterLab running 03_rag_studio in headless Chromium, and a sweep report opened from disk."""

import io
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO, STYLES, free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and os.environ.get("CI"):
    raise RuntimeError("CI must install Debian's chromium for the browser test (see .ci/run).")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed (apt-get install chromium)")

# As the probe found: without the background-networking flags Chromium keeps dialling out on a closed network.
CELLS = len(json.loads((REPO / "notebooks" / "03_rag_studio.ipynb").read_text())["cells"])
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


@pytest.fixture
def lab(tmp_path):
    """JupyterLab serving a throwaway copy of the project (so nothing is saved into the checkout)."""
    project = tmp_path / "project"
    (project / "notebooks").mkdir(parents=True)
    (project / "experiments").mkdir()
    shutil.copytree(STYLES, project / "styles")
    shutil.copy(REPO / "notebooks" / "03_rag_studio.ipynb", project / "notebooks")
    port, token = free_port(), "sdrag-test-token"
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={project}",
           "--ServerApp.disable_check_xsrf=True", "--allow-root"]
    log = (tmp_path / "lab.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=project)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.3)
    else:
        proc.kill()
        raise RuntimeError("JupyterLab did not start:\n" + (tmp_path / "lab.log").read_text()[-3000:])
    yield base, token
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def save_small_png(png: bytes, path: Path, limit: int = 300_000) -> Path:
    """Save a screenshot as an optimised PNG; in a 256-colour palette if it is still over `limit` bytes."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, optimize=True)
    if path.stat().st_size > limit:
        image.quantize(256).save(path, optimize=True)
    return path


def test_rag_studio_renders_and_generates_in_jupyterlab(lab, tmp_path):
    from playwright.sync_api import sync_playwright

    base, token = lab
    shot = tmp_path / "rag_studio.png"
    shots = os.environ.get("SDRAG_SCREENSHOTS")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1200, "height": 1800})
        page.goto(f"{base}/lab/tree/notebooks/03_rag_studio.ipynb?token={token}")
        try:
            # "Run All Cells" clicked while the notebook is still rendering or the kernel still starting runs
            # nothing: wait for every cell and for the status bar's "<kernel> | Idle" first.
            page.wait_for_function(f"document.querySelectorAll('.jp-Notebook .jp-Cell').length >= {CELLS}",
                                   timeout=60_000)
            page.wait_for_selector("#jp-main-statusbar >> text=/\\| Idle/", timeout=90_000)
            page.click("li.lm-MenuBar-item:has-text('Run')")
            page.click("li.lm-Menu-item:has-text('Run All Cells')")
            page.wait_for_selector("text=retrieved:", timeout=120_000)
            page.wait_for_selector("text=done in")
            page.wait_for_selector("button:has-text('Generate')")
            studio = page.locator(".sdrag-studio").first
            sliders = studio.locator(".widget-slider").count()
            images = studio.locator("img[src^='blob:'], img[src^='data:']").count()
            done = page.locator("text=done in").count()
            banner = studio.locator("text=tiny preset: random weights").count()
            # The result on show is the current one: nothing stays greyed once the run is done.
            page.wait_for_selector(".sdrag-studio .sdrag-stale, .sdrag-studio .sdrag-outdated", state="detached",
                                   timeout=30_000)
            if shots:
                page.add_style_tag(content=".Toastify { display: none !important; }")  # Lab's news prompt
                studio.scroll_into_view_if_needed()
                small = save_small_png(studio.screenshot(), Path(shots) / "studio.png")
        finally:
            page.screenshot(path=str(shot), full_page=True)  # kept in the test's folder, also on failure
            browser.close()
    assert sliders >= 8, sliders
    assert images >= 4, images  # sketch, edges, style and result (and the candidates' thumbnails)
    assert done >= 1 and banner == 1
    assert shot.stat().st_size > 10_000
    if shots:
        assert 10_000 < small.stat().st_size < 300_000, small.stat().st_size
