"""Overlay and label pictures of a segmentation."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tagseg.render import label_image, overlay, palette, segment_colours
from tagseg.result import Segment, Segmentation


def segmentation(label_map: np.ndarray, names: list[str]) -> Segmentation:
    segments = [Segment(i, name, 0.5, label_map == i, [i]) for i, name in enumerate(names)]
    return Segmentation(label_map=label_map, segments=segments, cluster_map=label_map.copy())


def stripes(height: int, width: int, count: int) -> np.ndarray:
    return np.repeat((np.arange(width) * count // width)[None, :], height, axis=0).astype(np.int32)


def test_palette_is_fixed_and_distinct() -> None:
    assert (palette(5) == palette(300)[:5]).all()
    colours = {tuple(c) for c in palette(300)}
    assert len(colours) == 300


def test_label_image_is_indexed_up_to_256_segments_and_16_bit_beyond() -> None:
    small = segmentation(stripes(8, 12, 3), ["sky", "tree", "road"])
    image = label_image(small)
    assert image.mode == "P" and (np.asarray(image) == small.label_map).all()
    assert image.getpalette()[:9] == palette(3).ravel().tolist()
    many = stripes(4, 600, 300)
    big = label_image(segmentation(many, [f"s{i}" for i in range(300)]))
    assert big.mode == "I;16" and (np.asarray(big) == many).all()


def test_overlay_keeps_the_input_size_and_writes_the_names(tmp_path) -> None:
    photo = np.full((90, 160, 3), 120, dtype=np.uint8)
    result = segmentation(stripes(90, 160, 3), ["sky", "tree", "road"])
    drawn = overlay(photo, result, alpha=0.4)
    assert drawn.size == (160, 90) and drawn.mode == "RGB"
    pixels = np.asarray(drawn)
    tinted = (1 - 0.4) * 120 + 0.4 * palette(3)[1].astype(float)
    assert np.isclose(pixels[80, 60], tinted, atol=1).all()  # a spot no name or legend covers
    # name tags and the legend add black or white text pixels that blending alone never makes
    assert ((pixels == 0).all(axis=2) | (pixels == 255).all(axis=2)).sum() > 100
    plain = np.asarray(overlay(photo, result, alpha=0.0))
    assert (plain[85, 5] == 120).all()
    drawn.save(tmp_path / "overlay.png")
    assert Image.open(tmp_path / "overlay.png").size == (160, 90)


def test_overlay_handles_tiny_images_and_many_segments() -> None:
    assert overlay(np.zeros((14, 20, 3), np.uint8), segmentation(stripes(14, 20, 2), ["a", "b"])).size == (20, 14)
    many = segmentation(stripes(60, 300, 60), [f"thing{i}" for i in range(60)])
    assert overlay(np.zeros((60, 300, 3), np.uint8), many).size == (300, 60)


def test_overlay_refuses_an_image_of_another_size() -> None:
    with pytest.raises(ValueError, match="does not match"):
        overlay(np.zeros((10, 10, 3), np.uint8), segmentation(stripes(8, 8, 2), ["a", "b"]))


def test_a_segment_named_after_a_colour_is_drawn_in_it_and_no_other_segment_looks_like_it() -> None:
    result = segmentation(stripes(90, 160, 4), ["sky", "red", "Sky Blue", "tree"])
    colours = segment_colours(result)
    assert colours[1].tolist() == [255, 0, 0] and colours[2].tolist() == [135, 206, 235]
    for other in (0, 3):
        for named in (1, 2):
            assert np.linalg.norm(colours[other].astype(float) - colours[named].astype(float)) > 80
    assert label_image(result).getpalette()[:12] == colours.ravel().tolist()  # the label PNG matches the overlay
    photo = np.full((90, 160, 3), 120, dtype=np.uint8)
    pixels = np.asarray(overlay(photo, result, alpha=0.5))
    stripe = pixels[:30, 41:79].reshape(-1, 3)  # segment "red", inside its outline, above the legend
    values, counts = np.unique(stripe, axis=0, return_counts=True)
    assert np.isclose(values[counts.argmax()], 0.5 * 120 + 0.5 * np.array([255, 0, 0]), atol=1).all()  # mostly the tint
