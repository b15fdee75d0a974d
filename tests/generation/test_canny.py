import cv2
import numpy as np
import pytest

from sdrag import ParameterError, canny_edges
from sdrag.images import SAMPLE_SKETCH


def test_edges_are_three_channel_binary_at_the_target_size(sketch):
    edges = canny_edges(sketch, 50, 150, size=100)
    arr = np.asarray(edges)
    assert edges.mode == "RGB" and edges.size == (96, 96)
    assert set(np.unique(arr)) <= {0, 255} and arr.max() == 255
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()


def test_thresholds_change_the_edges(sketch):
    strict = np.asarray(canny_edges(sketch, 100, 200, size=128))
    loose = np.asarray(canny_edges(sketch, 5, 15, size=128))
    assert (loose > 0).sum() > (strict > 0).sum()


def test_pad_adds_no_edges_in_the_margin(sketch):
    wide = np.full((50, 200, 3), 255, np.uint8)
    wide[20:30, 20:180] = 0
    edges = np.asarray(canny_edges(wide, 50, 150, size=64, fit="pad"))
    assert edges[:20].max() == 0 and edges[-20:].max() == 0 and edges.max() == 255


@pytest.mark.parametrize("low, high", [(200, 100), (-5, 10), (0, 1000)])
def test_bad_thresholds(sketch, low, high):
    with pytest.raises(ParameterError):
        canny_edges(sketch, low, high)


def test_bundled_sample_sketch_has_edges():
    assert SAMPLE_SKETCH.is_file()
    assert np.asarray(canny_edges(SAMPLE_SKETCH, size=128)).mean() > 1


# The sample sketch is a pencil drawing (shading, grain, faint guide lines), so the usual threshold pairs keep
# clearly different amounts of it. Measured: at 128 px 2848 / 2428 / 2031 edge pixels (x1.17, x1.20), at 384 px
# 19966 / 15895 / 11885 (x1.26, x1.34).
PAIRS = [(50, 150), (100, 200), (150, 250)]
# Main outlines (512 px coordinates): ground, walls, eaves, roof slopes, door, tree trunk.
OUTLINES = {"ground": ((24, 430), (488, 430)), "left wall": ((120, 270), (120, 430)),
            "right wall": ((330, 270), (330, 430)), "eaves": ((120, 270), (330, 270)),
            "left roof": ((100, 274), (225, 168)), "right roof": ((225, 168), (350, 274)),
            "door left": ((200, 340), (200, 430)), "door right": ((250, 340), (250, 430)),
            "trunk": ((420, 430), (420, 320))}


def edge_mask(low, high, size):
    return np.asarray(canny_edges(SAMPLE_SKETCH, low, high, size=size))[..., 0] > 0


@pytest.mark.parametrize("size", [128, 384])
def test_thresholds_visibly_matter_on_the_sample_sketch(size):
    counts = [int(edge_mask(low, high, size).sum()) for low, high in PAIRS]
    assert all(a > 1.12 * b for a, b in zip(counts, counts[1:])), counts


@pytest.mark.parametrize("size", [128, 384])
def test_the_sample_sketchs_outlines_survive_the_strictest_pair(size):
    scale, reach = size / 512, max(1, round(size / 128))
    near = cv2.dilate(edge_mask(150, 250, size).astype(np.uint8), np.ones((2 * reach + 1,) * 2, np.uint8)) > 0
    for name, (a, b) in OUTLINES.items():
        along = np.linspace(0.08, 0.92, 40)[:, None]
        points = np.round((np.array(a) + (np.array(b) - np.array(a)) * along) * scale).astype(int)
        assert near[points[:, 1], points[:, 0]].mean() > 0.9, name
