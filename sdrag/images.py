"""Reading any image a user has into clean 8-bit RGB, and fitting it to a generation size."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError

ImageLike = str | os.PathLike | Image.Image | np.ndarray | bytes

# A designer-style line drawing bundled with the package, for demos and tests.
SAMPLE_SKETCH = Path(__file__).parent / "assets" / "sketch_house.png"


def load_image(source: ImageLike) -> Image.Image:
    """Return `source` (path, bytes, PIL image or array) as 8-bit RGB: EXIF orientation applied, alpha
    composited on white, grayscale/palette/16-bit/CMYK converted; animated files give their first frame."""
    if isinstance(source, np.ndarray):
        return _from_array(source)
    if isinstance(source, Image.Image):
        return _to_rgb(source)
    if isinstance(source, (bytes, bytearray)):
        return _open(io.BytesIO(source), "the given bytes")
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if not path.is_file():
            raise InputError(f"Image file not found: {path}. Fix: check the path (it must be a file).")
        return _open(path, str(path))
    raise InputError(
        f"Cannot read an image from a {type(source).__name__}. Fix: give a file path, bytes, a PIL image or an array."
    )


def _open(fp, label: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # A bomb warning means tens of megapixels: treat it as the error it nearly is.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(fp) as img:
                img.load()
                return _to_rgb(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(
            f"{label} is too large to decode safely ({exc}). Fix: downscale it below"
            f" {Image.MAX_IMAGE_PIXELS:,} pixels first."
        ) from None
    except UnidentifiedImageError:
        raise InputError(f"{label} is not an image format Pillow can read. Fix: save it as PNG or JPEG.") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{label} is damaged or truncated ({exc}). Fix: re-export the image.") from None


def _to_rgb(img: Image.Image) -> Image.Image:
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return _from_array(np.asarray(img))
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def _from_array(arr: np.ndarray) -> Image.Image:
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)) or 0 in arr.shape:
        raise InputError(
            f"An image array of shape {arr.shape} cannot be read. Fix: pass a non-empty HxW, HxWx3 or HxWx4 array."
        )
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise InputError("The image array holds NaN or inf values. Fix: clean it, or scale it to 0..1.")
        # Floats are taken as 0..1 unless they clearly use the 0..255 range.
        scale = 1.0 if arr.max() > 1.0 else 255.0
        arr = np.clip(arr * scale, 0, 255).round().astype(np.uint8)
    elif arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.integer):
            raise InputError(f"Unsupported image array dtype {arr.dtype}. Fix: use uint8, uint16 or float.")
        # 16-bit data uses the full 0..65535 range; narrower ints that fit in a byte are kept as they are.
        arr = (arr.astype(np.float64) / 257.0) if arr.max() > 255 else arr.astype(np.float64)
        arr = np.clip(arr, 0, 255).round().astype(np.uint8)
    if arr.ndim == 2:
        return Image.fromarray(arr, "L").convert("RGB")
    return _to_rgb(Image.fromarray(arr, "RGBA" if arr.shape[-1] == 4 else "RGB"))


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
