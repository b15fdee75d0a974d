"""Canny preprocessing: a sketch in, the 3-channel edge map ControlNet expects out."""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from ..images import ImageLike, fit_image, load_image
from ..plotting import PLAIN_TEXT, plain_text_figures
from .params import Params


def canny_edges(
    sketch: ImageLike,
    low: float = 50,
    high: float = 150,
    size: int | tuple[int, int] = 512,
    fit: str = "pad",
) -> Image.Image:
    """Return the white-on-black Canny edge map of `sketch` at `size`, as RGB.

    The sketch is fitted keeping its aspect ratio: 'pad' adds white margins (which carry no edges),
    'crop' fills the frame and cuts the overflow. Sizes are rounded down to multiples of 8.
    """
    p = Params(canny=(low, high), size=size, fit=fit).resolved()
    image = fit_image(load_image(sketch), p.width_height, p.fit)
    return edges_of(image, *p.canny)


def edges_of(image: Image.Image, low: float, high: float) -> Image.Image:
    """Run Canny on an already sized RGB image."""
    gray = cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2GRAY)
    edges = cv2.Canny(gray, float(low), float(high))
    return Image.fromarray(np.stack([edges] * 3, axis=-1), "RGB")


def threshold_grid(sketch: ImageLike, lows: list[float], highs: list[float], size: int = 256, fit: str = "pad"):
    """A matplotlib Figure of edge maps: one row per low threshold, one column per high threshold
    (pairs with low > high are left blank and labelled)."""
    import matplotlib.pyplot as plt

    with plain_text_figures():
        fig, axes = plt.subplots(len(lows), len(highs), figsize=(2.2 * len(highs), 2.2 * len(lows)), squeeze=False)
        for r, low in enumerate(lows):
            for c, high in enumerate(highs):
                ax = axes[r][c]
                ax.axis("off")
                if low > high:
                    ax.set_title(f"{low}/{high}: low > high", fontsize=7, **PLAIN_TEXT)
                    continue
                ax.imshow(canny_edges(sketch, low, high, size=size, fit=fit))
                ax.set_title(f"low {low} / high {high}", fontsize=8, **PLAIN_TEXT)
        fig.tight_layout()
    return fig
