"""Per-cell metrics: structure fidelity (edge F1), style similarity and prompt alignment (CLIP cosines)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from ..generation.canny import edges_of
from ..images import ImageLike, load_image

METRICS = ("edge_f1", "style_similarity", "prompt_alignment")


def _edge_mask(image: ImageLike) -> np.ndarray:
    arr = np.asarray(load_image(image).convert("L"))
    return arr > 127


def edge_f1(control_edges: ImageLike, output_edges: ImageLike, tolerance: int = 2) -> float:
    """F1 of two edge maps, counting an edge pixel as matched when the other map has one within `tolerance`
    pixels (Euclidean). Both empty -> 1.0; one empty -> 0.0."""
    a, b = _edge_mask(control_edges), _edge_mask(output_edges)
    if a.shape != b.shape:
        raise ValueError(f"edge maps differ in size: {a.shape} vs {b.shape}")
    if not a.any() and not b.any():
        return 1.0
    if not a.any() or not b.any():
        return 0.0

    def near(mask: np.ndarray) -> np.ndarray:
        # Distance from every pixel to the nearest edge pixel of `mask`.
        return cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 3) <= tolerance + 1e-6

    precision = (b & near(a)).sum() / b.sum()
    recall = (a & near(b)).sum() / a.sum()
    return 0.0 if precision + recall == 0 else float(2 * precision * recall / (precision + recall))


def structure_fidelity(control_edges: ImageLike, output: ImageLike, canny: tuple[float, float],
                       tolerance: int = 2) -> float:
    """Edge F1 between the control edge map and the Canny map of `output` at the same thresholds."""
    out = load_image(output)
    control = load_image(control_edges)
    if out.size != control.size:
        out = out.resize(control.size, Image.Resampling.LANCZOS)
    return edge_f1(control, edges_of(out, *canny), tolerance)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two stacks of vectors."""
    a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    return (a * b).sum(-1)


def clip_metrics(embedder, outputs: Sequence[ImageLike], reference: np.ndarray,
                 text: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (style similarity, prompt alignment) per output: CLIP cosine of each output image with the
    reference image vector and with the prompt's text vector."""
    out = embedder.embed_images(list(outputs))
    return cosine_rows(out, reference[None, :]), cosine_rows(out, text[None, :])


def aggregate(table: pd.DataFrame, by: Sequence[str], metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """Mean and std of each metric over the rows sharing `by` (e.g. over seeds), with the count."""
    present = [m for m in metrics if m in table.columns]
    grouped = table.groupby(list(by), dropna=False, sort=False)[present]
    out = grouped.agg(["mean", "std"])
    out.columns = [f"{m}_{stat}" for m, stat in out.columns]
    out["n"] = grouped.size()
    return out.reset_index()
