import html
import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from conftest import fail_generation, hostile_styles

import sdrag
from sdrag.reports import explore, grids
from sdrag.reports.compare import compare_runs, identical
from sdrag.reports.grids import grid_layout, grid_pages
from sdrag.reports.html import write_standalone
from sdrag.runs.folder import load_run
from sdrag.runs.spec import SweepError
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


def test_labels_read_name_value_and_seeds_sit_side_by_side(wb, tmp_path):
    run = quick(wb, tmp_path, "r", {"axes": {"controlnet_scale": [0.5, 1.0], "canny_high": [150, 200],
                                             "guidance": [3, 7.5], "seed": [0, 1]}})
    pages = grid_layout(run)
    assert [p.title for p in pages] == ["guidance: 3.0", "guidance: 7.5"]  # a column holding 7.5 holds 3.0
    # Decimals as the spec wrote them (1.0 is not "1"), and each value's seeds next to each other.
    assert pages[0].columns == [f"controlnet_scale: {c} · seed: {s}" for c in ("0.5", "1.0") for s in (0, 1)]
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
    run = quick(wb, tmp_path, "r", {"axes": {"guidance": [3.0, 5.0], "seed": [0, 1]}, "batch": 1})
    (page, img), = grid_pages(run)
    assert page.rows == ["seed: 0", "seed: 1"]
    assert all(run.table.iloc[page.cells[(c, 1)]]["status"] == "failed" for c in (0, 1))
    size = grids.CELL_PX[0]  # 64 px images are drawn at the smallest cell size
    for column in (0, 1):
        x = grids.LABEL_W + column * (size + grids.GAP) + int(0.8 * size)
        y = grids.TOP_PX + size + grids.GAP + int(0.4 * size)
        patch = np.asarray(img.crop((x, y, x + 10, y + 10))).reshape(-1, 3)  # clear of the tile's cross and text
        assert (patch == [120, 20, 20]).all()
    ok = np.asarray(img.crop((grids.LABEL_W + 40, grids.TOP_PX + 20, grids.LABEL_W + 50, grids.TOP_PX + 30)))
    assert not (ok.reshape(-1, 3) == [120, 20, 20]).all()


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.attrs, self.text = set(), [], []

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.attrs += attrs

    def handle_data(self, data):
        self.text.append(data)


def page_data(path) -> dict:
    """The explorer data a page carries (what its script reads)."""
    text = path.read_text()
    start = text.index("<script type='application/json' id='sdrag-data'>") + len(
        "<script type='application/json' id='sdrag-data'>")
    return json.loads(text[start:text.index("</script>", start)])


def test_report_escapes_every_user_string_and_its_data_cannot_end_the_script(tmp_path):
    styles = hostile_styles(tmp_path / "styles", XSS, "plain")
    bench = sdrag.Workbench.from_preset("tiny", library_dir=tmp_path / "lib")
    spec = {"name": XSS[1], "styles": str(styles), "base": dict(BASE, prompt=XSS[0], negative_prompt=XSS[2]),
            "axes": {"style": [XSS[1], "plain"], "prompt": [XSS[0], XSS[2]]}}
    run = run_sweep(spec, out_dir=tmp_path / "run", workbench=bench, progress=False)
    page = run.report_path.read_text()
    parsed = _Tags()
    parsed.feed(page)
    assert not [name for name, _ in parsed.attrs if name.startswith("on")]
    assert not [v for k, v in parsed.attrs if k in ("src", "href") and not v.startswith("grid_")]
    # The markup holds the payloads only escaped; the JSON for the script holds no '<' at all.
    for payload in XSS:
        assert payload not in page and html.escape(payload) in page or payload[:8] not in page
    assert page.count("<script") == 2 and page.count("</script>") == 2
    data = page_data(run.report_path)
    assert {s["name"] for s in data["styles"].values()} == {XSS[1], "plain"}  # names, not ids
    assert data["styles"][run.table["references"].map(lambda r: json.loads(r)[0][0]).iloc[0]]["caption"] in \
        (XSS[0], "teal")
    assert sorted(c["id"] for c in data["cells"]) == sorted(run.table["cell_id"])
    assert all(c["thumb"].startswith("thumbs/") and (run.out_dir / c["thumb"]).is_file() for c in data["cells"])


def test_standalone_page_holds_every_image_and_refuses_big_runs(wb, tmp_path, monkeypatch):
    run = quick(wb, tmp_path, "r", {"axes": {"guidance": [3.0, 5.0]}})
    out = write_standalone(run.out_dir, tmp_path / "share" / "one.html")
    data = page_data(out)
    images = [c[k] for c in data["cells"] for k in ("thumb", "image")] + [s["thumb"] for s in data["styles"].values()]
    assert len(images) == 5 and all(i.startswith("data:image/") for i in images)
    monkeypatch.setattr(explore, "MAX_STANDALONE_CELLS", 1)
    with pytest.raises(SweepError, match="at most 1 cells"):
        write_standalone(run.out_dir, tmp_path / "share" / "two.html")
    assert not (tmp_path / "share" / "two.html").exists()


def test_comparison_lines_runs_up_on_shared_axes_with_differences(wb, tmp_path):
    axes = {"controlnet_scale": [0.5, 1.0], "guidance": [3.0, 7.5]}
    a = quick(wb, tmp_path, "a", {"axes": {**axes, "seed": [0, 1]}})
    b = quick(wb, tmp_path, "b", {"axes": {**axes, "seed": [0, 1, 2]}, "base": dict(BASE, steps=2)})
    table = compare_runs([a.out_dir, b.out_dir], tmp_path / "cmp.html")
    assert len(table) == 4 and table["edge_f1 delta[1-0]"].isna().all()  # metrics were off
    assert not identical(table)  # nothing to compare is not "identical"
    data = page_data(tmp_path / "cmp.html")
    names = [x["name"] for x in data["axes"]]
    assert names == ["controlnet_scale", "guidance", "seed", "run"] and len(data["cells"]) == 8 + 12
    seed = data["axes"][2]["values"]
    assert seed == ["0", "1", "2"]
    later = [c for c in data["cells"] if c["run"] == 1]
    assert all(("base" in c) == (seed[c["v"][2]] != "2") for c in later)  # only run b has seed 2
    for c in later:
        if "base" in c:
            base = data["cells"][c["base"]]
            assert base["run"] == 0 and base["v"][:3] == c["v"][:3] and c["diff"].startswith("data:image/jpeg")
    # Links from the page's folder into each run's thumbnails.
    assert all((tmp_path / c["thumb"]).is_file() for c in data["cells"])


def test_comparison_sorts_numbers_as_numbers_and_says_identical(wb, tmp_path):
    spec = {"axes": {"canny": [[100, 200], [50, 150]]}, "metrics": True}
    a = quick(wb, tmp_path, "a", spec)
    b = quick(wb, tmp_path, "b", spec)
    table = compare_runs([a.out_dir, b.out_dir])
    assert table["canny"].tolist() == ["[50, 150]", "[100, 200]"]
    assert identical(table)


def test_heatmaps_take_any_two_axes_and_label_as_finely_as_the_scale(wb, tmp_path):
    from sdrag.reports.plots import _decimals, heatmaps

    run = quick(wb, tmp_path, "r", {"axes": {"controlnet_scale": [0.5, 1.0], "ip_adapter_scale": [0.0, 0.8],
                                             "guidance": [3.0, 7.5]}, "metrics": True})
    (metric, fig), *_ = heatmaps(run, x="ip_adapter_scale", y="guidance")
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("ip_adapter_scale", "guidance")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.0", "0.8"]  # the style knob is not averaged away
    assert _decimals(np.array([0.751, 0.753])) == 4 and _decimals(np.array([0.1, 0.9])) == 2
    texts = sorted((t.get_text() for t in ax.texts), key=float)
    assert len(texts) == 4 and texts[0] != texts[-1]  # the scale's ends read differently
    assert len({len(t.split(".")[1]) for t in texts}) == 1
    with pytest.raises(SweepError, match="not a dimension"):
        heatmaps(run, x="seed")


def test_thumbnails_are_named_by_content_and_never_written_through_a_link(wb, tmp_path):
    from sdrag.runs.thumbs import cell_thumbnail

    run = quick(wb, tmp_path, "r", {"axes": {"guidance": [3.0, 5.0]}})
    row = run.table.iloc[0].to_dict()
    first = cell_thumbnail(run.folder, row)
    assert first.startswith("thumbs/") and row["image_sha256"][:24] in first
    # The cell is made again with another picture: its thumbnail is a new file, the old one is never shown.
    remade = {**row, "image_sha256": "f" * 64}
    assert cell_thumbnail(run.folder, remade) != first
    outside = tmp_path / "outside"
    outside.mkdir()
    thumbs = run.out_dir / "thumbs"
    for p in thumbs.iterdir():
        p.unlink()
    thumbs.rmdir()
    thumbs.symlink_to(outside)
    with pytest.raises(SweepError, match="link or a file"):
        cell_thumbnail(run.folder, row)
    assert list(outside.iterdir()) == []


def test_the_page_says_why_each_retrieved_style_ranked(wb, tmp_path):
    run = quick(wb, tmp_path, "r", {"axes": {"retrieval": ["hybrid", "dense"]}})
    run.report_path = None
    from sdrag.reports.html import write_report

    data = page_data(write_report(run))
    hybrid, dense = sorted(data["cells"], key=lambda c: c["p"]["retrieval"], reverse=True)
    assert hybrid["p"]["retrieval"] == "hybrid" and "words #1" in hybrid["why"][0] and "neon" in hybrid["why"][0]
    assert dense["why"][0].startswith("CLIP #1") and "words" not in dense["why"][0]
    row = json.loads((run.out_dir / "rows" / f"{hybrid['id']}.json").read_text())
    assert json.loads(row["retrieved"])[0][2]["lexical"]["terms"] == ["neon"]


def test_the_summary_says_which_engine_and_workers_made_the_cells_and_escapes_an_edited_manifest(wb, tmp_path):
    from sdrag.reports.html import write_report

    run = quick(wb, tmp_path, "r", {"axes": {"seed": [0, 1]}})
    page = write_report(run).read_text()
    assert re.search(r"local engine, 1 worker\(s\) \(local: 2 cells at [0-9.]+/s\)", page)
    # A manifest edited by hand: a hostile worker name, a lost batch, a row that is no row, a cluster of 10.
    manifest = json.loads((run.out_dir / "manifest.json").read_text())
    workers = [{"worker": XSS[0], "cells": 2, "busy_s": 4, "lost": 1}, "junk",
               *({"worker": n, "cells": 0, "busy_s": 0} for n in range(9))]
    manifest["engine"] = {"name": "ray", "workers": workers}
    (run.out_dir / "manifest.json").write_text(json.dumps(manifest))
    page = write_report(load_run(run.out_dir)).read_text()
    summary = page[page.index("<p class='summary'>"):]
    summary = summary[:summary.index("</p>")]
    assert XSS[0] not in page.split("<script")[0] and html.escape(XSS[0]) in summary
    assert "ray engine, 10 worker(s) (" in summary and "2 cells at 0.50/s, 1 batch(es) lost" in summary
    assert "0: 0 cells; " in summary and "; 2 more) ·" in summary
