"""Box and polygon arithmetic of the tracker."""

from __future__ import annotations

import numpy as np
import pytest

from streamd.tracking.geometry import Regions, box_size, iou_matrix, point_in_polygon

SQUARE = [(0, 0), (10, 0), (10, 10), (0, 10)]
L_SHAPE = [(0, 0), (10, 0), (10, 4), (4, 4), (4, 10), (0, 10)]


@pytest.mark.parametrize(
    ("point", "polygon", "inside"),
    [
        ((5, 5), SQUARE, True),
        ((15, 5), SQUARE, False),
        ((10, 5), SQUARE, True),  # on an edge
        ((0, 0), SQUARE, True),  # on a corner
        ((2, 8), L_SHAPE, True),
        ((8, 8), L_SHAPE, False),  # in the notch
        ((8, 2), L_SHAPE, True),
        ((-1, -1), L_SHAPE, False),
    ],
)
def test_point_in_polygon_table(point, polygon, inside):
    # given / when / then
    assert point_in_polygon(point, polygon) is inside


@pytest.mark.parametrize(
    ("a", "b", "iou"),
    [
        ((0, 0, 10, 10), (0, 0, 10, 10), 1.0),
        ((0, 0, 10, 10), (5, 0, 15, 10), 50 / 150),
        ((0, 0, 10, 10), (10, 0, 20, 10), 0.0),
        ((0, 0, 10, 10), (2, 2, 4, 4), 4 / 100),
        ((0, 0, 0, 0), (0, 0, 0, 0), 0.0),  # empty boxes give 0, not NaN
    ],
)
def test_iou_table(a, b, iou):
    # given / when / then
    assert iou_matrix(np.array([a]), np.array([b]))[0, 0] == pytest.approx(iou)


def test_iou_matrix_shape_is_tracks_by_faces():
    # given 3 tracks and 2 faces / when / then
    assert iou_matrix(np.zeros((3, 4)), np.zeros((2, 4))).shape == (3, 2)


def test_box_size_is_the_side_of_the_square_of_equal_area():
    # given / when / then
    assert box_size((0, 0, 40, 90)) == pytest.approx(60.0)
    assert box_size((10, 10, 5, 5)) == 0.0


def test_regions_use_the_box_centre():
    # given a zone and a mask
    r = Regions("cam", zones={"a": SQUARE, "b": [(5, 5), (20, 5), (20, 20), (5, 20)]}, masks=[L_SHAPE])
    # when / then a box centred in the overlap of both zones is in both, a box centred in the mask is masked
    assert r.zones_of((6, 6, 8, 8)) == ("a", "b")
    assert r.zones_of((30, 30, 40, 40)) == ()
    assert r.masked((0, 0, 4, 4)) and not r.masked((6, 6, 10, 10))
