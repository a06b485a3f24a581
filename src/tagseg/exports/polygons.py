"""Outer boundary polygons of masks (numpy only): Moore-neighbour tracing, then Douglas-Peucker."""

from __future__ import annotations

import numpy as np

__all__ = ["outer_polygon", "simplify"]

# Clockwise on screen (y down), starting west: (dy, dx).
_DIRECTIONS = ((0, -1), (-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1))
_INDEX = {d: i for i, d in enumerate(_DIRECTIONS)}


def outer_polygon(component: np.ndarray, epsilon: float = 1.0) -> np.ndarray:
    """The outer boundary of one 8-connected component as (N, 2) pixel coordinates ``(x, y)``.

    Vertices are centres of boundary pixels, clockwise on screen, simplified with tolerance
    ``epsilon`` pixels (0 keeps every boundary pixel). Filling the polygon with its outline (as
    ``PIL.ImageDraw.polygon`` or OpenCV's ``fillPoly`` do) gives back the component without holes.
    """
    ys, xs = np.nonzero(component)
    if len(ys) == 0:
        return np.zeros((0, 2))
    top, left = int(ys.min()), int(xs.min())
    crop = np.pad(np.asarray(component, dtype=bool)[top : ys.max() + 1, left : xs.max() + 1], 1)
    row = int(np.flatnonzero(crop.any(axis=1))[0])
    start = (row, int(np.flatnonzero(crop[row])[0]))
    points = [start]
    current, back = start, 0  # the west neighbour of the first pixel in raster order is outside
    first_step = None
    for _ in range(8 * int(crop.sum()) + 8):
        for turn in range(1, 9):
            direction = (back + turn) % 8
            dy, dx = _DIRECTIONS[direction]
            candidate = (current[0] + dy, current[1] + dx)
            if crop[candidate]:
                break
        else:
            break  # a single pixel
        previous = _DIRECTIONS[(direction - 1) % 8]
        back = _INDEX[(previous[0] - dy, previous[1] - dx)]
        if first_step is None:
            first_step = (current, candidate)
        elif (current, candidate) == first_step:
            break
        current = candidate
        points.append(current)
    if len(points) > 1 and points[-1] == start:
        points.pop()
    polygon = np.array([(x + left - 1, y + top - 1) for y, x in points], dtype=np.float64)
    return simplify(polygon, epsilon) if epsilon > 0 else polygon


def simplify(polygon: np.ndarray, epsilon: float) -> np.ndarray:
    """Douglas-Peucker simplification of a closed polygon (N, 2): vertices within ``epsilon`` of the kept outline go."""
    if len(polygon) < 4:
        return polygon
    closed = np.vstack([polygon, polygon[:1]])
    keep = np.zeros(len(closed), dtype=bool)
    keep[[0, -1]] = True
    stack = [(0, len(closed) - 1)]
    while stack:
        i, j = stack.pop()
        if j <= i + 1:
            continue
        a, b = closed[i], closed[j]
        between = closed[i + 1 : j]
        chord = b - a
        length = float(np.hypot(*chord))
        if length == 0.0:
            distances = np.hypot(*(between - a).T)
        else:
            distances = np.abs(chord[0] * (between[:, 1] - a[1]) - chord[1] * (between[:, 0] - a[0])) / length
        k = int(np.argmax(distances))
        if distances[k] > epsilon:
            keep[i + 1 + k] = True
            stack += [(i, i + 1 + k), (i + 1 + k, j)]
    return closed[keep][:-1]
