import io
import time

import numpy as np
from conftest import upload
from PIL import Image

from sdrag.app.widgets import CannyExplorer, RagStudio, style_gallery


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_moving_a_threshold_slider_updates_the_preview(sketch):
    explorer = CannyExplorer(sketch, size=128)
    before = explorer.preview.value
    explorer.low.value, explorer.high.value = 5, 15
    assert explorer.preview.value != before and explorer.message.value == ""
    explorer.low.value = 200  # above high: a clear message in the widget, preview kept
    assert "swap them" in explorer.message.value and "Traceback" not in explorer.message.value


def test_bad_upload_shows_a_message_not_a_traceback(wb, sketch):
    explorer = CannyExplorer(sketch, size=64)
    upload(explorer.upload, b"this is not an image")
    assert "InputError" in explorer.message.value and "Fix" in explorer.message.value
    studio = RagStudio(wb, sketch)
    upload(studio.upload, b"\x89PNG\r\n\x1a\n broken")
    assert "InputError" in studio.message.value
    upload(studio.upload, _png(Image.new("RGB", (40, 30), "white")))
    assert studio.message.value == "" and studio.sketch.size == (40, 30)


def test_generate_shows_result_and_retrieved_style_with_score(wb, sketch, tmp_path):
    studio = RagStudio(wb, sketch, out_dir=tmp_path)
    studio.size.value, studio.steps.value = 64, 2
    studio.generate(wait=True)
    assert studio.result is not None, studio.message.value
    assert studio.images["result"].value and studio.images["style"].value and studio.images["edges"].value
    assert "score" in studio.hits.value and studio.result.style.name.split()[0] in studio.hits.value
    assert studio.progress.value == 2 and not studio.generate_button.disabled
    studio.style.value = wb.library.list()[0].id  # manual override of retrieval
    studio.ip_mode.value = "style"
    studio.generate(wait=True)
    assert studio.result.style.id == wb.library.list()[0].id
    assert studio.result.params["ip_adapter_scale"]["up"]["block_1"][0] > 0
    paths = studio.save()
    assert paths["panel"].is_file()


def test_stopping_a_generation_leaves_the_app_usable(wb, sketch):
    studio = RagStudio(wb, sketch)
    studio.size.value, studio.steps.value = 64, 60
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


def test_bad_parameters_show_in_the_widget(wb, sketch):
    studio = RagStudio(wb, sketch)
    studio.low.value, studio.high.value = 200, 100
    studio.generate(wait=True)
    assert "ParameterError" in studio.message.value and studio.result is None


def test_gallery_escapes_user_text(wb, tmp_path):
    from sdrag import StyleLibrary

    lib = StyleLibrary(tmp_path / "db", lambda: wb.embedder, wb.embedder_name)
    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    lib.add(img, name="<script>alert(1)</script>", caption="<b>bold</b>")
    page = style_gallery(lib.list()).value
    assert "<script>alert" not in page and "&lt;script&gt;" in page and "&lt;b&gt;bold" in page


def test_a_failed_save_is_shown_in_the_widget(wb, sketch, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the output folder should be")
    studio = RagStudio(wb, sketch, out_dir=blocker)
    studio.size.value, studio.steps.value = 64, 2
    studio.generate(wait=True)
    assert studio.result is not None
    assert studio.save() == {}
    assert "Error" in studio.message.value and "Traceback" not in studio.message.value
    assert not studio.save_button.disabled  # the result is kept: save elsewhere and try again
    studio.out_dir = tmp_path / "out"
    assert studio.save()["panel"].is_file()
