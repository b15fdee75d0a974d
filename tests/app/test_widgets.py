import io

import numpy as np
from conftest import upload
from PIL import Image

from sdrag.app.widgets import CannyExplorer, style_gallery


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


def test_bad_upload_shows_a_message_not_a_traceback(sketch):
    explorer = CannyExplorer(sketch, size=64)
    upload(explorer.upload, b"this is not an image")
    assert "InputError" in explorer.message.value and "Fix" in explorer.message.value
    upload(explorer.upload, _png(Image.new("RGB", (40, 30), "white")))
    assert explorer.message.value == "" and explorer.sketch.size == (40, 30)


def test_gallery_escapes_user_text(wb, tmp_path):
    from sdrag import StyleLibrary

    lib = StyleLibrary(tmp_path / "db", lambda: wb.embedder, wb.embedder_name)
    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    lib.add(img, name="<script>alert(1)</script>", caption="<b>bold</b>")
    page = style_gallery(lib.list()).value
    assert "<script>alert" not in page and "&lt;script&gt;" in page and "&lt;b&gt;bold" in page
