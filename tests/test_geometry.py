"""Map geometry: s*n + 1 sizes and the original-image transform."""

import numpy as np
import pytest

from strongpose.geometry import ImageTransform, input_size_for, map_size, padded_size


def test_sizes():
    assert map_size(401, 8) == 51 and map_size(401, 16) == 26
    assert input_size_for(51, 8) == 401
    assert padded_size(640, 8) == 641 and padded_size(641, 8) == 641 and padded_size(642, 8) == 649
    assert padded_size(1, 16) == 17
    with pytest.raises(ValueError, match="8\\*n \\+ 1"):
        map_size(400, 8)


def test_transform_round_trip():
    t = ImageTransform(scale=0.5, offset_x=3, offset_y=7, original_width=100, original_height=80)
    pts = np.array([[0, 0], [10, 20], [99, 79]], np.float32)
    np.testing.assert_allclose(t.to_original(t.to_input(pts)), pts, atol=1e-5)
    np.testing.assert_allclose(t.to_input(pts)[1], [8, 17])
