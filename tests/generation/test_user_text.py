"""User text that is code elsewhere: prompts, style names and axis values with mathtext or TeX in them are drawn
by matplotlib as the characters the user wrote, whatever text.usetex says.

The hostile strings are built here from mathtext fragments; each place that hands text to matplotlib
(Result.panel, Result.save, the sweep heatmaps and Pareto plot, canny.threshold_grid) is tried with them, with
text.usetex off and on (no LaTeX is needed either way).
"""

import dataclasses
import io
import itertools
import json
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from PIL import Image

import sdrag
from sdrag.generation.canny import threshold_grid
from sdrag.reports.plots import heatmaps, pareto
from sdrag.runs.folder import SweepRun
from sdrag.runs.metrics import METRICS

# Mathtext that raises when parsed, each put between dollars after some literal text ...
BAD_MATH = [r"\frac{", "x^", "a_", "}{", r"\notacommand", "^^", r"\sqrt[", "{", r"\mathdefault{"]
PREFIXES = ["", "neon ", r"\$5 ", "50% & #1 ~ "]
MATH_CASES = [f"{pre}${body}$" for body, pre in itertools.product(BAD_MATH, PREFIXES)][::5]
# ... and text with no even run of dollars, which mathtext leaves as text but would still change ("\$" -> "$"),
# and which LaTeX (text.usetex) cannot take as it is.
LITERAL_CASES = [r"save \$5", "one $ sign", "C:\\sketch\\frac", "50% & #1 ~ _^{}", r"$\alpha$ $"]
HOSTILE = MATH_CASES + LITERAL_CASES + [" ".join(MATH_CASES + LITERAL_CASES)]
SHORT = [s for s in HOSTILE if len(s) <= 30]
USETEX = pytest.mark.parametrize("usetex", [False, True], ids=["mathtext", "usetex"])


def breaks_plain_matplotlib(text: str) -> bool:
    fig = plt.figure()
    fig.text(0, 0, text)
    try:
        fig.canvas.draw()
    except ValueError:
        return True
    finally:
        plt.close(fig)
    return False


def assert_plain(text_obj, expected: str) -> None:
    assert text_obj.get_text() == expected
    assert text_obj.get_parse_math() is False and text_obj.get_usetex() is False


def drawn(fig, usetex: bool) -> None:
    """Draw `fig` as a notebook whose user set text.usetex would (no LaTeX is installed: usetex text would raise)."""
    with matplotlib.rc_context({"text.usetex": usetex}):
        fig.canvas.draw()
        fig.savefig(io.BytesIO(), format="png")
        assert matplotlib.rcParams["text.usetex"] is usetex  # the user's setting is left as it was
    plt.close(fig)


def test_the_cases_are_hostile():
    assert len(MATH_CASES) >= 5 and len(HOSTILE) >= 10 and len(SHORT) >= 8
    # Each mathtext case crashes a default matplotlib Text when drawn.
    assert all(breaks_plain_matplotlib(s) for s in MATH_CASES)


# -- Result.panel and Result.save ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_result(wb, sketch):
    """One real run with a hostile prompt: the pipeline records it as written."""
    res = wb.run(sketch, HOSTILE[0], size=64, steps=2)
    assert res.params["prompt"] == HOSTILE[0] and res.style is not None
    return res


def hostile_result(base_result, prompt: str, style_name: str):
    """The real Result with `prompt` and its style renamed `style_name` (a library may hold any name)."""
    style = dataclasses.replace(base_result.style, name=style_name, score=0.5)
    return dataclasses.replace(base_result, params={**base_result.params, "prompt": prompt},
                               references=[(style, 1.0), (base_result.style, 1.0)])


@USETEX
@pytest.mark.parametrize("prompt", HOSTILE)
def test_panel_draws_prompt_and_style_name_as_written(base_result, prompt, usetex):
    style_name = HOSTILE[-1 - HOSTILE.index(prompt)]
    res = hostile_result(base_result, prompt, style_name)
    with matplotlib.rc_context({"text.usetex": usetex}):
        fig = res.panel()
    assert_plain(fig._suptitle, prompt[:120])
    titles = [ax.title for ax in fig.axes]
    assert [t.get_text() for t in titles] == [
        "sketch", f"edges {tuple(res.params['canny'])}", f"style: {style_name} (0.500) +1 blended",
        f"result (seed {res.seed})"]
    for title in titles:
        assert_plain(title, title.get_text())
    drawn(fig, usetex)


@USETEX
@pytest.mark.parametrize("prompt", HOSTILE[:6])
def test_save_writes_the_panel_and_record_of_hostile_text(base_result, prompt, usetex, tmp_path):
    res = hostile_result(base_result, prompt, prompt)
    with matplotlib.rc_context({"text.usetex": usetex}):
        paths = res.save(tmp_path)
    assert Image.open(paths["panel"]).width > 400
    record = json.loads(paths["record"].read_text())
    assert record["params"]["prompt"] == prompt and record["references"][0]["name"] == prompt


# -- the sweep report's heatmaps and Pareto plot ---------------------------------------------------------------


def hostile_run(x_values: list[str], y_values: list[str] | None, x_name="prompt", y_name="style") -> SweepRun:
    """A finished sweep over user strings, built by hand: the table and manifest the plots read."""
    rng = np.random.default_rng(0)
    combos = [(x, y) for x in x_values for y in (y_values or [None])]
    rows = [{"status": "ok", x_name: x, **({y_name: y} if y_values else {}),
             **{m: float(rng.uniform(0, 1)) for m in METRICS}} for x, y in combos]
    axes = {x_name: x_values, **({y_name: y_values} if y_values else {})}
    return SweepRun(out_dir=Path("unused"), table=pd.DataFrame(rows), manifest={"spec": {"axes": axes}})


def check_heatmaps(run: SweepRun, x_values, y_values, x_name, y_name, usetex: bool) -> None:
    with matplotlib.rc_context({"text.usetex": usetex}):
        figs = heatmaps(run)
    assert [m for m, _ in figs] == list(METRICS)
    for metric, fig in figs:
        ax = fig.axes[0]
        for label, value in zip(ax.get_xticklabels(), x_values, strict=True):
            assert_plain(label, str(value)[:30])
        for label, value in zip(ax.get_yticklabels(), y_values or [metric], strict=True):
            assert_plain(label, str(value)[:30])
        assert_plain(ax.xaxis.label, x_name)
        assert_plain(ax.yaxis.label, y_name if y_values else "")
        assert_plain(ax.title, f"{metric} (mean)")
        assert len(ax.texts) == len(run.table) and all(t.get_parse_math() is False for t in ax.texts)
        drawn(fig, usetex)


@USETEX
@pytest.mark.parametrize("case", range(5))
def test_heatmap_axes_show_prompts_and_styles_as_written(case, usetex):
    x_values = SHORT[case:case + 3] + [HOSTILE[-1]]  # one over 30 characters: cut, still plain
    y_values = list(reversed(SHORT))[case:case + 2]
    run = hostile_run(x_values, y_values)
    check_heatmaps(run, x_values, y_values, "prompt", "style", usetex)


@USETEX
@pytest.mark.parametrize("case", range(5))
def test_heatmap_of_one_axis_and_hostile_axis_names(case, usetex):
    # Axis names reach the axis labels: a hand-made table may hold any column name.
    x_name, y_name = SHORT[case], SHORT[-1 - case]
    check_heatmaps(hostile_run(SHORT[:4], None, x_name=x_name), SHORT[:4], None, x_name, "", usetex)
    check_heatmaps(hostile_run(SHORT[:3], SHORT[3:5], x_name, y_name), SHORT[:3], SHORT[3:5], x_name, y_name,
                   usetex)


@USETEX
@pytest.mark.parametrize("case", range(5))
def test_pareto_of_a_run_over_hostile_text(case, usetex):
    run = hostile_run(SHORT[case:case + 3], SHORT[-2 - case:])
    with matplotlib.rc_context({"text.usetex": usetex}):
        fig = pareto(run)
    ax = fig.axes[0]
    assert_plain(ax.xaxis.label, "structure fidelity (edge F1)")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["cells", "Pareto front"]
    assert all(not t.get_usetex() and not t.get_parse_math() for t in ax.get_legend().get_texts())
    drawn(fig, usetex)


def test_figures_made_before_usetex_was_set_still_draw():
    run = hostile_run(SHORT[:3], SHORT[3:6])
    figs = [fig for _, fig in heatmaps(run)] + [pareto(run)]
    for fig in figs:
        drawn(fig, True)


def test_a_sweep_over_hostile_prompts_writes_its_report(wb, tmp_path):
    prompts = SHORT[:3]
    spec = {"name": "hostile", "base": {"steps": 1, "size": 64}, "axes": {"prompt": prompts, "seed": [0]}}
    with matplotlib.rc_context({"text.usetex": True}):
        run = sdrag.run_sweep(spec, out_dir=tmp_path / "run", workbench=wb, progress=False)
    assert list(run.table["prompt"]) == prompts and (run.table["status"] == "ok").all()
    assert run.report_path.is_file()
    figs = heatmaps(run)
    assert figs and [t.get_text() for t in figs[0][1].axes[0].get_xticklabels()] == prompts
    for _, fig in figs:
        drawn(fig, False)


# -- canny.threshold_grid: numbers only, still plain and usetex-proof ----------------------------------------------


@USETEX
def test_threshold_grid_titles_are_plain(sketch, usetex):
    with matplotlib.rc_context({"text.usetex": usetex}):
        fig = threshold_grid(sketch, [20, 200], [100, 150], size=64)
    titles = [ax.title for ax in fig.axes]
    assert [t.get_text() for t in titles] == ["low 20 / high 100", "low 20 / high 150", "200/100: low > high",
                                              "200/150: low > high"]
    for title in titles:
        assert_plain(title, title.get_text())
    drawn(fig, usetex)
