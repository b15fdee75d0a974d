"""Reading any image a user has into clean 8-bit RGB, and fitting it to a generation size."""

from __future__ import annotations

import contextlib
import io
import os
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError, SdragError

ImageLike = str | os.PathLike | Image.Image | np.ndarray | bytes | bytearray | memoryview

# A designer-style line drawing bundled with the package, for demos and tests.
SAMPLE_SKETCH = Path(__file__).parent / "assets" / "sketch_house.png"


def load_image(source: ImageLike) -> Image.Image:
    """Return `source` (path, bytes, PIL image or array) as 8-bit RGB: EXIF orientation applied, alpha
    composited on white, grayscale/palette/16-bit/CMYK converted; animated files give their first frame."""
    if isinstance(source, np.ndarray):
        return _from_array(source)
    if isinstance(source, Image.Image):
        with _decoding("The PIL image"):
            if 0 in source.size:
                raise InputError(f"The PIL image is empty ({source.width}x{source.height} pixels)."
                                 " Fix: pass an image at least 1x1.")
            return _to_rgb(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise InputError("The image data is empty (0 bytes). Fix: pass the bytes of a PNG or JPEG file.")
        return _open(io.BytesIO(data), "The image data", data[:_HEAD])
    if isinstance(source, (str, os.PathLike)):
        return _open_path(source)
    raise InputError(
        f"Cannot read an image from a {type(source).__name__}. Fix: give a file path, bytes, a PIL image or an array."
    )


# Enough leading bytes to recognise a format or tell text from binary data.
_HEAD = 512
_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF87a": "GIF", b"GIF89a": "GIF", b"BM": "BMP",
    b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"\x00\x00\x01\x00": "ICO",
}


def _open_path(source: str | os.PathLike) -> Image.Image:
    raw = os.fspath(source)
    if not raw:
        raise InputError("The image path is empty. Fix: pass the path of an image file.")
    if isinstance(raw, str) and raw.split("://", 1)[0].lower() in ("http", "https"):
        raise InputError(f"{raw[:200]} is a URL; sdrag reads local files only. Fix: download it, then pass the path.")
    path = Path(os.fsdecode(raw)).expanduser()
    label = repr(str(path)) if len(str(path)) <= 200 else repr(str(path)[:200] + "...")
    try:
        if "\x00" in str(path):
            raise ValueError("it contains a NUL character")
        exists, is_file = path.exists(), path.is_file()
    except (OSError, ValueError) as exc:  # a NUL byte or a name too long: the OS cannot look it up
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise InputError(f"{label} is not a usable file path ({reason}). Fix: pass the path of an image file."
                         ) from None
    if not exists:
        raise InputError(f"Image file not found: {label}. Fix: check the path (it must be a file).")
    if not is_file:
        raise InputError(f"{label} is not a regular file (a folder or device?). Fix: pass the path of an image file.")
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise InputError(f"{label} cannot be opened ({exc.strerror or exc}). Fix: check its permissions.") from None
    with fh:
        head = fh.read(_HEAD)
        if not head:
            raise InputError(f"{label} is empty (0 bytes). Fix: re-export or re-download the image.")
        fh.seek(0)
        return _open(fh, label, head)


@contextlib.contextmanager
def _decoding(label: str):
    """Turn Pillow's many decoding failures into one InputError that names the file and the fix."""
    try:
        with warnings.catch_warnings():
            # A bomb warning means tens of megapixels: treat it as the error it nearly is.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(
            f"{label} is too large to decode safely ({exc}). Fix: downscale it below"
            f" {Image.MAX_IMAGE_PIXELS:,} pixels first."
        ) from None
    except SdragError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise InputError(f"{label} is damaged or truncated ({exc}). Fix: re-export the image.") from None


def _open(fp, label: str, head: bytes) -> Image.Image:
    with _decoding(label):
        try:
            img = Image.open(fp)
        except UnidentifiedImageError:
            raise _unreadable(label, head) from None
        with img:
            img.load()
            return _to_rgb(img)


def _unreadable(label: str, head: bytes) -> InputError:
    """The error for data Pillow does not recognise: damaged image, text, or a format it lacks."""
    fmt = next((name for magic, name in _SIGNATURES.items() if head.startswith(magic)), None)
    if fmt is None and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        fmt = "WebP"
    if fmt:
        return InputError(f"{label} starts like a {fmt} file but its header is damaged or truncated."
                          " Fix: re-export or re-download the image.")
    if _is_text(head):
        return InputError(f"{label} holds text, not an image (a renamed file?). Fix: pass a real PNG or JPEG file.")
    return InputError(f"{label} is not an image format Pillow can read. Fix: save it as PNG or JPEG.")


def _is_text(head: bytes) -> bool:
    # The cut at _HEAD bytes may split one multi-byte character at the end.
    text = head.decode("utf-8", errors="replace").rstrip("\ufffd")
    return bool(text) and "\ufffd" not in text and all(c.isprintable() or c.isspace() for c in text)


# EXIF orientation tag value -> the transpose that shows the picture upright (EXIF 2.3, tag 0x0112).
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a damaged EXIF block leaves the (intact) pixels as stored."""
    # Not ImageOps.exif_transpose: it rewrites the EXIF block too, and crashes (struct.error, TypeError)
    # on damaged metadata that the pixels do not need.
    try:
        orientation = img.getexif().get(0x0112)
    except Exception:  # EXIF parsers raise many types on bad metadata, and metadata must not block the pixels
        return img
    method = _ORIENTATION.get(orientation) if isinstance(orientation, int) else None
    return img.transpose(method) if method is not None else img


def _to_rgb(img: Image.Image) -> Image.Image:
    img = _upright(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _from_array(np.asarray(img))
    if img.mode == "P" or (img.mode in ("L", "RGB") and "transparency" in img.info):
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def _from_array(arr: np.ndarray) -> Image.Image:
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (2, 3, 4)) or 0 in arr.shape:
        raise InputError(f"An image array of shape {arr.shape} cannot be read. Fix: {_shape_fix(arr)}.")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise InputError("The image array holds NaN or inf values. Fix: clean it, or scale it to 0..1.")
        # Floats are taken as 0..1 unless they clearly use the 0..255 range.
        scale = 1.0 if arr.max() > 1.0 else 255.0
        arr = np.clip(arr.astype(np.float64) * scale, 0, 255).round().astype(np.uint8)
    elif arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.integer):
            raise InputError(f"Unsupported image array dtype {arr.dtype}. Fix: use uint8, uint16 or float.")
        # 16-bit data uses the full 0..65535 range; narrower ints that fit in a byte are kept as they are.
        arr = (arr.astype(np.float64) / 257.0) if arr.max() > 255 else arr.astype(np.float64)
        arr = np.clip(arr, 0, 255).round().astype(np.uint8)
    arr = np.ascontiguousarray(arr)
    if arr.ndim == 2:
        return Image.fromarray(arr, "L").convert("RGB")
    return _to_rgb(Image.fromarray(arr, {2: "LA", 3: "RGB", 4: "RGBA"}[arr.shape[-1]]))


def _shape_fix(arr: np.ndarray) -> str:
    """The fix for a bad array shape, naming the likely mix-up (a batch, channels first)."""
    if arr.ndim == 4 and 0 not in arr.shape:
        return "it looks like a batch of images; pass one of them, e.g. arr[0]"
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] > 4:
        return "it looks channels-first (C, H, W); pass arr.transpose(1, 2, 0)"
    return "pass a non-empty HxW, HxWx2, HxWx3 or HxWx4 array"


def fit_image(img: Image.Image, size: tuple[int, int], fit: str = "pad", fill: int = 255) -> Image.Image:
    """Resize keeping aspect ratio to exactly `size` (w, h): 'pad' letterboxes with `fill` (white: no edges),
    'crop' fills the frame and centre-crops the overflow."""
    w, h = size
    if fit == "crop":
        return ImageOps.fit(img, (w, h), method=Image.Resampling.LANCZOS)
    scale = min(w / img.width, h / img.height)
    new = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    resized = img.resize(new, Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (w, h), (fill, fill, fill))
    canvas.paste(resized, ((w - new[0]) // 2, (h - new[1]) // 2))
    return canvas
