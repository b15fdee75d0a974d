"""The RAG studio never shows stale state: greyed while running and after a failure, out of date after a knob
moves, Save only for the current result; plus the live edges, candidates, blends, history and send-to-sweep."""

import io
import re
import time

import ipywidgets as w
import numpy as np
import pytest
from conftest import FAST, draw_sketch, upload
from PIL import Image

from sdrag import Params, StyleLibrary
from sdrag.app.studio import OUTDATED, STALE, RagStudio
from sdrag.app.widgets import eta_text, png_bytes, preset_banner, same_settings
from sdrag.files import pixels_sha256
from sdrag.images import load_image
from sdrag.runs.spec import cell_params, load_spec, spec_from_params


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def fast(wb, sketch, tmp_path=None, **params) -> RagStudio:
    """A studio at 64 px and 2 steps (about 0.1 s a run on the tiny preset)."""
    p = Params(prompt="a neon glowing city street at night", **{**FAST, **params})
    return RagStudio(wb, sketch, params=p, **({"out_dir": tmp_path / "out"} if tmp_path else {}))


def html_of(widget) -> list[str]:
    """Every HTML string the widget tree sends to the browser."""
    own = [widget.value] if isinstance(widget, w.HTML) else []
    return own + [text for child in getattr(widget, "children", ()) for text in html_of(child)]


def test_old_import_paths_give_the_studio():
    from sdrag import ui

    assert ui.RagStudio is RagStudio


def test_plain_functions_behind_the_widgets():
    assert eta_text(7, 20, 3.1 / 13) == "7/20 · 3.1 s left"
    assert eta_text(1, 20) == "1/20" and eta_text(20, 20, 0.5) == "20/20"
    assert same_settings(Params(seed=0), Params()) and not same_settings(Params(guidance=3.0), Params())
    assert preset_banner("sd15") == "" and "random weights" in preset_banner("tiny")


def test_generate_shows_result_captions_and_progress(wb, sketch, tmp_path):
    studio = fast(wb, sketch, tmp_path)
    studio.generate(wait=True)
    assert studio.result is not None, studio.message.value
    assert all(studio.images[name].value for name in ("sketch", "edges", "style", "result"))
    assert studio.hits.value.startswith("retrieved: ") and "score" in studio.hits.value
    assert studio.progress.value == 2 and studio.progress_text.value == "2/2" and "done in" in studio.message.value
    assert "seed 0 · 64×64 · 2 steps" in studio.captions["result"].value
    assert "Canny 50/150 · 64×64" in studio.captions["edges"].value
    assert "sketch · 160×120" in studio.captions["sketch"].value
    assert "retrieved" in studio.captions["style"].value
    assert studio.state() == "current" and not studio.save_button.disabled
    assert studio.save()["panel"].is_file()


def test_the_shown_result_is_greyed_the_moment_a_run_starts(wb, sketch, monkeypatch):
    studio = fast(wb, sketch, steps=3)
    studio.generate(wait=True)
    first = studio.result
    assert STALE not in studio.output._dom_classes and not studio.save_button.disabled
    original, seen = wb.run, []

    def look() -> dict:
        return {"stale": STALE in studio.output._dom_classes, "save_off": studio.save_button.disabled,
                "note": studio.note.value, "progress": studio.progress_text.value}

    def spying_run(image, params, progress):
        seen.append(look())  # before any work: the old picture must already be marked

        def step(i, total):
            go = progress(i, total)
            seen.append(look())
            return go

        return original(image, params=params, progress=step)

    monkeypatch.setattr(wb, "run", spying_run)
    studio.seed.value = 1
    studio.generate(wait=True)
    assert all(s["stale"] and s["save_off"] and "generating" in s["note"] for s in seen), seen
    assert [s["progress"].split(" ")[0] for s in seen] == ["0/3", "1/3", "2/3", "3/3"]
    assert re.fullmatch(r"2/3 · \d+\.\d s left", seen[2]["progress"]), seen
    assert studio.result is not first and STALE not in studio.output._dom_classes and studio.note.value == ""


def test_a_failed_run_greys_the_previous_result(wb, sketch, monkeypatch):
    studio = fast(wb, sketch)
    studio.generate(wait=True)
    studio.low.value, studio.high.value = 200, 100  # refused before any work
    studio.generate(wait=True)
    assert "ParameterError" in studio.message.value and "Traceback" not in studio.message.value
    assert STALE in studio.output._dom_classes and studio.save_button.disabled and "failed" in studio.note.value
    studio.low.value, studio.high.value = 50, 150

    def broken(*_args, **_kw):
        raise RuntimeError("the GPU fell over <b>")

    monkeypatch.setattr(wb, "run", broken)  # fails mid-run, with the very settings of the shown result
    studio.generate(wait=True)
    assert "RuntimeError" in studio.message.value and "&lt;b&gt;" in studio.message.value
    assert STALE in studio.output._dom_classes and studio.save_button.disabled and studio.save() == {}
    assert not studio.generate_button.disabled and studio.stop_button.disabled


def test_bad_parameters_without_a_result_show_one_message(wb, sketch):
    studio = RagStudio(wb, sketch)
    studio.low.value, studio.high.value = 200, 100
    studio.generate(wait=True)
    assert "ParameterError" in studio.message.value and studio.result is None and studio.save_button.disabled


def test_a_knob_change_marks_the_result_out_of_date(wb, sketch, tmp_path):
    studio = fast(wb, sketch, tmp_path)
    studio.generate(wait=True)
    studio.guidance.value = 3.0
    assert studio.save_button.disabled and OUTDATED in studio.output._dom_classes
    assert studio.note.value == "out of date — Generate to update" and studio.save() == {}
    studio.guidance.value = 7.5  # back to the result's settings: it is current again
    assert not studio.save_button.disabled and OUTDATED not in studio.output._dom_classes
    upload(studio.upload, _png(Image.new("RGB", (40, 30), "white")))  # another sketch: out of date as well
    assert studio.save_button.disabled and studio.state() == "outdated"


def test_a_style_picked_by_hand_is_labelled_manual(wb, sketch):
    studio = fast(wb, sketch)
    chosen = wb.library.list()[0]
    studio.style.value = chosen.id
    studio.ip_mode.value = "style"
    studio.generate(wait=True)
    assert studio.result.style.id == chosen.id and studio.result.params["ip_adapter_scale"]["up"]["block_1"][0] > 0
    assert studio.hits.value.startswith("manual: ") and "retrieved" not in studio.hits.value
    assert "picked by hand" in studio.captions["style"].value and "none used" in studio.candidates.value


def test_candidates_with_thumbnails_are_shown_at_k1(wb, sketch):
    studio = fast(wb, sketch, top_k=1)
    studio.generate(wait=True)
    page = studio.candidates.value
    top5 = wb.library.search(studio.prompt.value, k=5)  # the studio ranks as its retrieval knob says
    assert page.count("<img src='data:image/png") == 5 and all(s.name in page for s in top5)
    assert page.count("used, weight 1.00") == 1 and page.count("not used") == 4
    assert f"score {top5[1].score:.3f}" in page and studio.references.value == ""  # one reference: no blend


def test_the_retrieval_knob_reaches_the_run_and_candidates_say_why(wb, sketch):
    studio = fast(wb, sketch, top_k=1)
    studio.prompt.value = "a watercolour cottage in a meadow"
    studio.retrieval.value = "lexical"
    assert studio.params().retrieval == "lexical"
    studio.generate(wait=True)
    assert studio.result.params["retrieval"] == "lexical" and studio.result.style.name == "Watercolour wash"
    page = studio.candidates.value
    assert "words #1" in page and "watercolour" in page  # the explanation of the top candidate
    studio.retrieval.value = "dense"
    assert studio.save_button.disabled  # another retrieval makes the shown result out of date


def test_the_edge_panel_follows_the_sliders_without_generate(wb, sketch):
    studio = fast(wb, sketch)
    before = studio.images["edges"].value
    studio.low.value, studio.high.value = 5, 15
    assert studio.images["edges"].value != before and studio.result is None
    assert "Canny 5/15" in studio.captions["edges"].value
    # The preview is the very edge map a generation uses.
    assert studio.images["edges"].value == png_bytes(wb.control(studio.sketch, studio.params().resolved()).edges)
    small = studio.images["edges"].value
    studio.size.value = 96
    assert studio.images["edges"].value != small and "96×96" in studio.captions["edges"].value
    sized = studio.images["edges"].value
    upload(studio.upload, _png(Image.fromarray(draw_sketch(90, 160))))
    assert studio.images["edges"].value != sized
    studio.low.value = 200  # above high: said under the panel, which is greyed
    assert "swap them" in studio.captions["edges"].value and STALE in studio.panels["edges"]._dom_classes


def test_a_blend_shows_every_reference_with_its_weight(wb, sketch):
    studio = fast(wb, sketch, top_k=3)
    studio.generate(wait=True)
    refs = studio.result.references
    page = studio.references.value
    assert len(refs) == 3 and page.count("<img") == 3 and all(s.name in page for s, _ in refs)
    assert all(f"weight {wt:.2f}" in page for _, wt in refs) and "+ 2 more" in studio.captions["style"].value
    a, b = wb.library.list()[:2]
    given = fast(wb, sketch, style=[(a.id, 1.0), (b.id, 3.0)])
    assert given.style.value == given.BLEND and given.params().style == [(a.id, 1.0), (b.id, 3.0)]
    given.generate(wait=True)
    assert given.hits.value.startswith("manual: ") and "weight 0.25" in given.hits.value
    assert "weight 0.75" in given.references.value and given.references.value.count("<img") == 2


def test_clicking_the_history_restores_a_result_and_its_settings(wb, sketch, tmp_path):
    studio = fast(wb, sketch, tmp_path)
    studio.generate(wait=True)
    first = studio.result
    upload(studio.upload, _png(Image.fromarray(draw_sketch(90, 160))))
    studio.seed.value, studio.guidance.value, studio.ip_mode.value = 7, 3.0, "style"
    studio.generate(wait=True)
    assert len(studio.history) == 2 and studio.result is not first
    assert "seed 7" in html_of(studio.history_box)[1]
    studio.history_buttons[0].click()
    assert studio.result is first and studio.seed.value == 0 and studio.guidance.value == 7.5
    assert studio.ip_mode.value == "float" and studio.sketch.size == (160, 120)
    assert studio.state() == "current" and not studio.save_button.disabled
    assert studio.history_buttons[0].button_style == "info" and studio.history_buttons[1].button_style == ""
    saved = load_image(studio.save()["image"])
    assert pixels_sha256(saved) == pixels_sha256(first.image)


def test_send_to_sweep_writes_a_spec_that_loads_and_never_overwrites(wb, sketch, tmp_path):
    studio = fast(wb, sketch, tmp_path, seed=4, top_k=2)
    studio.prompt.value = "A neon city!"
    mine = tmp_path / "specs" / "studio-a-neon-city.yaml"
    mine.parent.mkdir()
    mine.write_text("name: mine\n")
    path = studio.send_to_sweep()
    assert path.name == "studio-a-neon-city-2.yaml" and mine.read_text() == "name: mine\n"
    spec = load_spec(path)
    cells = [cell_params(spec, overrides).resolved() for overrides in spec.expand()]
    assert [c.seed for c in cells] == [4, 5, 6] and cells[0] == studio.params().resolved()
    assert all(c == studio.params().update(seed=c.seed).resolved() for c in cells)
    assert spec.name == path.stem and spec.preset == "tiny"
    assert pixels_sha256(load_image(spec.resolve_path(spec.sketch))) == pixels_sha256(studio.sketch)
    assert str(path) in studio.sweep_note.value and f"python -m sdrag sweep {path}" in studio.sweep_note.value
    assert studio.send_to_sweep().name == "studio-a-neon-city-3.yaml"
    studio.low.value, studio.high.value = 200, 100
    assert studio.send_to_sweep() is None and "ParameterError" in studio.sweep_note.value
    assert len(list(mine.parent.glob("*.yaml"))) == 3


def test_spec_from_params_refuses_what_would_not_run():
    spec = spec_from_params(Params(prompt="x", canny=(10, 20), size=64), "s", {"seed": [0, 1]}, preset="tiny")
    assert spec["base"]["canny"] == [10, 20] and "tags" not in spec["base"] and load_spec(spec).axes == {"seed": [0, 1]}
    with pytest.raises(Exception, match="canny"):
        spec_from_params(Params(canny=(200, 100)), "s")


def test_tiny_preset_shows_the_random_weights_banner(wb, sketch):
    studio = RagStudio(wb, sketch)
    assert "tiny preset: random weights — pictures and scores are noise; the chain is real" in studio.banner.value
    assert studio.banner.value in html_of(studio.widget)


def test_labels_are_not_cut(wb, sketch):
    studio = RagStudio(wb, sketch)
    assert all(knob.style.description_width == "initial" for knob in studio.knobs())
    assert studio.cn_range.description == "ControlNet start/end"


def test_user_text_is_escaped_everywhere(wb, sketch, tmp_path, monkeypatch):
    lib = StyleLibrary(tmp_path / "db", lambda: wb.embedder, wb.embedder_name)
    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    lib.add(img, name="<script>alert(1)</script>", caption="<b>bold</b>")
    monkeypatch.setattr(wb, "_library", lib)
    studio = fast(wb, sketch, tmp_path)
    studio.prompt.value = "<script>alert(2)</script> neon"
    studio.generate(wait=True)
    studio.style.value = lib.list()[0].id
    studio.generate(wait=True)
    studio.send_to_sweep()
    page = "".join(html_of(studio.widget))
    assert studio.result is not None and len(studio.history) == 2, studio.message.value
    assert "<script>" not in page and "&lt;script&gt;alert(1)" in page
    assert "&lt;script&gt;alert(1)" in studio.hits.value and "sweep spec written" in studio.sweep_note.value


def test_stopping_a_generation_leaves_the_app_usable(wb, sketch):
    studio = fast(wb, sketch, steps=60)
    studio.generate()
    deadline = time.time() + 30
    while studio.progress.value < 1 and time.time() < deadline:
        time.sleep(0.01)
    studio.stop()
    studio.wait(60)
    assert "stopped" in studio.message.value and studio.progress.value < 60
    assert not studio.generate_button.disabled and studio.stop_button.disabled
    studio.steps.value = 2
    studio.generate(wait=True)
    assert studio.result is not None and "done" in studio.message.value


def test_bad_uploads_show_a_message_not_a_traceback(wb, sketch):
    studio = RagStudio(wb, sketch)
    upload(studio.upload, b"\x89PNG\r\n\x1a\n broken")
    assert "InputError" in studio.message.value and studio.sketch.size == (160, 120)
    upload(studio.upload, _png(Image.new("RGB", (40, 30), "white")))
    assert studio.message.value == "" and studio.sketch.size == (40, 30) and "40×30" in studio.captions["sketch"].value


def test_a_failed_save_is_shown_in_the_widget(wb, sketch, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the output folder should be")
    studio = fast(wb, sketch)
    studio.out_dir = blocker
    studio.generate(wait=True)
    assert studio.result is not None
    assert studio.save() == {}
    assert "Error" in studio.message.value and "Traceback" not in studio.message.value
    assert not studio.save_button.disabled  # the result is kept: save elsewhere and try again
    studio.out_dir = tmp_path / "out"
    assert studio.save()["panel"].is_file()
