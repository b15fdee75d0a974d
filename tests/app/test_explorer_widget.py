"""The notebook's run explorer: axes, selectors, details, failures, a sweep watched while it runs, bad folders."""

import json
import shutil
import time

import pytest
from conftest import fail_generation

from sdrag.app.explorer import NONE, RunExplorer, span_text
from sdrag.reports.explore import expected_cells

SPEC = {
    "name": "explore", "batch": 2,
    "base": {"prompt": "<script>x</script>", "steps": 1, "size": 64},
    # Canny pairs listed largest first: the explorer still shows [50, 150] first.
    "axes": {"canny": [[100, 200], [50, 150]], "ip_adapter_scale": [0.0, 0.8], "seed": [0, 1]},
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, wb):
    """8 cells; the two of one seed batch failed (their error holds markup)."""
    from sdrag.sweeps.engine import run_sweep

    out = tmp_path_factory.mktemp("explore") / "run"
    with pytest.MonkeyPatch.context() as mp:
        fail_generation(wb, mp, lambda: RuntimeError("boom <b>bold</b>"), seed=1, times=1)
        run_sweep(SPEC, out_dir=out, workbench=wb, progress=False, report=False)
    return out


def _labels(explorer) -> list[str]:
    return [c.value for c in explorer.grid.children if isinstance(getattr(c, "value", None), str)]


def _cell(explorer, **values):
    """The explorer data's cell whose parameters include `values`."""
    data = explorer.snapshot.data
    return next(c for c in data["cells"]
                if all(str({**data["common"][0], **c["p"]}[k]) == str(v) for k, v in values.items()))


def test_axis_dropdowns_and_selectors_choose_what_the_grid_shows(run_dir):
    ex = RunExplorer(run_dir)
    assert (ex.x.value, ex.y.value, ex.within.value) == ("canny", "ip_adapter_scale", "seed")
    assert len(ex.shown_ids()) == 8 and ex.selector_box.children == ()
    labels = _labels(ex)
    # Numbers sort as numbers: [50, 150] before [100, 200], though the spec lists them the other way round.
    assert labels.index(next(s for s in labels if "canny: [50, 150]" in s)) < \
        labels.index(next(s for s in labels if "canny: [100, 200]" in s))
    assert any("ip_adapter_scale: 0.8" in s for s in labels)

    ex.within.value = NONE  # seed is now held by a selector
    (seed,) = ex.selector_box.children
    assert seed.description == "seed" and list(seed.options) == ["0", "1"]
    first = ex.shown_ids()
    seed.value = "1"
    second = ex.shown_ids()
    assert len(first) == len(second) == 4 and not set(first) & set(second)

    ex.y.value = "seed"  # Y takes seed: ip_adapter_scale gets the selector, seed keeps no selector
    assert [s.description for s in ex.selector_box.children] == ["ip_adapter_scale"]
    assert any("seed: 1" in s for s in _labels(ex)) and not any("ip_adapter_scale:" in s for s in _labels(ex))
    ex.selector_box.children[0].value = "0.8"
    assert set(ex.shown_ids()) == {_cell(ex, canny=c, seed=s, ip_adapter_scale=0.8)["id"]
                                   for c in ("[50, 150]", "[100, 200]") for s in (0, 1)}
    ex.x.value = "seed"  # X takes Y's axis: the two swap rather than both showing seed
    assert (ex.x.value, ex.y.value) == ("seed", "canny")


def test_details_show_every_parameter_style_names_and_unused_escaped(run_dir, wb):
    ex = RunExplorer(run_dir)
    styled = _cell(ex, ip_adapter_scale=0.8, seed=0, canny="[50, 150]")
    ex.button(styled["id"]).click()
    text = ex.details.value
    name = ex.snapshot.data["styles"][styled["refs"][0][0]]["name"]
    assert name in {s.name for s in wb.library.list()} and f"{name} (score" in text
    assert "&lt;script&gt;x&lt;/script&gt;" in text and "<script>" not in text
    for needle in ("guidance", "scheduler", "seed", "edge_f1", "unipc", "<td>64</td>"):
        assert needle in text, needle
    assert "unused" not in text and len(ex.details_image.value) > 0
    assert "CLIP #1 (" in text  # why the style was retrieved (hybrid: its CLIP rank; the prompt's words match none)

    ex.button(_cell(ex, ip_adapter_scale=0.0, seed=0, canny="[50, 150]")["id"]).click()
    assert "<b>unused</b>" in ex.details.value


def test_a_failed_cell_is_a_red_tile_with_its_error(run_dir):
    ex = RunExplorer(run_dir)
    assert "(2 failed)" in ex.status.value and "8 of 8 cells done" in ex.status.value
    failed = next(c for c in ex.snapshot.data["cells"] if c["status"] == "failed")
    faces = [t.children[0].value for t in ex.grid.children if getattr(t, "children", None)]
    tiles = [f for f in faces if isinstance(f, str) and "failed</b>" in f]
    assert len(tiles) == 2 and "boom &lt;b&gt;bold&lt;/b&gt;" in tiles[0]
    ex.button(failed["id"]).click()
    assert "RuntimeError: boom &lt;b&gt;bold&lt;/b&gt;" in ex.details.value and "<b>bold" not in ex.details.value


def test_colour_by_metric_outlines_cells_with_a_legend(run_dir):
    ex = RunExplorer(run_dir)
    ex.colour.value = "edge_f1"
    lo, hi = ex.snapshot.metric_range("edge_f1")
    low, high = span_text(lo, hi)
    assert f"min {low}" in ex.legend.value and f"max {high}" in ex.legend.value
    borders = {t.layout.border for t in ex.grid.children if getattr(t, "children", None)}
    assert len(borders) > 1 and all(b.startswith("3px solid #") for b in borders)
    ex.colour.value = NONE
    assert ex.legend.value == ""


def test_span_text_and_expected_cells():
    assert span_text(0.123412, 0.123418) == ("0.12341", "0.12342")
    assert span_text(1.0, 2.0) == ("1.00", "2.00")
    assert expected_cells(SPEC) == 8
    assert expected_cells({"axes": {"seed": [0, 1]}, "zip": {"a": [1, 2, 3], "b": [4, 5, 6]}}) == 6


def test_watching_redraws_while_a_sweep_adds_cells_and_keeps_choices(run_dir, tmp_path, wb):
    from sdrag.sweeps.engine import run_sweep

    folder = tmp_path / "run"
    shutil.copytree(run_dir, folder)
    gone = next(p for p in (folder / "rows").glob("*.json") if not p.name.endswith(".failed.json"))
    gone.unlink()
    ex = RunExplorer(folder, watch=0.05)
    try:
        assert "7 of 8 cells done" in ex.status.value
        assert any("pending" in t for t in _labels(ex))
        ex.x.value, ex.colour.value = "seed", "edge_f1"
        run_sweep(SPEC, out_dir=folder, workbench=wb, progress=False, report=False)
        deadline = time.monotonic() + 15
        while "8 of 8 cells done" not in ex.status.value and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "8 of 8 cells done" in ex.status.value and "failed" not in ex.status.value  # the failure redone
        assert (ex.x.value, ex.colour.value) == ("seed", "edge_f1")
        assert not any("pending" in t for t in _labels(ex)) and len(ex.shown_ids()) == 8
    finally:
        ex.close()
    assert not ex._thread.is_alive()


def test_an_unreadable_folder_shows_one_message(tmp_path):
    ex = RunExplorer(tmp_path / "nowhere")
    assert "SweepError" in ex.message.value and "Traceback" not in ex.message.value
    assert ex.grid.children == () and ex.shown_ids() == []
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text("{not json")
    ex = RunExplorer(tmp_path / "broken", watch=0.05)
    ex.close()
    assert "manifest.json" in ex.message.value and "Fix" in ex.message.value


def _big_run(source, folder, n_x=10, n_y=10):
    """A run folder of n_x * n_y * 2 cells made from one of `source`'s rows (every cell the same image)."""
    shutil.copytree(source, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    xs, ys = [round(0.1 * i, 1) for i in range(n_x)], [1.0 + i for i in range(n_y)]
    manifest["spec"]["axes"] = {"controlnet_scale": xs, "guidance": ys, "seed": [0, 1]}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    template_path = next(p for p in (folder / "rows").glob("*.json") if not p.name.endswith(".failed.json"))
    template = json.loads(template_path.read_text())
    png = (folder / template["image"]).read_bytes()
    for p in [*(folder / "rows").iterdir(), *(folder / "cells").iterdir()]:
        p.unlink()
    n = 0
    for x in xs:
        for y in ys:
            for seed in (0, 1):
                cid = f"{n:016x}"
                (folder / "cells" / f"{cid}.png").write_bytes(png)
                row = {**template, "cell": n, "cell_id": cid, "image": f"cells/{cid}.png", "controlnet_scale": x,
                       "guidance": y, "seed": seed}
                (folder / "rows" / f"{cid}.json").write_text(json.dumps(row))
                n += 1
    (folder / "results.csv").unlink(missing_ok=True)
    return folder


def test_a_200_cell_run_builds_in_under_two_seconds(run_dir, tmp_path):
    folder = _big_run(run_dir, tmp_path / "big")
    RunExplorer(folder)  # the first opening makes the thumbnails (a finished sweep's report has made them)
    t0 = time.perf_counter()
    ex = RunExplorer(folder)
    built = time.perf_counter() - t0
    assert "200 of 200 cells done" in ex.status.value and len(ex.shown_ids()) == 200
    assert built < 2.0, built
    # Numbers sort as numbers on the grid: guidance 2.0 before 10.0.
    labels = _labels(ex)
    assert labels.index(next(s for s in labels if "guidance: 2.0" in s)) < \
        labels.index(next(s for s in labels if "guidance: 10.0" in s))
