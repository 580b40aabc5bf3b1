"""Box and polygon arithmetic for the tracker: IoU, centres, zones and masks.

Boxes are (x1, y1, x2, y2) and polygons lists of (x, y) points, all in the pixel coordinates
of the frame given to the tracker.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from streamd.errors import ConfigError

Box = tuple[float, float, float, float]
Point = tuple[float, float]
Polygon = Sequence[Point]


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` (N, 4) with every box of ``b`` (M, 4), as an (N, M) array."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def centre(box: Box) -> Point:
    """The centre of a box."""
    return ((box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0)


def box_size(box: Box) -> float:
    """The side of the square with the box's area (pixels); 0 for an empty box."""
    return float(np.sqrt(max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])))


def shift(box: Box, dx: float, dy: float) -> Box:
    """The box moved by (dx, dy)."""
    return (box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy)


def point_in_polygon(point: Point, polygon: Polygon) -> bool:
    """True when the point is inside the polygon (even-odd rule; points on an edge count as inside)."""
    x, y = point
    inside = False
    n = len(polygon)
    for i in range(n):
        x1, y1 = polygon[i]
        x2, y2 = polygon[(i + 1) % n]
        if _on_segment(x, y, x1, y1, x2, y2):
            return True
        if (y1 > y) != (y2 > y):
            x_cross = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
            if x < x_cross:
                inside = not inside
    return inside


def _on_segment(x: float, y: float, x1: float, y1: float, x2: float, y2: float) -> bool:
    cross = (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1)
    if abs(cross) > 1e-9 * max(1.0, abs(x2 - x1) + abs(y2 - y1)):
        return False
    return min(x1, x2) <= x <= max(x1, x2) and min(y1, y2) <= y <= max(y1, y2)


def check_polygon(polygon: Polygon, where: str) -> tuple[Point, ...]:
    """The polygon as a tuple of float points, or ConfigError naming ``where`` when it is not one."""
    try:
        points = tuple((float(p[0]), float(p[1])) for p in polygon)
        if any(len(p) != 2 for p in polygon):
            raise ValueError
    except (TypeError, ValueError, IndexError):
        raise ConfigError(f"{where}: a polygon is a list of [x, y] pixel points") from None
    if len(points) < 3:
        raise ConfigError(f"{where}: a polygon needs at least 3 points, got {len(points)}")
    return points


class Regions:
    """A camera's named zones (where faces are recorded) and masks (where faces are ignored)."""

    def __init__(self, camera: str, zones: Mapping[str, Polygon] | None = None, masks: Sequence[Polygon] = ()):
        self.zones = {
            name: check_polygon(poly, f"camera {camera}: zone {name!r}") for name, poly in (zones or {}).items()
        }
        self.masks = tuple(check_polygon(poly, f"camera {camera}: mask {i + 1}") for i, poly in enumerate(masks))

    def masked(self, box: Box) -> bool:
        """True when the box's centre lies inside a mask."""
        c = centre(box)
        return any(point_in_polygon(c, m) for m in self.masks)

    def zones_of(self, box: Box) -> tuple[str, ...]:
        """Names of the zones the box's centre lies in, in configuration order."""
        c = centre(box)
        return tuple(name for name, poly in self.zones.items() if point_in_polygon(c, poly))
