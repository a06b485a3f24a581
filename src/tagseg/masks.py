"""Mask helpers for the whole package (numpy only): boxes, run-length encodings, components, polygons.

* :func:`mask_bbox` — COCO box ``(x, y, width, height)``.
* :func:`mask_to_rle` / :func:`rle_to_mask` — uncompressed COCO RLE (the per-image JSON files);
  :func:`coco_rle_string` — the compressed COCO string of the same counts (COCO files).
* :func:`connected_components` / :func:`instances` — 8-connected components of a mask.
* :func:`outer_polygon` / :func:`simplify` — boundary polygons; :func:`region_polygon` — one that
  polygon formats accept (at least 3 vertices, positive area) for any region, a pixel included.
* :func:`mask_to_brush_rle` / :func:`rle_pack` — Label Studio's brush RLE.

Label Studio's brush RLE is the mask as an RGBA byte image (every channel 255 inside the region,
0 outside, rows top to bottom) packed with the thi.ng ``rle-pack`` bit format:

* header: 32 bits number of values, 5 bits word size - 1, then 4 x 4 bits run-length field
  sizes - 1 (Label Studio uses word size 8 and field sizes 3, 4, 8, 16);
* then chunks: 1 flag bit (1 = one value repeated, 0 = literal values), 2 bits naming which
  field size follows, that many bits holding count - 1, then the value (repeat) or the count
  values (literal), each word-size bits; the last byte is padded with zero bits.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "coco_rle_string",
    "connected_components",
    "instances",
    "mask_bbox",
    "mask_to_brush_rle",
    "mask_to_rle",
    "outer_polygon",
    "polygon_area",
    "region_polygon",
    "rle_pack",
    "rle_to_mask",
    "simplify",
]


# ----------------------------------------------------------------------------- boxes and COCO RLE


def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Bounding box ``(x, y, width, height)`` of a boolean mask; zeros when empty."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if len(xs) == 0:
        return (0, 0, 0, 0)
    return (int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1))


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """Uncompressed COCO run-length encoding (column-major, runs start with background)."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    changes = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """Inverse of :func:`mask_to_rle`."""
    height, width = rle["size"]
    values = np.zeros(len(rle["counts"]), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, rle["counts"])
    return flat.reshape((width, height)).T.copy()


def coco_rle_string(counts: list[int]) -> str:
    """COCO's compressed RLE string of uncompressed ``counts`` (what ``pycocotools.mask.encode`` gives)."""
    chars = []
    for i, count in enumerate(counts):
        value = count - counts[i - 2] if i > 2 else count
        more = True
        while more:
            chunk = value & 0x1F
            value >>= 5
            more = value != -1 if chunk & 0x10 else value != 0
            chars.append(chr((chunk | 0x20 if more else chunk) + 48))
    return "".join(chars)


# ----------------------------------------------------------------------------- connected components


def connected_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of a boolean (H, W) mask: ``(labels, count)``, 0 outside, 1..count in raster order."""
    mask = np.asarray(mask, dtype=bool)
    height, width = mask.shape
    padded = np.zeros((height, width + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    steps = np.diff(padded, axis=1)
    rows, starts = np.nonzero(steps == 1)
    ends = np.nonzero(steps == -1)[1]  # exclusive; runs pair up in raster order
    parent = list(range(len(starts)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    row_first = np.searchsorted(rows, np.arange(height + 1)).tolist()
    starts_list, ends_list = starts.tolist(), ends.tolist()
    for row in range(1, height):
        i, i_end, j, j_end = row_first[row - 1], row_first[row], row_first[row], row_first[row + 1]
        while i < i_end and j < j_end:
            if starts_list[i] <= ends_list[j] and starts_list[j] <= ends_list[i]:  # touching, diagonals too
                first, second = sorted((root(i), root(j)))
                parent[second] = first  # the earliest run stays the root: raster-order numbering
            if ends_list[i] < ends_list[j]:
                i += 1
            else:
                j += 1
    roots = np.array([root(i) for i in range(len(starts))], dtype=np.int64)
    _, component = np.unique(roots, return_inverse=True)
    labels = np.zeros(height * width, dtype=np.int32)
    lengths = ends - starts
    first_pixel = rows * width + starts
    offsets = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    labels[np.repeat(first_pixel, lengths) + offsets] = np.repeat(component + 1, lengths)
    return labels.reshape(height, width), int(len(np.unique(roots)))


def instances(mask: np.ndarray) -> list[np.ndarray]:
    """The separate regions of ``mask`` (its 8-connected components) as boolean masks, largest first."""
    components, count = connected_components(mask)
    areas = np.bincount(components.ravel(), minlength=count + 1)[1:]
    return [components == index + 1 for index in np.argsort(-areas, kind="stable")]


# ----------------------------------------------------------------------------- polygons


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


def polygon_area(polygon: np.ndarray) -> float:
    """Area enclosed by a closed polygon (N, 2) (shoelace formula); 0 for fewer than 3 vertices."""
    if len(polygon) < 3:
        return 0.0
    x, y = polygon[:, 0], polygon[:, 1]
    return abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))) / 2.0


def region_polygon(component: np.ndarray, epsilon: float = 1.0) -> np.ndarray:
    """The outline of one 8-connected component as a valid polygon: at least 3 vertices, positive area.

    Usually :func:`outer_polygon`. A region whose pixel-centre outline is degenerate (a pixel, a
    one-pixel-wide line, or one that ``epsilon`` simplifies to a segment) gets the outline of its
    pixels traced at twice the resolution instead: a band reaching a quarter pixel either side of
    the pixel centres (a single pixel becomes a half-pixel square around its centre), clipped to
    the image.
    """
    polygon = outer_polygon(component, epsilon)
    if len(polygon) >= 3 and polygon_area(polygon) > 0.0 or not component.any():
        return polygon
    ys, xs = np.nonzero(component)
    top, left = int(ys.min()), int(xs.min())
    crop = np.asarray(component, dtype=bool)[top : ys.max() + 1, left : xs.max() + 1]
    doubled = outer_polygon(np.kron(crop, np.ones((2, 2), dtype=bool)), min(2.0 * epsilon, 0.5))  # the band is 2 wide
    height, width = component.shape
    return np.clip(doubled / 2.0 - 0.25 + [left, top], 0.0, [width - 1, height - 1])


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


# ----------------------------------------------------------------------------- Label Studio brush RLE


RLE_FIELD_SIZES = (3, 4, 8, 16)
_MAX_RUN = 1 << RLE_FIELD_SIZES[-1]


def rle_pack(values: np.ndarray, word_size: int = 8) -> bytes:
    """Pack a 1-D array of unsigned ``word_size``-bit values in the rle-pack format above."""
    values = np.asarray(values).ravel()
    bits = [f"{values.size:032b}", f"{word_size - 1:05b}", *(f"{s - 1:04b}" for s in RLE_FIELD_SIZES)]
    if values.size:
        starts = np.flatnonzero(np.concatenate([[True], values[1:] != values[:-1]]))
        lengths = np.diff(np.concatenate([starts, [values.size]]))
        for value, length in zip(values[starts].tolist(), lengths.tolist()):
            word = f"{value:0{word_size}b}"
            while length > 0:
                count = min(length, _MAX_RUN)
                bits.append(("1" if count > 1 else "0") + _count_field(count) + word)
                length -= count
    stream = "".join(bits)
    stream += "0" * (-len(stream) % 8)
    return int(stream, 2).to_bytes(len(stream) // 8, "big")


def _count_field(count: int) -> str:
    """2-bit field-size class and ``count - 1`` in the smallest field that holds it."""
    for size_class, size in enumerate(RLE_FIELD_SIZES):
        if count - 1 < (1 << size):
            return f"{size_class:02b}{count - 1:0{size}b}"
    raise ValueError(f"run of {count} is longer than {_MAX_RUN}")


def mask_to_brush_rle(mask: np.ndarray) -> list[int]:
    """A boolean ``(H, W)`` mask as Label Studio's ``value.rle`` list of byte values."""
    rgba = np.repeat(np.asarray(mask, dtype=bool).ravel().astype(np.uint8) * 255, 4)
    return list(rle_pack(rgba))
