import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from sdrag.runs.metrics import aggregate, clip_metrics, cosine_rows, edge_f1, structure_fidelity


def edges(points):
    arr = np.zeros((64, 64), np.uint8)
    for y, x in points:
        arr[y, x] = 255
    return Image.fromarray(arr)


SQUARE = [(20, x) for x in range(20, 44)] + [(43, x) for x in range(20, 44)] + \
         [(y, 20) for y in range(20, 44)] + [(y, 43) for y in range(20, 44)]


def test_identical_edge_maps_score_one():
    assert edge_f1(edges(SQUARE), edges(SQUARE)) == 1.0


def test_disjoint_edge_maps_score_about_zero():
    far = [(5, x) for x in range(5, 15)]
    assert edge_f1(edges(SQUARE), edges(far), tolerance=2) < 0.05


def test_one_pixel_shift_within_tolerance_scores_high():
    shifted = [(y + 1, x + 1) for y, x in SQUARE]
    assert edge_f1(edges(SQUARE), edges(shifted), tolerance=2) > 0.95
    assert edge_f1(edges(SQUARE), edges(shifted), tolerance=0) < 0.5


def test_empty_maps():
    assert edge_f1(edges([]), edges([])) == 1.0
    assert edge_f1(edges(SQUARE), edges([])) == 0.0
    with pytest.raises(ValueError):
        edge_f1(edges(SQUARE), Image.new("L", (8, 8)))


def test_structure_fidelity_of_a_drawing_against_its_own_edges():
    img = np.full((64, 64, 3), 255, np.uint8)
    img[20:44, 20:44] = 0
    drawing = Image.fromarray(img)
    # The control map drawn by hand (the square's outline), not by the Canny the metric itself runs.
    outline = np.zeros((64, 64), np.uint8)
    cv2.rectangle(outline, (20, 20), (43, 43), 255, 1)
    control = Image.fromarray(outline)
    assert structure_fidelity(control, drawing, (50, 150)) == 1.0
    assert structure_fidelity(control, drawing, (50, 150), tolerance=0) < 1.0  # Canny's edge sits one pixel off
    assert structure_fidelity(control, Image.new("RGB", (64, 64), "white"), (50, 150)) == 0.0


def test_cosines_and_clip_scores(wb):
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    assert np.allclose(cosine_rows(a, a), 1.0) and cosine_rows(a[:1], a[1:])[0] == 0.0
    red, blue = Image.new("RGB", (32, 32), "red"), Image.new("RGB", (32, 32), "blue")
    reference = wb.embedder.embed_images([red])[0]
    style, text = clip_metrics(wb.embedder, [red, blue], reference, wb.embedder.embed_text("red")[0])
    assert style[0] == pytest.approx(1.0, abs=1e-5) and style[1] < style[0]
    assert text.shape == (2,) and np.all(np.abs(text) <= 1)


def test_aggregate_over_seeds():
    table = pd.DataFrame({"cn": [0.5, 0.5, 1.0, 1.0], "seed": [0, 1, 0, 1], "edge_f1": [0.2, 0.4, 0.8, 0.8]})
    agg = aggregate(table, ["cn"], ["edge_f1"])
    assert list(agg["cn"]) == [0.5, 1.0] and list(agg["n"]) == [2, 2]
    assert agg["edge_f1_mean"].tolist() == pytest.approx([0.3, 0.8])
    assert agg["edge_f1_std"].iloc[1] == 0.0
