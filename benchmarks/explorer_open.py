"""How fast the report's explorer opens a 10,000-cell run in Chromium (headless, from disk).

A synthetic run folder is written the way the sweep engine writes one (rows, cells, styles, manifest), with a
distinct picture per cell, then its explorer page; Chromium opens it and the time to a drawn, usable grid is
taken (median of --repeat). Then a few interactions are timed: switching X and Y, opening a cell, moving with
an arrow key. Prints one line per figure and the page-open median last.

    python benchmarks/explorer_open.py [--cells 10000] [--repeat 5] [--distinct N]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import itertools
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from sdrag.generation.params import Params
from sdrag.runs.folder import load_run
from sdrag.runs.schema import ROW_COLUMNS

FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
AXES = {"canny": [[50, 150], [100, 200], [150, 250], [200, 300]], "controlnet_scale": [0.25, 0.5, 0.75, 1.0, 1.25],
        "ip_adapter_scale": [0.0, 0.25, 0.5, 0.75, 1.0], "style": [f"style {n}" for n in range(5)],
        "guidance": [5.0, 7.5], "seed": list(range(10))}


def _png(seed: int, side: int = 64) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _write_styles(path: Path) -> list[str]:
    ids = []
    for n, name in enumerate(AXES["style"]):
        data = _png(10_000 + n)
        sid = hashlib.sha256(data).hexdigest()[:16]
        (path / "styles" / f"{sid}.png").write_bytes(data)
        (path / "styles" / f"{sid}.json").write_text(json.dumps({"id": sid, "name": name, "caption": f"caption {n}",
                                                                 "tags": []}))
        ids.append(sid)
    return ids


def _manifest(name: str, styles: list[str]) -> dict:
    sha = "0" * 64
    spec = {"name": name, "preset": "tiny", "sketch": None, "styles": None, "library": None,
            "base": {"prompt": "a synthetic sweep", "steps": 8, "size": 64}, "axes": AXES, "zip": {}, "cells": [],
            "batch": 10, "metrics": True, "edge_tolerance": 2}
    return {"name": name, "preset": "tiny", "spec": spec, "sketch_sha256": sha, "versions": {}, "device":
            {"device": "cpu", "dtype": "float32", "cuda": None}, "models": {}, "weights": {},
            "library": {"path": "", "embedder": "", "styles": [{"id": s, "sha256": sha} for s in styles]},
            "history": [], "rows_set_aside": []}


def make_run(path: Path, cells: int = 10_000, distinct: int | None = None) -> Path:
    """Write a synthetic run folder of `cells` cells (the first `cells` of AXES' grid); `distinct` pictures
    cycle (every cell its own by default). Files are written directly: this is test data, not a sweep."""
    for sub in ("rows", "cells", "styles"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    styles = _write_styles(path)
    (path / "manifest.json").write_text(json.dumps(_manifest(path.name, styles)))
    names = list(AXES)
    pictures = [_png(n) for n in range(distinct)] if distinct else None
    rng = np.random.default_rng(0)
    for n, combo in enumerate(itertools.islice(itertools.product(*AXES.values()), cells)):
        values = dict(zip(names, combo))
        name = values.pop("style")
        style = styles[AXES["style"].index(name)]
        # The row shows the style as the spec names it; the resolved parameters hold its id.
        params = {**Params(prompt="a synthetic sweep", steps=8, size=64, **values).to_dict(), "style": style}
        cid = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
        data = pictures[n % distinct] if pictures else _png(n)
        (path / "cells" / f"{cid}.png").write_bytes(data)
        row = dict.fromkeys(ROW_COLUMNS)
        row.update({k: json.dumps(v) if isinstance(v, list) else v for k, v in params.items()}, style=name,
                   cell=n, cell_id=cid,
                   status="ok", error="", references=json.dumps([[style, 1.0]]),
                   retrieved=json.dumps([[style, 0.5]]), edge_f1=float(rng.random()),
                   style_similarity=float(rng.random()), prompt_alignment=float(rng.random()), seconds=0.5,
                   peak_mem_mb=600.0, memory=json.dumps({"oom_fallback": []}), batch=n // 10,
                   batch_seeds=json.dumps([values["seed"]]), image=f"cells/{cid}.png",
                   image_sha256=hashlib.sha256(data).hexdigest(), edges_sha256="1" * 64,
                   resolved=json.dumps(params))
        (path / "rows" / f"{cid}.json").write_text(json.dumps(row))
    return path


def open_page(page, url: str) -> float:
    """Seconds from navigation to the explorer's grid drawn and ready."""
    t0 = time.perf_counter()
    page.goto(url)
    page.wait_for_selector("body[data-ready='1'] #grid .cell")
    return time.perf_counter() - t0


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    """Build the run, write its page, open it in Chromium; print the figures."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cells", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--distinct", type=int, default=None, help="distinct pictures (default: one per cell)")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    from sdrag.reports.explorer import write_explorer

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run_dir = make_run(Path(tmp) / "synthetic", args.cells, args.distinct)
        print(f"synthetic run of {args.cells} cells written in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        run = load_run(run_dir)
        print(f"run folder opened (rows and image hashes checked) in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        page_path = write_explorer([run], run_dir / "report.html", title="synthetic")
        print(f"explorer page written (thumbnails made) in {time.perf_counter() - t0:.1f} s;"
              f" {page_path.stat().st_size / 2**20:.1f} MB")
        t0 = time.perf_counter()
        write_explorer([run], run_dir / "report2.html", title="synthetic")
        print(f"written again (thumbnails already there) in {time.perf_counter() - t0:.1f} s")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=shutil.which("chromium"), args=FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            opens = [open_page(page, page_path.as_uri()) for _ in range(args.repeat)]
            shown = page.locator("#grid .cell").count()
            swap = _timed(lambda: (page.select_option("#x-axis", "1"), page.select_option("#y-axis", "0")))
            enlarge = _timed(lambda: (page.click("#grid .cell[data-cell]"), page.wait_for_selector("dialog[open]")))
            arrow = _timed(lambda: page.keyboard.press("ArrowRight"))
            browser.close()
    print(f"cells drawn in the default view: {shown}")
    print(f"switch X and Y: {swap * 1000:.0f} ms; open a cell: {enlarge * 1000:.0f} ms;"
          f" arrow key: {arrow * 1000:.0f} ms")
    print(f"page open to a drawn grid, {args.cells} cells: median {statistics.median(opens):.2f} s"
          f" (min {min(opens):.2f}, max {max(opens):.2f}, n={len(opens)})")


if __name__ == "__main__":
    main()
