import json

import numpy as np
import pytest
from conftest import FAST
from PIL import Image

import sdrag
from sdrag import InputError, ParameterError, SdragError, StyleNotFoundError


def test_run_returns_the_documented_result(wb, sketch):
    res = wb.run(sketch, "a neon city", seed=0, canny=(50, 150), controlnet_scale=1.5, ip_adapter_scale=0.8,
                 steps=2, guidance=7.5, size=64)
    assert isinstance(res.image, Image.Image) and isinstance(res.edges, Image.Image)
    assert res.image.size == res.edges.size == (64, 64)
    assert len(res.hits) == 1 and {"id", "name", "path", "score"} <= set(vars(res.hits[0]))
    assert -1 <= res.hits[0].score <= 1 and res.style.id == res.hits[0].id
    assert res.seed == 0 and res.params["seed"] == 0 and res.params["prompt"] == "a neon city"
    assert res.params["style"] == [[res.hits[0].id, 1.0]]
    assert len(res.info["ip_adapter_layers"]) == 16 and res.info["retrieved"] is True
    json.dumps(res.params)
    json.dumps(res.to_dict())
    assert {"retrieve", "canny", "embed", "generate", "total"} <= set(res.timings)
    assert all(v >= 0 for v in res.timings.values())
    assert res.info["device"] == "cpu" and res.info["models"]["preset"] == "tiny"


def test_retrieval_is_top1_by_default_and_blends_top_k(wb, sketch):
    top = wb.library.search("a neon city", k=3)  # hybrid, as Params.retrieval is by default
    res = wb.run(sketch, "a neon city", **FAST)
    assert res.style.id == top[0].id
    blend = wb.run(sketch, "a neon city", top_k=3, **FAST)
    assert [h.id for h in blend.hits] == [h.id for h in top]
    weights = [w for _, w in blend.references]
    assert sum(weights) == pytest.approx(1.0) and len(weights) == 3
    # Blend weights follow CLIP similarity to the prompt, whichever method ranked the styles.
    from sdrag.generation.workbench import blend_weights

    cosines = wb.library.vectors([h.id for h in top]) @ wb.embedder.embed_text(["a neon city"])[0]
    assert weights == pytest.approx(blend_weights(cosines), abs=1e-5)
    assert weights != pytest.approx(blend_weights([h.score for h in top]), abs=1e-4)  # not the fused scores
    assert not np.array_equal(np.asarray(blend.image), np.asarray(res.image))


def test_the_retrieval_knob_chooses_how_styles_are_ranked(wb, sketch):
    words = wb.run(sketch, "a watercolour cottage in a meadow", retrieval="lexical", **FAST)
    clip = wb.run(sketch, "a watercolour cottage in a meadow", retrieval="dense", **FAST)
    assert words.style.name == "Watercolour wash" and words.params["retrieval"] == "lexical"
    assert clip.style.id == wb.library.search("a watercolour cottage in a meadow", k=1, method="dense")[0].id
    assert words.style.explanation["lexical"]["terms"] == ["watercolour"]
    with pytest.raises(sdrag.StyleNotFoundError, match="lexical search needs a word in common"):
        wb.run(sketch, "zzqx", retrieval="lexical", **FAST)


def test_fixed_style_by_id_or_name_and_weighted_list(wb, sketch):
    styles = wb.library.list()
    a, b = styles[0], styles[1]
    by_id = wb.run(sketch, "a neon city", style=a.id, **FAST)
    by_name = wb.run(sketch, "a neon city", style=a.name, **FAST)
    assert by_id.style.id == by_name.style.id == a.id
    assert np.array_equal(np.asarray(by_id.image), np.asarray(by_name.image))
    assert by_id.hits[0].score is not None  # prompt-to-style similarity is still reported
    mix = wb.run(sketch, "a neon city", style=[(a.id, 3), (b.id, 1)], **FAST)
    assert [round(w, 3) for _, w in mix.references] == [0.75, 0.25]
    assert not np.array_equal(np.asarray(mix.image), np.asarray(by_id.image))
    no_prompt = wb.run(sketch, "", style=a.id, **FAST)
    assert no_prompt.image.size == (64, 64)


def test_tag_filter_restricts_retrieval(wb, sketch):
    res = wb.run(sketch, "a neon city", tags=["photo"], top_k=2, **FAST)
    assert all("photo" in h.tags for h in res.hits)


@pytest.mark.parametrize("sketch_input, error", [
    ("/no/such/sketch.png", InputError),
    (b"not an image", InputError),
    (np.zeros((4, 4, 5), np.uint8), InputError),
])
def test_bad_sketches_give_the_sdrag_error(wb, sketch_input, error):
    with pytest.raises(error) as err:
        wb.run(sketch_input, "a neon city", **FAST)
    assert isinstance(err.value, SdragError) and "Fix" in str(err.value)


@pytest.mark.parametrize("kwargs", [
    {"canny": (150, 50)}, {"canny": (50, 999)}, {"steps": 0}, {"controlnet_scale": float("nan")},
    {"ip_adapter_scale": -1}, {"size": 4}, {"seed": "zero"}, {"cfg": 7},
])
def test_bad_parameters_give_the_sdrag_error(wb, sketch, kwargs):
    with pytest.raises(ParameterError):
        wb.run(sketch, "a neon city", **{**FAST, **kwargs})


def test_unknown_style_and_missing_prompt(wb, sketch):
    with pytest.raises(StyleNotFoundError, match="Fix"):
        wb.run(sketch, "x", style="no-such-style", **FAST)
    with pytest.raises(ParameterError, match="needs a prompt"):
        wb.run(sketch, "", **FAST)


def test_params_object_flows_in_and_out(wb, sketch):
    p = sdrag.Params(prompt="a neon city", canny=(40, 120), **FAST)
    res = wb.run(sketch, params=p, seed=5)
    assert res.params["canny"] == [40, 120] and res.params["seed"] == 5
    again = wb.run(sketch, params=sdrag.Params.from_dict(res.params))
    assert np.array_equal(np.asarray(again.image), np.asarray(res.image))


def test_save_writes_complete_files_atomically(wb, sketch, tmp_path):
    res = wb.run(sketch, "a neon city", **FAST)
    paths = res.save(tmp_path / "out")
    assert {"image", "edges", "panel", "record"} <= set(paths)
    assert Image.open(paths["image"]).size == (64, 64)
    assert Image.open(paths["panel"]).width > 400
    record = json.loads(paths["record"].read_text())
    assert record["params"]["prompt"] == "a neon city" and record["references"][0]["id"] == res.style.id
    assert not list((tmp_path / "out").glob(".*tmp"))
    with pytest.raises(ParameterError):
        res.save(tmp_path / "out", name="../escape")


def test_progress_true_shows_a_bar(wb, sketch, capsys):
    wb.run(sketch, "a neon city", progress=True, **{**FAST, "steps": 3})
    err = capsys.readouterr().err
    assert "generating" in err and "3/3" in err


def test_reprs_are_short_and_informative(wb, sketch):
    assert "preset='tiny'" in repr(wb) and "models loaded" in repr(wb)
    text = repr(wb.run(sketch, "a neon city", **FAST))
    assert text.startswith("Result(1 image(s) 64x64, seed 0") and len(text) < 200


def test_unload_then_run_reloads(tmp_path, sketch):
    bench = sdrag.Workbench.from_preset("tiny", library_dir=tmp_path / "lib")
    bench.library.add(sdrag.SAMPLE_SKETCH, name="house")
    first = bench.run(sketch, "x", style="house", **FAST)
    bench.unload()
    assert "not loaded yet" in repr(bench)
    again = bench.run(sketch, "x", style="house", **FAST)
    assert "load" in again.timings
    assert np.array_equal(np.asarray(first.image), np.asarray(again.image))


def test_stage_cache_reuses_unchanged_stages_without_changing_pixels(tmp_path, sketch):
    bench = sdrag.Workbench.from_preset("tiny", library_dir=tmp_path / "lib")
    bench.library.add(sdrag.SAMPLE_SKETCH, name="house")
    first = bench.run(sketch, "a neon city", style="house", **FAST)
    bench.run(sketch, "a neon city", style="house", seed=1, **FAST)
    bench.run(sketch, "a neon city", style="house", canny=(10, 20), **FAST)
    stats = bench.cache.stats()
    assert stats["prompt"] == {"hits": 2, "misses": 1}
    assert stats["style"] == {"hits": 2, "misses": 1}
    assert stats["canny"] == {"hits": 1, "misses": 2}
    bench.cache.clear()
    fresh = bench.run(sketch, "a neon city", style="house", **FAST)
    assert np.array_equal(np.asarray(first.image), np.asarray(fresh.image))


def test_an_over_long_prompt_is_truncated_and_said_so(wb, sketch):
    res = wb.run(sketch, "neon city " * 1000, style=wb.library.list()[0].id, **FAST)
    assert res.image.size == (64, 64)
    assert len(res.notes) == 1 and "first 77" in res.notes[0]
    assert wb.run(sketch, "a neon city", **FAST).notes == []


def test_savers_an_out_of_memory_retry_switched_on_survive_unload(tmp_path, sketch, monkeypatch):
    """The workbench owns its memory settings: a reload after unload() keeps what the retry switched on."""
    import torch
    from conftest import fail_generation

    bench = sdrag.Workbench.from_preset("tiny", library_dir=tmp_path / "lib")
    bench.library.add(sdrag.SAMPLE_SKETCH, name="house")
    fail_generation(bench, monkeypatch, lambda: torch.cuda.OutOfMemoryError("simulated"), times=1)
    res = bench.run(sketch, "x", style="house", **FAST)
    assert res.info["oom_fallback"] == ["attention_slicing+vae_tiling"]
    assert res.info["memory"] == {"attention_slicing": True, "vae_tiling": True, "cpu_offload": False}
    bench.unload()
    assert bench.memory.attention_slicing and bench.memory.vae_tiling
    again = bench.run(sketch, "x", style="house", **FAST)
    assert again.info["memory"] == res.info["memory"] and again.info["oom_fallback"] == []
    sliced = [p for n, p in bench.generator.pipe.unet.attn_processors.items() if n.endswith("attn1.processor")]
    assert sliced and all(type(p).__name__ == "SlicedAttnProcessor" for p in sliced)
    assert bench.generator.pipe.vae.use_tiling


def test_use_memory_switches_savers_on_for_good_and_refuses_what_the_device_cannot_do(tmp_path):
    bench = sdrag.Workbench.from_preset("tiny", library_dir=tmp_path / "lib")
    assert bench.use_memory({"vae_tiling": True}).names() == ["vae_tiling"]
    assert bench.use_memory({"vae_tiling": True}).names() == []  # already on
    assert bench.generator.pipe.vae.use_tiling  # applied when the models load
    with pytest.raises(ParameterError, match="CUDA"):
        bench.use_memory({"cpu_offload": True})
    assert not bench.memory.cpu_offload
    with pytest.raises(ParameterError, match="CUDA"):
        sdrag.Workbench.from_preset("tiny", library_dir=tmp_path / "lib", memory={"cpu_offload": True})
