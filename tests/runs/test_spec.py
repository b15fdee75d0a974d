import pytest
import yaml

from sdrag import ParameterError
from sdrag.runs.spec import MAX_CELLS, SweepError, grid_dims, load_spec, validate

BASE = {"prompt": "a neon city", "steps": 2, "size": 64}


def test_spec_forms_grid_zip_cells_and_ranges(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({
        "base": BASE, "axes": {"controlnet_scale": {"linspace": [0.0, 1.0, 3]}, "seed": {"range": [0, 2, 1]}},
        "zip": {"canny_low": [10, 50], "canny_high": [30, 150]}, "cells": [{"guidance": 5.0}, {"guidance": 9.0}],
    }))
    spec = load_spec(path)
    assert spec.name == "s" and spec.axes["controlnet_scale"] == [0.0, 0.5, 1.0] and spec.axes["seed"] == [0, 1]
    cells = spec.expand()
    assert len(cells) == 3 * 2 * 2 * 2
    params = validate(spec)
    assert {tuple(p.canny) for p in params} == {(10, 30), (50, 150)}
    assert {p.guidance for p in params} == {5.0, 9.0}


def test_every_bad_value_is_reported_before_any_generation():
    spec = load_spec({"base": BASE, "axes": {"canny": [[200, 100], [50, 150]], "controlnet_scale": [-1, 1.0],
                                             "ip_adapter_scale": ["styel", {"up": {"block_0": 1.0}}, 0.5]}})
    with pytest.raises(ParameterError) as err:
        validate(spec)
    text = str(err.value)
    for needle in ("canny = [200, 100]", "controlnet_scale = -1", "'styel'", "block_0"):
        assert needle in text, needle


def test_structural_spec_errors_all_at_once():
    with pytest.raises(SweepError) as err:
        load_spec({"base": {"stepz": 1}, "axes": {"cfg": [1], "seed": {"linspace": [0, 1]}},
                   "zip": {"seed": [1, 2], "guidance": [1]}, "colour": 1})
    text = str(err.value)
    for needle in ("stepz", "cfg", "linspace", "equal lengths", "colour"):
        assert needle in text, needle


def test_demo_spec_is_valid():
    from conftest import REPO

    spec = load_spec(REPO / "experiments" / "specs" / "demo.yaml")
    assert len(validate(spec)) == 2 * 3 * 3 * 2


def test_run_settings_are_checked_with_the_structure():
    with pytest.raises(SweepError) as err:
        load_spec({"base": BASE, "preset": "sdxl", "metrics": "no", "edge_tolerance": 2.5, "batch": 0,
                   "sketch": 3, "name": "../escape"})
    text = str(err.value)
    for needle in ("preset must be one of", "metrics must be true or false", "edge_tolerance", "batch",
                   "sketch must be a path", "not a plain name"):
        assert needle in text, needle


def test_repeated_cells_are_refused_by_name():
    spec = load_spec({"base": BASE, "axes": {"seed": [0, 1, 0]}})
    with pytest.raises(ParameterError, match=r"cells 0 \(seed = 0\) and 2 \(seed = 0\) resolve to the same"):
        validate(spec)
    # Equal after resolution counts too: 'auto' and None both mean retrieval.
    with pytest.raises(ParameterError, match="same parameters"):
        validate(load_spec({"base": BASE, "cells": [{"style": "auto"}, {"style": None}]}))


def test_a_spec_too_large_is_refused_before_expansion():
    axes = {"seed": {"range": [0, 1000, 1]}, "steps": {"range": [1, 501, 1]}}
    with pytest.raises(SweepError, match=f"more than {MAX_CELLS}"):
        load_spec({"base": BASE, "axes": axes})


def test_grid_dims_keep_zipped_and_explicit_cells_together_and_seeds_last():
    spec = load_spec({"base": BASE, "axes": {"seed": [0, 1], "guidance": [3.0, 7.0]},
                      "zip": {"canny_low": [10, 50], "canny_high": [30, 150]},
                      "cells": [{"steps": 2}, {"steps": 3, "controlnet_scale": 0.5}]})
    assert grid_dims(spec.to_dict()) == [["guidance"], ["canny_low", "canny_high"], ["steps", "controlnet_scale"],
                                         ["seed"]]


@pytest.mark.parametrize("text, needle", [
    ("- just\n- a list\n", "must be a mapping"),
    ("base: {steps: [1,\n", "Cannot parse the sweep spec"),
    ("base: {prompt: x}\naxes: {1: [1], null: [2]}\n", "unknown parameter 1"),
    ("name: /etc/passwd\n", "not a plain name"),
    ("name: ..\n", "not a plain name"),
    ("axes: {seed: {range: [0, .inf, 1]}}\n", "bad range"),
], ids=["list", "broken-yaml", "odd-keys", "absolute-name", "dotdot-name", "infinite-range"])
def test_hostile_spec_files_get_one_clear_error(tmp_path, text, needle):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(SweepError, match=needle):
        load_spec(path)


def test_hostile_spec_bytes_and_values(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_bytes(b"\xff\xfe\x00garbage\x00")
    with pytest.raises(SweepError, match="Cannot parse"):
        load_spec(path)
    with pytest.raises(SweepError, match="not a plain name"):
        load_spec({"name": "run\x00name"})
    spec = load_spec({"base": BASE, "axes": {"guidance": [float("nan"), float("inf"), -1.0, True, "7"]}})
    with pytest.raises(ParameterError) as err:
        validate(spec)
    assert str(err.value).count("guidance must be a number") == 5
    long_prompt = "a city " * 1500  # 10,500 characters: valid, CLIP's 77-token cut is noted per run
    rtl = "مدينة نيون في الليل 🌃 <b>"
    assert len(validate(load_spec({"base": BASE, "axes": {"prompt": [long_prompt, rtl]}}))) == 2


def test_overrides_go_through_the_same_checks_as_the_file(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"base": BASE, "axes": {"seed": [0, 1]}, "zip": {"guidance": [3.0, 5.0]}}))
    spec = load_spec(path, axes={"guidance": {"linspace": [1, 9, 3]}}, zip={}, base={"steps": None, "size": 96})
    assert spec.axes == {"guidance": [1.0, 5.0, 9.0]} and spec.zip == {}
    assert spec.base == {**BASE, "size": 96} and spec.source_dir == tmp_path and spec.name == "s"
    assert [p.guidance for p in validate(spec)] == [1.0, 5.0, 9.0]
    assert load_spec(path).axes == {"seed": [0, 1]}  # the file is untouched
    with pytest.raises(SweepError, match="unknown parameter 'gudance'"):
        load_spec(path, axes={"gudance": [1]})
    with pytest.raises(SweepError, match="batch must be a whole number"):
        load_spec(spec, batch=0)
    with pytest.raises(SweepError, match="base: unknown parameter 'stepz'"):
        load_spec(spec, base={"stepz": 3})


def test_each_problem_is_blamed_on_the_axis_values_behind_it():
    spec = load_spec({"base": BASE, "axes": {"steps": [0, 2], "guidance": [-1.0, 5.0]}})
    with pytest.raises(ParameterError) as err:
        validate(spec)
    problems = err.value.problems
    assert len(problems) == 2
    assert any(p.startswith("steps = 0: steps must be a whole number") and "(2 cells)" in p for p in problems)
    assert any(p.startswith("guidance = -1.0: guidance must be a number") and "(2 cells)" in p for p in problems)
