"""Pictures of a :class:`~tagseg.result.Segmentation`: an annotated overlay and an indexed label PNG.

Each segment has one colour, the same in the overlay, its legend and the label PNG
(:func:`segment_colours`): a segment named after a colour ("red", "sky blue": any CSS colour name)
is drawn in that colour, so a tint never contradicts its name; the others take the fixed
:func:`palette` in turn, skipping its entries close to a colour already drawn.
"""

from __future__ import annotations

import colorsys
import math

import numpy as np
from PIL import Image, ImageColor, ImageDraw, ImageFont

from tagseg.result import Segmentation

__all__ = ["label_image", "overlay", "palette", "segment_colours"]

# 20 well-separated colours (Kelly's list without white/black, then bright complements).
_BASE_COLOURS = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
)
_GOLDEN_ANGLE = 0.381966  # fraction of the hue circle between successive generated colours

Box = tuple[int, int, int, int]  # (left, top, right, bottom)


def palette(n: int) -> np.ndarray:
    """``n`` distinct RGB colours as an ``(n, 3)`` uint8 array; entry ``i`` never depends on ``n``."""
    colours = list(_BASE_COLOURS[:n])
    for i in range(len(colours), n):
        hue = (i * _GOLDEN_ANGLE) % 1.0
        saturation = (0.55, 0.8, 0.95)[i % 3]
        value = (0.95, 0.75, 0.55)[(i // 3) % 3]
        colours.append(tuple(round(255 * c) for c in colorsys.hsv_to_rgb(hue, saturation, value)))
    return np.array(colours, dtype=np.uint8).reshape(n, 3)


_CLOSE = 80.0  # RGB distance under which two colours are hard to tell apart in a tint


def colour_of_name(name: str) -> tuple[int, int, int] | None:
    """The RGB colour a segment name is ("red", "Grey", "sky blue": CSS colour names, spaces ignored), else None."""
    key = "".join(name.lower().split())
    return ImageColor.getrgb(key)[:3] if key in ImageColor.colormap else None  # type: ignore[return-value]


def segment_colours(result: Segmentation) -> np.ndarray:
    """Each segment's colour as an ``(n, 3)`` uint8 array (at least one row): its name's colour when it is
    named after a colour, else the next :func:`palette` entry not close to a colour already used."""
    named = [colour_of_name(segment.label) for segment in result.segments]
    used = [np.array(colour, dtype=np.float32) for colour in named if colour is not None]
    spare = list(palette(len(result.segments) + len(used) * 4))
    colours = []
    for colour in named:
        if colour is None:
            far = [i for i, c in enumerate(spare) if all(np.linalg.norm(c.astype(np.float32) - u) > _CLOSE for u in used)]
            colour = spare.pop(far[0] if far else 0)
            used.append(np.asarray(colour, dtype=np.float32))
        colours.append(colour)
    return np.array(colours or [palette(1)[0]], dtype=np.uint8).reshape(-1, 3)


def label_image(result: Segmentation) -> Image.Image:
    """The label map as an image whose pixel values are segment ids.

    Up to 256 segments: an indexed (mode ``P``) image with :func:`segment_colours`, which any viewer
    shows in colour. PNG palettes hold at most 256 entries, so with more segments the image is
    16-bit greyscale (mode ``I;16``): pixel value = segment id, no palette.
    """
    count = len(result.segments)
    if count <= 256:
        image = Image.fromarray(result.label_map.astype(np.uint8), mode="P")
        image.putpalette(segment_colours(result).ravel().tolist())
        return image
    return Image.fromarray(result.label_map.astype(np.uint16))


def overlay(image: np.ndarray, result: Segmentation, *, alpha: float = 0.5) -> Image.Image:
    """The photo with translucent segment colours, segment outlines, names and a legend.

    ``image`` is the ``(H, W, 3)`` uint8 RGB photo that was segmented. The output has exactly the
    input's size: the legend (colour, name and share of the image, largest segment first) sits in
    the corner where it hides the fewest names. A name is written on every segment large enough
    to carry it without covering another name; the legend lists every segment.
    """
    rgb = np.asarray(image)
    if rgb.shape[:2] != result.image_size or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(
            f"image of shape {rgb.shape} does not match the segmentation's size {result.image_size} (H, W, 3)"
        )
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    colours = segment_colours(result)
    painted = colours[result.label_map]
    blended = (1.0 - alpha) * rgb.astype(np.float32) + alpha * painted.astype(np.float32)
    edges = _edges(result.label_map)
    blended[edges] = painted[edges]
    canvas = Image.fromarray(np.clip(blended + 0.5, 0, 255).astype(np.uint8))

    height, width = result.image_size
    font_size = max(9, round(min(height, width) / 28))
    font = ImageFont.load_default(size=font_size)
    legend_font = ImageFont.load_default(size=max(8, round(font_size * 0.8)))
    draw = ImageDraw.Draw(canvas, "RGBA")

    order = sorted(range(len(result.segments)), key=lambda i: -result.segments[i].area)
    min_area = 0.002 * height * width
    tags = [
        (i, _text_box(draw, result.segments[i].label, font, _anchor(result.segments[i].mask)))
        for i in order
        if result.segments[i].area >= min_area
    ]
    legend = _legend_box(draw, result, order, legend_font, [box for _, box in tags])
    placed: list[Box] = [legend[0]] if legend else []
    for i, box in tags:
        spot = _free_spot(box, placed, width, height)
        if spot is not None:
            placed.append(spot)
            _draw_tag(draw, result.segments[i].label, font, spot, tuple(int(c) for c in colours[i]))
    if legend:
        _draw_legend(draw, legend[1], legend_font, legend[0], colours)
    return canvas


def _edges(label_map: np.ndarray) -> np.ndarray:
    """Pixels whose right or lower neighbour belongs to another segment, thickened on large images."""
    edges = np.zeros(label_map.shape, dtype=bool)
    edges[:, :-1] |= label_map[:, :-1] != label_map[:, 1:]
    edges[:-1, :] |= label_map[:-1, :] != label_map[1:, :]
    for _ in range(max(1, round(min(label_map.shape) / 400)) - 1):
        grown = edges.copy()
        grown[1:] |= edges[:-1]
        grown[:, 1:] |= edges[:, :-1]
        edges = grown
    return edges


def _anchor(mask: np.ndarray) -> tuple[int, int]:
    """A point deep inside ``mask`` (x, y): the innermost pixels by repeated erosion, nearest their centre."""
    step = max(1, math.ceil(max(mask.shape) / 160))
    current = np.pad(mask[::step, ::step], 1)
    while True:
        eroded = current.copy()
        eroded[1:] &= current[:-1]
        eroded[:-1] &= current[1:]
        eroded[:, 1:] &= current[:, :-1]
        eroded[:, :-1] &= current[:, 1:]
        if not eroded.any():
            break
        current = eroded
    ys, xs = np.nonzero(current)
    nearest = int(np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2))
    return (int(xs[nearest] - 1) * step + step // 2, int(ys[nearest] - 1) * step + step // 2)


def _text_box(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont, centre: tuple[int, int]) -> Box:
    """The padded box of ``text`` centred on ``centre``."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = max(2, round(font.size * 0.25))
    w, h = right - left + 2 * pad, bottom - top + 2 * pad
    x, y = centre[0] - w // 2, centre[1] - h // 2
    return (x, y, x + w, y + h)


def _overlap(a: Box, b: Box) -> int:
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def _shift_inside(box: Box, width: int, height: int) -> Box:
    dx = max(0, -box[0]) - max(0, box[2] - width)
    dy = max(0, -box[1]) - max(0, box[3] - height)
    return (box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy)


def _free_spot(box: Box, placed: list[Box], width: int, height: int) -> Box | None:
    """``box`` moved inside the image and, if needed, up or down to avoid ``placed``; None if no room."""
    h = box[3] - box[1]
    for dy in (0, -h, h, -2 * h, 2 * h):
        spot = _shift_inside((box[0], box[1] + dy, box[2], box[3] + dy), width, height)
        if all(_overlap(spot, other) == 0 for other in placed):
            return spot
    return None


def _contrast(colour: tuple[int, ...]) -> tuple[int, int, int]:
    """Black or white, whichever reads better on ``colour``."""
    luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
    return (0, 0, 0) if luminance > 140 else (255, 255, 255)


def _draw_tag(
    draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont, box: Box, colour: tuple[int, ...]
) -> None:
    """A name on a box of the segment's colour, outlined and lettered in the contrasting colour."""
    ink = _contrast(colour)
    draw.rectangle(box, fill=(*colour, 235), outline=(*ink, 255))
    draw.text(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), text, font=font, fill=ink, anchor="mm")


def _legend_rows(result: Segmentation, order: list[int], max_rows: int) -> list[tuple[int | None, str]]:
    """``(segment index or None, text)`` rows, largest first; a last row counts the segments left out."""
    total = max(1, result.label_map.size)
    rows: list[tuple[int | None, str]] = [
        (i, f"{result.segments[i].label}  {100 * result.segments[i].area / total:.1f}%") for i in order
    ]
    if len(rows) > max_rows:
        rows = rows[: max(0, max_rows - 1)] + [(None, f"+{len(rows) - max_rows + 1} more")]
    return rows


def _legend_box(
    draw: ImageDraw.ImageDraw,
    result: Segmentation,
    order: list[int],
    font: ImageFont.FreeTypeFont,
    tags: list[Box],
) -> tuple[Box, list[tuple[int | None, str]]] | None:
    """The legend's box in the corner covering the fewest name tags, and its rows; None without segments."""
    if not order:
        return None
    height, width = result.image_size
    line = round(font.size * 1.3)
    pad = max(2, round(font.size * 0.4))
    rows = _legend_rows(result, order, max(1, (int(0.7 * height) - 2 * pad) // line))
    text_width = max(draw.textlength(text, font=font) for _, text in rows)
    w = min(width, round(text_width + line + 3 * pad))
    h = min(height, len(rows) * line + 2 * pad)
    corners = [(width - w, 0), (0, 0), (width - w, height - h), (0, height - h)]
    boxes = [(x, y, x + w, y + h) for x, y in corners]
    best = min(boxes, key=lambda box: sum(_overlap(box, tag) for tag in tags))
    return best, rows


def _draw_legend(
    draw: ImageDraw.ImageDraw,
    rows: list[tuple[int | None, str]],
    font: ImageFont.FreeTypeFont,
    box: Box,
    colours: np.ndarray,
) -> None:
    line = round(font.size * 1.3)
    pad = max(2, round(font.size * 0.4))
    draw.rectangle(box, fill=(0, 0, 0, 170))
    swatch = font.size
    for row, (index, text) in enumerate(rows):
        top = box[1] + pad + row * line
        if index is not None:
            colour = tuple(int(c) for c in colours[index])
            draw.rectangle((box[0] + pad, top, box[0] + pad + swatch, top + swatch), fill=colour, outline=(255, 255, 255))
        draw.text((box[0] + 2 * pad + swatch, top + swatch / 2), text, font=font, fill=(255, 255, 255), anchor="lm")
