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
