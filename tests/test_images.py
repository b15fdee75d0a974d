import io

import numpy as np
import pytest
from PIL import Image

from sdrag import InputError, SdragError, load_image
from sdrag.images import fit_image


def _png(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (40, 20), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif)
    assert load_image(buf.getvalue()).size == (20, 40)


def test_alpha_is_composited_on_white():
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    rgba.putpixel((0, 0), (0, 0, 0, 255))
    out = load_image(_png(rgba))
    assert out.mode == "RGB" and out.getpixel((5, 5)) == (255, 255, 255) and out.getpixel((0, 0)) == (0, 0, 0)
    la = Image.new("LA", (4, 4), (0, 0))
    assert load_image(la).getpixel((1, 1)) == (255, 255, 255)


def test_palette_grayscale_and_16_bit():
    pal = Image.new("P", (4, 4))
    pal.putpalette([10, 20, 30] * 256)
    assert load_image(_png(pal)).getpixel((0, 0)) == (10, 20, 30)
    assert load_image(Image.new("L", (4, 4), 77)).getpixel((0, 0)) == (77, 77, 77)
    deep = np.full((4, 4), 65535, np.uint16)
    deep[0, 0] = 0
    img16 = Image.fromarray(deep)
    out = load_image(_png(img16))
    assert out.getpixel((1, 1)) == (255, 255, 255) and out.getpixel((0, 0)) == (0, 0, 0)


def test_arrays_of_many_kinds():
    assert load_image(np.zeros((5, 6), bool)).size == (6, 5)
    assert load_image(np.ones((5, 6, 3), np.float32)).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(np.full((5, 6, 1), 9, np.uint8)).getpixel((0, 0)) == (9, 9, 9)
    assert load_image(np.zeros((5, 6, 4), np.uint8)).getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize("bad", [
    b"", b"hello, not an image", _png(Image.new("RGB", (64, 64), "blue"))[:60], 12,
    np.zeros((4, 4, 7), np.uint8), np.zeros((0, 4), np.uint8), np.full((4, 4), np.nan),
])
def test_bad_inputs_raise_one_clear_error(bad):
    with pytest.raises(InputError) as err:
        load_image(bad)
    assert isinstance(err.value, SdragError) and "Fix:" in str(err.value)


def test_missing_and_fake_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_image(tmp_path / "nope.png")
    fake = tmp_path / "fake.png"
    fake.write_text("I am text")
    with pytest.raises(InputError, match="not an image"):
        load_image(fake)


def test_fit_pad_keeps_everything_and_crop_fills():
    wide = Image.new("RGB", (200, 100), "black")
    padded = fit_image(wide, (64, 64), "pad")
    assert padded.size == (64, 64)
    assert padded.getpixel((32, 2)) == (255, 255, 255) and padded.getpixel((32, 32)) == (0, 0, 0)
    cropped = fit_image(wide, (64, 64), "crop")
    assert cropped.size == (64, 64) and cropped.getpixel((32, 2)) == (0, 0, 0)


def test_cmyk_and_animated_first_frame():
    buf = io.BytesIO()
    Image.new("CMYK", (6, 4), (0, 255, 255, 0)).save(buf, format="JPEG")
    red = load_image(buf.getvalue())
    assert red.mode == "RGB" and red.getpixel((2, 2))[0] > 200 and red.getpixel((2, 2))[1] < 60
    frames = [Image.new("RGB", (5, 5), c) for c in ("white", "black")]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:])
    assert load_image(gif.getvalue()).getpixel((2, 2)) == (255, 255, 255)


# EXIF 2.3 orientation tag: how the stored pixels must be turned to be shown upright, written with numpy.
_UPRIGHT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],                      # mirrored left-right
    3: lambda a: a[::-1, ::-1],                   # rotated 180
    4: lambda a: a[::-1],                         # mirrored top-bottom
    5: lambda a: np.rot90(a[:, ::-1], 1),         # mirrored, then rotated 270 clockwise
    6: lambda a: np.rot90(a, -1),                 # rotated 90 clockwise
    7: lambda a: np.rot90(a[:, ::-1], -1),        # mirrored, then rotated 90 clockwise
    8: lambda a: np.rot90(a, 1),                  # rotated 270 clockwise
}


@pytest.mark.parametrize("orientation", sorted(_UPRIGHT))
def test_every_exif_orientation_is_shown_upright(orientation):
    stored = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 14  # every pixel a different colour
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = load_image(_png(Image.fromarray(stored), exif=exif))
    assert np.array_equal(np.asarray(out), _UPRIGHT[orientation](stored))


@pytest.mark.parametrize("orientation", [0, 9, 65535])
def test_out_of_range_exif_orientation_is_ignored(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    assert load_image(_png(Image.new("RGB", (6, 2), "red"), exif=exif)).size == (6, 2)


def test_bytes_like_sources():
    data = _png(Image.new("RGB", (3, 2), "blue"))
    for source in (data, bytearray(data), memoryview(data)):
        assert load_image(source).getpixel((1, 1)) == (0, 0, 255)
