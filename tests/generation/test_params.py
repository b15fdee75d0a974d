import json
import math

import pytest

from sdrag import ParameterError, Params, SdragError
from sdrag.generation.ipscale import layer_scales, normalize_ip_scale
from sdrag.models.sd15 import IP_SCALE_PRESETS


def test_defaults_are_the_prototype_settings():
    p = Params().resolved()
    assert (p.steps, p.guidance, p.controlnet_scale, p.ip_adapter_scale, p.canny) == (20, 7.5, 1.5, 0.8, (50, 150))
    assert p.scheduler == "unipc"


def test_all_problems_reported_at_once():
    bad = Params(steps=0, guidance=math.nan, controlnet_scale=-1, canny=(200, 100), seed=-3, size=3,
                 scheduler="magic", fit="stretch", control_start=0.9, control_end=0.1, top_k=0)
    with pytest.raises(ParameterError) as err:
        bad.resolved()
    text = str(err.value)
    for name in ("steps", "guidance", "controlnet_scale", "canny low threshold", "seed", "size", "scheduler",
                 "fit", "control_start", "top_k"):
        assert name in text, name
    assert isinstance(err.value, SdragError)
    # One entry per problem, each also in the message: callers regroup them without parsing text.
    assert len(err.value.problems) == 10 and all(problem in text for problem in err.value.problems)


@pytest.mark.parametrize("canny", [(-1, 100), (10, 300), (50,), "50,150", (math.inf, 1), (True, 100)])
def test_bad_canny_thresholds(canny):
    with pytest.raises(ParameterError, match="canny"):
        Params(canny=canny).resolved()


def test_size_rounds_down_to_multiples_of_8():
    assert Params(size=100).resolved().size == 96
    assert Params(size=(130, 70)).resolved().width_height == (128, 64)


def test_unknown_names_refused():
    with pytest.raises(ParameterError, match="Unknown parameter"):
        Params.from_dict({"stepz": 3})
    with pytest.raises(ParameterError, match="Unknown parameter"):
        Params().update(cfg=3)


def test_to_dict_round_trips_through_json():
    p = Params(prompt="x", seed=[1, 2], size=(64, 128), style=[("a", 2), ("b", 1)], ip_adapter_scale="style")
    r = p.resolved()
    again = Params.from_dict(json.loads(json.dumps(r.to_dict()))).resolved()
    assert again.to_dict() == r.to_dict()


def test_style_forms():
    assert Params(style="auto").resolved().style is None
    assert Params(style={"a": 1, "b": 3}).resolved().style == [("a", 1.0), ("b", 3.0)]
    with pytest.raises(ParameterError, match="weight > 0"):
        Params(style=[("a", 0)]).resolved()


def test_ip_scale_presets_target_sd15_blocks():
    style = normalize_ip_scale("style")
    assert style["up"]["block_1"] == [1.0, 1.0, 1.0] and style["mid"] == 0.0
    assert not any(style["down"]["block_2"])
    layout = normalize_ip_scale("style+layout")
    assert layout["down"]["block_2"] == [1.0, 1.0] and layout["mid"] == 1.0
    assert normalize_ip_scale("style:0.5")["up"]["block_1"] == [0.5, 0.5, 0.5]
    assert normalize_ip_scale(IP_SCALE_PRESETS["style"]) == style  # a preset is a block map by another name


def test_sdxl_block_map_refused_with_hint():
    with pytest.raises(ParameterError, match="SDXL"):
        normalize_ip_scale({"up": {"block_0": [0.0, 1.0, 0.0]}})


@pytest.mark.parametrize("bad", [
    {"up": {"block_1": 0.0}},                      # resolves to all zeros
    {"up": {"block_9": 1.0}},                      # no such block
    {"side": 1.0},                                 # unknown part
    {"up": {"block_1": [1.0, 1.0]}},               # wrong layer count
    {"down": {"block_2": [1.0, math.nan]}},        # non-finite
    "styel", "style:abc", -0.1, math.inf, None,
])
def test_bad_ip_scales(bad):
    with pytest.raises(ParameterError):
        normalize_ip_scale(bad)


def test_layer_scales_cover_all_16_sd15_cross_attention_layers():
    flat = layer_scales(0.7)
    assert len(flat) == 16 and set(flat.values()) == {0.7}
    mapped = layer_scales(normalize_ip_scale("style"))
    assert sum(v > 0 for v in mapped.values()) == 3
    assert mapped["up_blocks.1.attentions.2"] == 1.0


@pytest.mark.parametrize("key", ["block_01", "block_1 ", 1, None, "Block_1"])
def test_block_names_must_be_exact(key):
    # A near-miss name used to be skipped silently, leaving that block at scale 0.
    with pytest.raises(ParameterError, match="not a block name; valid up blocks: block_1, block_2, block_3"):
        normalize_ip_scale({"up": {key: 1.0, "block_2": 1.0}})


@pytest.mark.parametrize("style", ["", "   ", [("", 1.0)], {"": 2.0}])
def test_empty_style_names_refused(style):
    with pytest.raises(ParameterError, match="style"):
        Params(style=style).resolved()


def test_resolved_params_are_their_own_frozen_type():
    import dataclasses

    from sdrag import ResolvedParams

    raw = Params(ip_adapter_scale="style", style={"a": 2}, size=(100, 70), canny=[10.0, 20.5])
    p = raw.resolved()
    assert isinstance(p, ResolvedParams) and not isinstance(raw, ResolvedParams)
    assert [f.name for f in dataclasses.fields(ResolvedParams)] == Params.names()
    assert p.resolved() is p and p.size == (96, 64) and p.canny == (10, 20.5) and p.style == [("a", 1.0 * 2)]
    assert isinstance(p.ip_adapter_scale, dict) and p.ip_adapter_scale["up"]["block_1"] == [1.0, 1.0, 1.0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.steps = 3
    changed = p.update(steps=3)
    assert type(changed) is Params and changed.resolved().steps == 3 and p.steps == 20
    assert Params.from_dict(json.loads(json.dumps(p.to_dict()))).resolved() == p


def test_the_generator_takes_only_resolved_params(wb):
    from PIL import Image

    with pytest.raises(ParameterError, match="resolved"):
        wb.generator.generate(Image.new("RGB", (64, 64)), Params(size=64, steps=1))
