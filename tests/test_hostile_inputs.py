"""Hostile inputs at every public entry point, made at run time (no binary fixtures).

Each case either works with a sensible result (asserted) or raises an sdrag error whose message names the
problem and the fix; in the widgets a bad upload shows that message and the widget stays usable.
docs/reliability.md tables every case.
"""

import io
import json
import math
import struct
import zlib

import numpy as np
import pytest
from conftest import FAST, upload
from PIL import Image

from sdrag import InputError, ParameterError, SdragError, StyleNotFoundError, canny_edges, load_image
from sdrag.app.studio import RagStudio
from sdrag.app.widgets import CannyExplorer

# -- making hostile files ---------------------------------------------------------------------------------


def _enc(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _noise(width: int = 64, height: int = 48) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_bomb(side: int) -> bytes:
    """A real decompression bomb: a valid 1-bit PNG of side x side zeros, a few tens of KB on disk."""
    row = b"\x00" * (1 + (side + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _half_black(width: int = 40, height: int = 20) -> Image.Image:
    """Left half black, right half white: shows which way a picture was turned."""
    img = Image.new("RGB", (width, height), "white")
    img.paste((0, 0, 0), (0, 0, width // 2, height))
    return img


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def _damaged_exif() -> bytes:
    """An EXIF block with orientation 6 and an XResolution stored as text, which Pillow cannot re-encode."""
    ifd = struct.pack("<H", 2) + struct.pack("<HHIHH", 0x0112, 3, 1, 6, 0) + struct.pack("<HHI", 0x011A, 2, 4)
    return b"Exif\x00\x00" + b"II*\x00" + struct.pack("<I", 8) + ifd + b"abc\x00" + struct.pack("<I", 0)


def _animated(fmt: str, **kw) -> bytes:
    frames = [Image.new("RGB", (6, 6), "white"), Image.new("RGB", (6, 6), "black")]
    return _enc(frames[0], fmt, save_all=True, append_images=frames[1:], **kw)


def _transparent(mode: str) -> bytes:
    """A 4x4 image, transparent everywhere except an opaque black pixel at (0, 0)."""
    img = Image.new(mode, (4, 4), (0, 0) if mode == "LA" else (0, 0, 0, 0))
    img.putpixel((0, 0), (0, 255) if mode == "LA" else (0, 0, 0, 255))
    return _enc(img, "PNG")


def _palette(transparent: bool) -> bytes:
    img = Image.new("P", (4, 4), 1)
    img.putpalette([0, 0, 0, 10, 20, 30] + [0, 0, 0] * 254)
    img.putpixel((0, 0), 0)
    return _enc(img, "PNG", **({"transparency": 1} if transparent else {}))


def _gray_with_trns() -> bytes:
    img = Image.new("L", (4, 4), 0)
    img.putpixel((0, 0), 90)
    return _enc(img, "PNG", transparency=0)


def _sixteen_bit_gray() -> bytes:
    arr = np.array([[0, 32896, 65535, 65535]], np.uint16).repeat(4, axis=0)
    return _enc(Image.fromarray(arr), "PNG")


def _sixteen_bit_rgb() -> bytes:
    import cv2

    arr = np.zeros((4, 4, 3), np.uint16)
    arr[..., 2] = 65535  # OpenCV writes BGR: this is pure red
    ok, data = cv2.imencode(".png", arr)
    assert ok
    return data.tobytes()


def _px(img: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    return img.getpixel(xy)


def _dark(rgb: tuple[int, ...]) -> bool:
    return max(rgb) < 60


def _light(rgb: tuple[int, ...]) -> bool:
    return min(rgb) > 200


# name -> (bytes, what load_image must give)
GOOD_FILES = {
    "16-bit grayscale PNG": (_sixteen_bit_gray, lambda im: im.size == (4, 4) and _px(im, (0, 0)) == (0, 0, 0)
                             and _px(im, (1, 0)) == (128, 128, 128) and _px(im, (3, 0)) == (255, 255, 255)),
    "16-bit RGB PNG": (_sixteen_bit_rgb, lambda im: _px(im, (1, 1)) == (255, 0, 0)),
    "CMYK JPEG": (lambda: _enc(Image.new("CMYK", (6, 4), (0, 255, 255, 0)), "JPEG"),
                  lambda im: im.size == (6, 4) and _px(im, (2, 2))[0] > 200 and max(_px(im, (2, 2))[1:]) < 60),
    "palette PNG": (lambda: _palette(False),
                    lambda im: _px(im, (1, 1)) == (10, 20, 30) and _px(im, (0, 0)) == (0, 0, 0)),
    "palette PNG with a transparent index": (lambda: _palette(True),
                                             lambda im: _px(im, (1, 1)) == (255, 255, 255)
                                             and _px(im, (0, 0)) == (0, 0, 0)),
    "grayscale PNG with a transparent grey": (_gray_with_trns, lambda im: _px(im, (1, 1)) == (255, 255, 255)
                                              and _px(im, (0, 0)) == (90, 90, 90)),
    "LA PNG": (lambda: _transparent("LA"), lambda im: _px(im, (1, 1)) == (255, 255, 255)
               and _px(im, (0, 0)) == (0, 0, 0)),
    "RGBA PNG": (lambda: _transparent("RGBA"), lambda im: _px(im, (1, 1)) == (255, 255, 255)
                 and _px(im, (0, 0)) == (0, 0, 0)),
    # Stored 40x20 with its left half black; orientation 6 shows it 20x40 with the top half black.
    "EXIF-rotated JPEG": (lambda: _enc(_half_black(), "JPEG", exif=_exif(6), quality=95),
                          lambda im: im.size == (20, 40) and _dark(_px(im, (10, 5))) and _light(_px(im, (10, 35)))),
    "EXIF-rotated PNG": (lambda: _enc(_half_black(), "PNG", exif=_exif(8)),
                         lambda im: im.size == (20, 40) and _px(im, (10, 35)) == (0, 0, 0)
                         and _px(im, (10, 5)) == (255, 255, 255)),
    "damaged EXIF block (orientation still readable)": (
        lambda: _enc(_half_black(), "JPEG", exif=_damaged_exif(), quality=95),
        lambda im: im.size == (20, 40) and _dark(_px(im, (10, 5))) and _light(_px(im, (10, 35)))),
    "animated GIF": (lambda: _animated("GIF"), lambda im: im.size == (6, 6) and _px(im, (3, 3)) == (255, 255, 255)),
    "animated WebP": (lambda: _animated("WEBP", lossless=True),
                      lambda im: im.size == (6, 6) and _px(im, (3, 3)) == (255, 255, 255)),
    "animated PNG (APNG)": (lambda: _animated("PNG"), lambda im: _px(im, (3, 3)) == (255, 255, 255)),
    "JPEG with garbage scan data": (
        lambda: (lambda j: j[:j.index(b"\xff\xda") + 20] + bytes(range(256)) * 4 + b"\xff\xd9")(
            _enc(_noise(), "JPEG")),
        lambda im: im.size == (64, 48)),
    "32-bit float TIFF": (lambda: _enc(Image.fromarray(np.full((4, 5), 0.5, np.float32)), "TIFF"),
                          lambda im: im.size == (5, 4) and _px(im, (1, 1)) == (128, 128, 128)),
    "BMP": (lambda: _enc(Image.new("RGB", (5, 4), (1, 2, 3)), "BMP"), lambda im: _px(im, (1, 1)) == (1, 2, 3)),
    "1x1 PNG": (lambda: _enc(Image.new("RGB", (1, 1), "black"), "PNG"), lambda im: im.size == (1, 1)),
    "67x93 PNG (not a multiple of 8)": (lambda: _enc(_noise(67, 93), "PNG"), lambda im: im.size == (67, 93)),
    "4000x3 PNG": (lambda: _enc(Image.new("L", (4000, 3), 0), "PNG"), lambda im: im.size == (4000, 3)),
    "3x4000 PNG": (lambda: _enc(Image.new("L", (3, 4000), 0), "PNG"), lambda im: im.size == (3, 4000)),
}

# name -> (bytes, a phrase the error message must contain)
BAD_FILES = {
    "empty file": (lambda: b"", "is empty (0 bytes)"),
    "truncated PNG": (lambda: _enc(_noise(), "PNG")[:300], "damaged or truncated"),
    "truncated JPEG": (lambda: (lambda j: j[:len(j) // 2])(_enc(_noise(), "JPEG")), "damaged or truncated"),
    "JPEG cut before its scan": (lambda: (lambda j: j[:j.index(b"\xff\xda")])(_enc(_noise(), "JPEG")),
                                 "damaged or truncated"),
    "PNG with a zeroed header": (lambda: (lambda p: p[:16] + b"\0" * 8 + p[24:])(_enc(_noise(), "PNG")),
                                 "starts like a PNG file but its header is damaged"),
    "PNG with garbage image data": (lambda: (lambda p, i: p[:i + 4] + b"\x55" * 200 + p[i + 204:])(
        _enc(_noise(), "PNG"), _enc(_noise(), "PNG").index(b"IDAT")), "damaged or truncated"),
    "text file named .png": (lambda: b"meeting notes, not a picture\n" * 3, "holds text, not an image"),
    "HTML/JS named .png": (lambda: b"<html><script>alert('x')</script></html>", "holds text, not an image"),
    "random bytes": (lambda: bytes(np.random.default_rng(1).integers(128, 256, 300, dtype=np.uint8)),
                     "not an image format Pillow can read"),
    "decompression bomb (400 MP)": (lambda: _png_bomb(20000), "too large to decode safely"),
    "decompression bomb (100 MP, Pillow's warning range)": (lambda: _png_bomb(10000), "too large to decode safely"),
}


# -- files at the four entry points -----------------------------------------------------------------------


def _write(tmp_path, data: bytes, name: str = "sketch.png"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", GOOD_FILES)
def test_odd_but_valid_files_load_sensibly(case, tmp_path):
    make, check = GOOD_FILES[case]
    data = make()
    for image in (load_image(data), load_image(_write(tmp_path, data)), load_image(memoryview(data))):
        assert image.mode == "RGB" and check(image), (case, image.size, image.getpixel((0, 0)))


@pytest.mark.parametrize("case", GOOD_FILES)
def test_odd_but_valid_files_give_edges_and_a_run(case, wb, tmp_path):
    path = _write(tmp_path, GOOD_FILES[case][0]())
    edges = canny_edges(path, 50, 150, size=64)
    arr = np.asarray(edges)
    assert edges.size == (64, 64) and set(np.unique(arr)) <= {0, 255}
    res = wb.run(path, "a neon city", **FAST)
    assert res.image.size == (64, 64) and res.sketch.size == (64, 64)


@pytest.mark.parametrize("case", BAD_FILES)
@pytest.mark.parametrize("entry", ["load_image(bytes)", "load_image(path)", "canny_edges(path)", "Workbench.run(path)"])
def test_bad_files_raise_input_error_with_the_fix(case, entry, wb, tmp_path):
    data, phrase = BAD_FILES[case][0](), BAD_FILES[case][1]
    path = _write(tmp_path, data)
    call = {"load_image(bytes)": lambda: load_image(data), "load_image(path)": lambda: load_image(path),
            "canny_edges(path)": lambda: canny_edges(path, 50, 150, size=64),
            "Workbench.run(path)": lambda: wb.run(path, "a neon city", **FAST)}[entry]
    with pytest.raises(InputError) as err:
        call()
    msg = str(err.value)
    assert phrase in msg and "Fix:" in msg, msg
    if entry != "load_image(bytes)":
        assert str(path) in msg, msg  # the message names the file


# Pillow warns about the metadata it skips in damaged files; that is its message to the user, not a failure.
@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning", "ignore:Tag data larger than file:UserWarning")
def test_randomly_damaged_files_never_escape_as_foreign_errors():
    """Seeded fuzzing: bytes flipped or cut in valid files of each format either load or raise InputError."""
    rng = np.random.default_rng(5)
    seeds = [_enc(_noise(24, 16), fmt, **kw) for fmt, kw in [
        ("PNG", {"exif": _exif(6)}), ("JPEG", {"exif": _exif(3)}), ("GIF", {}), ("WEBP", {"exif": _exif(8)}),
        ("TIFF", {}), ("BMP", {})]]
    outcomes = {"loaded": 0, "refused": 0}
    for i in range(300):
        data = bytearray(seeds[i % len(seeds)])
        if i % 3 == 0:
            data = data[:int(rng.integers(1, len(data)))]
        else:
            for pos in rng.integers(0, len(data), int(rng.integers(1, 8))):
                data[pos] = int(rng.integers(0, 256))
        try:
            assert load_image(bytes(data)).mode == "RGB"
            outcomes["loaded"] += 1
        except InputError as exc:
            assert "Fix:" in str(exc)
            outcomes["refused"] += 1
    assert outcomes["loaded"] > 20 and outcomes["refused"] > 20, outcomes


def test_exif_rotated_sketch_is_upright_in_the_run(wb, tmp_path):
    path = _write(tmp_path, _enc(_half_black(40, 80), "PNG", exif=_exif(6)))  # shows 80x40, top half black
    res = wb.run(path, "a neon city", **FAST)
    sketch = np.asarray(res.sketch.convert("L"))
    assert sketch[16:30, 32].max() < 60 and sketch[34:48, 32].min() > 200
    edges = np.asarray(canny_edges(path, 50, 150, size=64))[..., 0]
    assert edges[30:34].max() == 255  # the black/white border runs across, as displayed


def test_extreme_aspect_ratios_keep_margins_free_of_edges():
    line = np.full((3, 4000), 255, np.uint8)
    line[1, 100:3900] = 0
    for fit in ("pad", "crop"):
        edges = np.asarray(canny_edges(line, 50, 150, size=64, fit=fit))
        assert edges.shape == (64, 64, 3)
    padded = np.asarray(canny_edges(line.T.copy(), 50, 150, size=64, fit="pad"))
    assert padded[:, :28].max() == 0 and padded[:, 36:].max() == 0


@pytest.mark.parametrize("low, high, size, fit, phrase", [
    (200, 100, 64, "pad", "swap them"), (math.nan, 100, 64, "pad", "canny"), (10, math.inf, 64, "pad", "canny"),
    (-1, 100, 64, "pad", "canny"), ("50", 150, 64, "pad", "canny"), (50, 150, 0, "pad", "size"),
    (50, 150, 10**6, "pad", "size"), (50, 150, (64, 3), "pad", "size"), (50, 150, 64, "stretch", "fit"),
])
def test_bad_canny_parameters_raise_parameter_error(sketch, low, high, size, fit, phrase):
    with pytest.raises(ParameterError, match=phrase):
        canny_edges(sketch, low, high, size=size, fit=fit)


def test_canny_edge_values_and_sizes_not_a_multiple_of_8(sketch):
    assert canny_edges(sketch, 50, 150, size=(67, 93)).size == (64, 88)
    assert canny_edges(sketch, 80, 80, size=64).size == (64, 64)  # low == high is allowed
    assert np.asarray(canny_edges(sketch, 49.5, 150.25, size=64)).max() == 255


# -- numpy, PIL and other Python inputs -----------------------------------------------------------------

GOOD_ARRAYS = {
    "float32 in 0..1": (np.ones((5, 6, 3), np.float32), (255, 255, 255)),
    "float64 in 0..255": (np.full((5, 6, 3), 200.0), (200, 200, 200)),
    "float with negatives": (np.full((5, 6), -0.5), (0, 0, 0)),
    "float16": (np.full((5, 6), 0.5, np.float16), (128, 128, 128)),
    "bool": (np.ones((5, 6), bool), (255, 255, 255)),
    "uint16 full range": (np.full((5, 6), 65535, np.uint16), (255, 255, 255)),
    "big-endian uint16": (np.full((5, 6), 65535, ">u2"), (255, 255, 255)),
    "int32 small values": (np.full((5, 6), 77, np.int32), (77, 77, 77)),
    "int64 huge values": (np.full((5, 6), 2**40, np.int64), (255, 255, 255)),
    "HxWx1": (np.full((5, 6, 1), 9, np.uint8), (9, 9, 9)),
    "HxWx2 (grey + alpha, transparent)": (np.zeros((5, 6, 2), np.uint8), (255, 255, 255)),
    "HxWx4 (transparent)": (np.zeros((5, 6, 4), np.uint8), (255, 255, 255)),
    "non-contiguous view": (np.full((10, 12, 3), 30, np.uint8)[::2, ::-2], (30, 30, 30)),
    "Fortran order": (np.asfortranarray(np.full((5, 6, 3), 40, np.uint8)), (40, 40, 40)),
}

BAD_ARRAYS = {
    "NaN": (np.full((5, 6), np.nan), "NaN or inf"),
    "inf": (np.full((5, 6, 3), np.inf, np.float32), "NaN or inf"),
    "4-D batch of one": (np.zeros((1, 5, 6, 3), np.uint8), "arr[0]"),
    "channels first": (np.zeros((3, 64, 64), np.uint8), "transpose(1, 2, 0)"),
    "5 channels": (np.zeros((5, 6, 5), np.uint8), "HxW, HxWx2, HxWx3 or HxWx4"),
    "1-D": (np.zeros(30, np.uint8), "HxW"),
    "0-D": (np.array(3), "HxW"),
    "empty": (np.zeros((0, 6), np.uint8), "non-empty"),
    "complex": (np.zeros((5, 6), complex), "dtype complex128"),
    "object": (np.zeros((5, 6), object), "dtype object"),
    "strings": (np.full((5, 6), "x"), "dtype <U1"),
}


@pytest.mark.parametrize("case", GOOD_ARRAYS)
def test_odd_arrays_are_read(case):
    arr, pixel = GOOD_ARRAYS[case]
    img = load_image(arr)
    assert img.mode == "RGB" and img.size == (arr.shape[1], arr.shape[0]) and img.getpixel((1, 1)) == pixel
    assert canny_edges(arr, 50, 150, size=64).size == (64, 64)


@pytest.mark.parametrize("case", BAD_ARRAYS)
def test_bad_arrays_raise_input_error_with_the_fix(case, wb):
    arr, phrase = BAD_ARRAYS[case]
    for call in (lambda: load_image(arr), lambda: canny_edges(arr, 50, 150, size=64),
                 lambda: wb.run(arr, "a neon city", **FAST)):
        with pytest.raises(InputError) as err:
            call()
        assert phrase in str(err.value) and "Fix:" in str(err.value), str(err.value)


def test_float_and_bool_arrays_run_through_the_chain(wb):
    ramp = np.tile(np.linspace(0, 1, 40, dtype=np.float32), (30, 1))
    assert wb.run(ramp, "a neon city", **FAST).image.size == (64, 64)
    mask = np.zeros((30, 40), bool)
    mask[10:20, 10:30] = True
    assert wb.run(mask, "a neon city", **FAST).image.size == (64, 64)


def _pil(mode: str, value) -> Image.Image:
    return Image.new(mode, (5, 6), value)


@pytest.mark.parametrize("image, pixel", [
    (Image.fromarray(np.full((6, 5), 65535, np.uint16)), (255, 255, 255)),   # I;16
    (_pil("I", 70000), (255, 255, 255)),
    (_pil("F", 0.5), (128, 128, 128)),
    (_pil("1", 1), (255, 255, 255)),
    (_pil("LA", (0, 0)), (255, 255, 255)),
    (_pil("PA", (0, 0)), (255, 255, 255)),
    (_pil("CMYK", (0, 0, 0, 0)), (255, 255, 255)),
    (_pil("YCbCr", (255, 128, 128)), (255, 255, 255)),
    (_pil("RGBX", (1, 2, 3, 0)), (1, 2, 3)),
], ids=lambda v: getattr(v, "mode", ""))
def test_pil_images_of_every_mode(image, pixel):
    out = load_image(image)
    assert out.mode == "RGB" and out.size == (5, 6) and out.getpixel((2, 2)) == pixel


def test_broken_pil_images_raise_input_error():
    with pytest.raises(InputError, match="empty .*Fix:"):
        load_image(Image.new("RGB", (0, 0)))
    lazy = Image.open(io.BytesIO(_enc(_noise(), "PNG")[:300]))  # opened, not yet decoded
    with pytest.raises(InputError, match="damaged or truncated.*Fix:"):
        load_image(lazy)
    closed = _noise()
    closed.close()
    with pytest.raises(InputError, match="Fix:"):
        load_image(closed)


@pytest.mark.parametrize("source, phrase", [
    (None, "NoneType"), (12, "int"), ([[0, 1]], "list"), ({"image": 1}, "dict"),
    ("", "path is empty"), ("/no/such/sketch.png", "not found"), ("x" * 5000, "not a usable file path"),
    ("bad\x00name.png", "not a usable file path"), ("https://example.com/sketch.png", "is a URL"),
])
def test_other_sources_raise_input_error_with_the_fix(source, phrase):
    with pytest.raises(InputError) as err:
        load_image(source)
    assert phrase in str(err.value) and "Fix:" in str(err.value)


def test_a_folder_or_unreadable_file_is_named(tmp_path):
    with pytest.raises(InputError, match="not a regular file"):
        load_image(tmp_path)
    locked = _write(tmp_path, _enc(_noise(), "PNG"))
    locked.chmod(0)
    try:
        try:
            locked.open("rb").close()
            readable = True  # root reads anything: then the file loads, which is also right
        except PermissionError:
            readable = False
        if readable:
            assert load_image(locked).size == (64, 48)
        else:
            with pytest.raises(InputError, match="cannot be opened.*permissions"):
                load_image(locked)
    finally:
        locked.chmod(0o644)


# -- parameters through Workbench.run ---------------------------------------------------------------------

BAD_PARAMS = [
    ({"canny": (200, 100)}, ParameterError, "swap them"),
    ({"canny": (math.nan, 100)}, ParameterError, "canny"),
    ({"canny": (-5, 100)}, ParameterError, "canny"),
    ({"canny": (10, math.inf)}, ParameterError, "canny"),
    ({"controlnet_scale": -1}, ParameterError, "controlnet_scale"),
    ({"controlnet_scale": math.nan}, ParameterError, "controlnet_scale"),
    ({"controlnet_scale": math.inf}, ParameterError, "controlnet_scale"),
    ({"ip_adapter_scale": -0.5}, ParameterError, "ip_adapter_scale"),
    ({"ip_adapter_scale": math.nan}, ParameterError, "ip_adapter_scale"),
    ({"ip_adapter_scale": -math.inf}, ParameterError, "ip_adapter_scale"),
    ({"guidance": math.nan}, ParameterError, "guidance"),
    ({"guidance": -1}, ParameterError, "guidance"),
    ({"steps": 0}, ParameterError, "steps"),
    ({"steps": -3}, ParameterError, "steps"),
    ({"steps": 501}, ParameterError, "steps"),
    ({"steps": 10**9}, ParameterError, "steps"),
    ({"steps": 2.5}, ParameterError, "steps"),
    ({"steps": "20"}, ParameterError, "steps"),
    ({"steps": True}, ParameterError, "steps"),
    ({"ip_adapter_scale": {"up": {"block_0": 1.0}}}, ParameterError, "SDXL"),
    ({"ip_adapter_scale": {"up": {"block_9": 1.0}}}, ParameterError, "valid up blocks"),
    ({"ip_adapter_scale": {"up": {"block_01": 1.0}}}, ParameterError, "not a block name"),
    ({"ip_adapter_scale": {"up": {1: 1.0}}}, ParameterError, "not a block name"),
    ({"ip_adapter_scale": {"side": 1.0}}, ParameterError, "unknown part"),
    ({"ip_adapter_scale": "styel"}, ParameterError, "Unknown ip_adapter_scale preset"),
    ({"style": "no-such-style"}, StyleNotFoundError, "Fix: pick one"),
    ({"style": [("no-such-style", 1.0)]}, StyleNotFoundError, "Fix: pick one"),
    ({"style": ""}, ParameterError, "empty string"),
    ({"size": 4}, ParameterError, "size"),
    ({"size": (4000, 3)}, ParameterError, "size"),
    ({"seed": -1}, ParameterError, "seed"),
    ({"seed": math.nan}, ParameterError, "seed"),
    ({"params": "steps=2"}, ParameterError, "Params object or a dict"),
    ({"progress": "yes"}, ParameterError, "progress"),
    ({"cfg": 7}, ParameterError, "Unknown parameter"),
]


@pytest.mark.parametrize("kwargs, error, phrase", BAD_PARAMS, ids=[str(k) for k, _, _ in BAD_PARAMS])
def test_bad_parameters_raise_the_sdrag_error(wb, sketch, kwargs, error, phrase):
    with pytest.raises(error) as err:
        wb.run(sketch, "a neon city", **{**FAST, **kwargs})
    assert isinstance(err.value, SdragError) and phrase in str(err.value), str(err.value)


def test_empty_prompt_needs_a_style_or_works_with_a_fixed_one(wb, sketch):
    for prompt in ("", "   \n\t"):
        with pytest.raises(ParameterError, match="needs a prompt.*Fix"):
            wb.run(sketch, prompt, **FAST)
    style = wb.library.list()[0]
    res = wb.run(sketch, "", style=style.id, **FAST)
    assert res.image.size == (64, 64) and res.style.id == style.id and res.style.score is None
    assert res.params["prompt"] == "" and res.notes == []


@pytest.mark.parametrize("fixed_style", [False, True], ids=["retrieval", "fixed style"])
def test_a_10000_character_prompt_is_truncated_and_said_so(wb, sketch, fixed_style):
    prompt = ("a glowing neon city street at night, " * 300)[:10_000]
    style = {"style": wb.library.list()[0].id} if fixed_style else {}
    res = wb.run(sketch, prompt, negative_prompt="blurry " * 2000, **style, **FAST)
    assert res.image.size == (64, 64) and res.params["prompt"] == prompt
    assert len(res.notes) == 2 and all("first 77" in n and "Shorten" in n for n in res.notes)
    assert res.notes[0].startswith("prompt has") and res.notes[1].startswith("negative_prompt has")


@pytest.mark.parametrize("prompt", [
    "<script>alert('x')</script><img src=x onerror=alert(1)> a city",
    "a neon city 🌃🏙️✨ at night",
    "مدينة نيون في الليل \u202eevil\u202c עיר ניאון",
    "a city\x00with a NUL and \u200b zero-width space",
], ids=["html-js", "emoji", "rtl", "control-chars"])
def test_odd_prompts_run_and_are_recorded_verbatim(wb, sketch, prompt):
    res = wb.run(sketch, prompt, **FAST)
    assert res.image.size == (64, 64) and res.hits and res.params["prompt"] == prompt
    assert json.loads(json.dumps(res.to_dict()))["params"]["prompt"] == prompt


def test_params_as_a_dict_and_odd_sizes_work(wb, sketch):
    res = wb.run(sketch, "a neon city", params={"steps": 2, "size": (100, 60)})
    assert res.image.size == (96, 56) and res.params["size"] == [96, 56]


# -- the widgets' upload path -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_uploads_show_a_message_and_the_widgets_stay_usable(case, wb, sketch):
    data, phrase = BAD_FILES[case][0](), BAD_FILES[case][1]
    explorer = CannyExplorer(sketch, size=64)
    before = explorer.sketch
    upload(explorer.upload, data, "evil<b>.png")
    msg = explorer.message.value
    assert "InputError" in msg and phrase in msg and "Fix:" in msg and "Traceback" not in msg, msg
    assert "evil&lt;b&gt;.png" in msg and "<b>.png" not in msg  # the file name is shown, escaped
    assert explorer.sketch is before
    preview = explorer.preview.value
    explorer.low.value, explorer.high.value = 5, 15
    assert explorer.message.value == "" and explorer.preview.value != preview

    studio = RagStudio(wb, sketch)
    before = studio.sketch
    upload(studio.upload, data)
    msg = studio.message.value
    assert "InputError" in msg and phrase in msg and "Traceback" not in msg, msg
    assert studio.sketch is before and not studio.generate_button.disabled


@pytest.mark.parametrize("case", GOOD_FILES)
def test_odd_but_valid_uploads_replace_the_sketch(case, wb, sketch):
    make, check = GOOD_FILES[case]
    data = make()
    explorer = CannyExplorer(sketch, size=64)
    upload(explorer.upload, data)
    assert explorer.message.value == "" and check(explorer.sketch)
    assert Image.open(io.BytesIO(explorer.preview.value)).size == (64, 64)
    studio = RagStudio(wb, sketch)
    upload(studio.upload, data)
    assert studio.message.value == "" and check(studio.sketch)


def test_after_bad_uploads_the_studio_still_generates(wb, sketch):
    studio = RagStudio(wb, sketch)
    studio.size.value, studio.steps.value = 64, 2
    for case in ("empty file", "decompression bomb (400 MP)", "text file named .png"):
        upload(studio.upload, BAD_FILES[case][0]())
    studio.prompt.value = "<script>alert('x')</script> a city " + "neon " * 2000
    studio.generate(wait=True)
    assert studio.result is not None and "done" in studio.message.value, studio.message.value
    assert "first 77" in studio.message.value  # the truncation note reaches the user
    assert "<script>" not in studio.message.value + studio.hits.value
