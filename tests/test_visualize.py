import numpy as np
import pytest

from pspnet.visualize import colorize, legend_entries, overlay, with_legend

PALETTE = [(10, 20, 30), (200, 0, 0), (0, 255, 0)]


def test_colorize_with_ignore():
    labels = np.array([[0, 1], [2, 255]], dtype=np.uint8)
    out = colorize(labels, PALETTE)
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3)
    assert out[0, 0].tolist() == [10, 20, 30] and out[1, 0].tolist() == [0, 255, 0]
    assert out[1, 1].tolist() == [0, 0, 0]


def test_overlay_blend():
    image = np.full((2, 2, 3), 100, np.uint8)
    color = np.full((2, 2, 3), 200, np.uint8)
    assert overlay(image, color, alpha=0.25)[0, 0].tolist() == [125, 125, 125]
    with pytest.raises(ValueError, match="alpha"):
        overlay(image, color, alpha=2)


def test_legend_lists_present_classes_largest_first():
    labels = np.array([[2, 2, 2], [0, 255, 2]])
    assert legend_entries(labels, 3) == [(2, 0.8), (0, 0.2)]
    pic = with_legend(np.zeros((40, 30, 3), np.uint8), labels, ["a", "b", "c"], PALETTE)
    assert pic.shape[0] == 40 and pic.shape[1] > 30
    # the first swatch (class 2, green) is drawn in the panel
    assert (pic[:, 30:] == np.array([0, 255, 0], np.uint8)).all(-1).any()
    assert not (pic[:, 30:] == np.array([200, 0, 0], np.uint8)).all(-1).any()  # class 1 absent
