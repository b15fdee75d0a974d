from html.parser import HTMLParser

import numpy as np
import pytest
import yaml
from conftest import fail_generation
from PIL import Image

import sdrag
from sdrag.reports import grids
from sdrag.reports.compare import compare_runs
from sdrag.reports.grids import grid_layout, grid_pages
from sdrag.runs.folder import load_run
from sdrag.sweeps.engine import run_sweep

BASE = {"prompt": "a neon city", "steps": 1, "size": 64}
XSS = ["<script>alert(1)</script>", "<img src=x onerror=alert(2)>", "\"><svg onload=alert(3)>"]


def quick(wb, tmp_path, name, spec, **kw):
    return run_sweep({"name": name, "base": dict(BASE), "metrics": False, **spec}, out_dir=tmp_path / name,
                     workbench=wb, progress=False, report=False, **kw)


def places(run, **kw):
    return [idx for page in grid_layout(run, **kw) for idx in page.cells.values()]


@pytest.mark.parametrize("spec", [
    {"cells": [{"guidance": 3.0}, {"guidance": 5.0}, {"controlnet_scale": 0.2}]},
    {"axes": {"guidance": [3.0, 5.0]}, "zip": {"steps": [1, 2], "seed": [0, 1]}},
    {"axes": {"canny_low": [20, 60], "canny_high": [150, 200], "seed": [0, 1]}, "cells": [{}, {"top_k": 2}]},
    {},
], ids=["cells", "zip", "canny-sides-and-cells", "single"])
def test_every_cell_has_exactly_one_place_in_the_grids(wb, tmp_path, spec):
    run = quick(wb, tmp_path, "r", spec)
    assert sorted(places(run)) == list(range(len(run.table)))
    for page in grid_layout(run):
        assert len(page.cells) == len(set(page.cells))


def test_labels_read_name_value_and_pages_follow_the_further_axes(wb, tmp_path):
    run = quick(wb, tmp_path, "r", {"axes": {"controlnet_scale": [0.5, 1.0], "canny_high": [150, 200],
                                             "guidance": [3, 7.5], "seed": [0, 1]}})
    pages = grid_layout(run)
    assert [p.title for p in pages] == [f"guidance: {g}, seed: {s}" for g in ("3", "7.5") for s in (0, 1)]
    assert pages[0].columns == ["controlnet_scale: 0.5", "controlnet_scale: 1"]
    assert pages[0].rows == ["canny_high: 150", "canny_high: 200"]
    reloaded = load_run(run.out_dir)  # the same labels from results.csv as from the live table
    assert [(p.title, p.columns, p.rows) for p in grid_layout(reloaded)] == \
        [(p.title, p.columns, p.rows) for p in pages]


def test_grid_guard_spills_a_long_axis_onto_further_pages(wb, tmp_path, monkeypatch):
    run = quick(wb, tmp_path, "r", {"axes": {"seed": list(range(9))}, "batch": 9})
    monkeypatch.setattr(grids, "MAX_GRID_PX", 400)
    pages = grid_pages(run)
    assert len(pages) == 3 and "[columns 1-4 of 9]" in pages[0][0].title and "[columns 9-9 of 9]" in pages[2][0].key
    assert all(max(img.size) <= 400 for _, img in pages)
    assert sorted(places(run)) == list(range(9))


def test_failed_cells_are_drawn_as_failed(wb, tmp_path, monkeypatch):
    fail_generation(wb, monkeypatch, lambda: RuntimeError("simulated"), seed=1)
    run = quick(wb, tmp_path, "r", {"axes": {"guidance": [3.0, 5.0], "steps": [1, 2], "seed": [0, 1]}, "batch": 1})
    page, img = grid_pages(run)[1]
    assert page.title == "seed: 1" and all(run.table.iloc[i]["status"] == "failed" for i in page.cells.values())
    size = grids.CELL_PX[0]  # 64 px images are drawn at the smallest cell size
    x, y = grids.LABEL_W + int(0.8 * size), grids.TOP_PX + int(0.4 * size)
    patch = np.asarray(img.crop((x, y, x + 10, y + 10))).reshape(-1, 3)  # clear of the tile's cross and text
    assert (patch == [120, 20, 20]).all()


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.attrs, self.text = set(), [], []

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.attrs += attrs

    def handle_data(self, data):
        self.text.append(data)


def test_report_is_self_contained_and_escapes_every_user_string(tmp_path):
    styles = tmp_path / "styles"
    styles.mkdir()
    Image.new("RGB", (32, 32), "orange").save(styles / "a.png")
    Image.new("RGB", (32, 32), "teal").save(styles / "b.png")
    (styles / "manifest.yaml").write_text(yaml.safe_dump([
        {"file": "a.png", "name": XSS[1], "caption": XSS[0], "tags": [XSS[2]]},
        {"file": "b.png", "name": "plain", "caption": "teal"}]))
    bench = sdrag.Workbench.from_preset("tiny", library_dir=tmp_path / "lib")
    spec = {"name": XSS[1], "styles": str(styles), "base": dict(BASE, prompt=XSS[0], negative_prompt=XSS[2]),
            "axes": {"style": [XSS[1], "plain"], "prompt": [XSS[0], XSS[2]]}}
    run = run_sweep(spec, out_dir=tmp_path / "run", workbench=bench, progress=False)
    page = run.report_path.read_text()
    parsed = _Tags()
    parsed.feed(page)
    assert parsed.tags <= {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "img", "table",
                           "thead", "tbody", "tr", "th", "td", "pre", "ul", "li"}
    assert not [name for name, _ in parsed.attrs if name.startswith("on")]
    # Self-contained: every image is inline, nothing is fetched from anywhere.
    assert all(v.startswith("data:image/png;base64,") for k, v in parsed.attrs if k == "src")
    assert not [v for k, v in parsed.attrs if k == "href"]
    text = "".join(parsed.text)
    for payload in XSS:
        assert payload in text  # shown as text, escaped in the markup
    assert all(cid in page for cid in run.table["cell_id"])


def test_comparison_puts_the_same_page_of_each_run_side_by_side(wb, tmp_path):
    axes = {"controlnet_scale": [0.5, 1.0], "guidance": [3.0, 7.5]}
    a = quick(wb, tmp_path, "a", {"axes": {**axes, "seed": [0, 1]}})
    b = quick(wb, tmp_path, "b", {"axes": {**axes, "seed": [0, 1, 2]}})
    table = compare_runs([a.out_dir, b.out_dir], tmp_path / "cmp.html")
    assert len(table) == 4 and table["edge_f1 delta[1-0]"].isna().all()  # metrics were off
    parsed = _Tags()
    parsed.feed((tmp_path / "cmp.html").read_text())
    text = "".join(parsed.text)
    assert text.count("seed: 2") == 1 and "not in this run" in text  # only run b has seed 2
    assert sum(k == "src" for k, _ in parsed.attrs) == 2 + 3
