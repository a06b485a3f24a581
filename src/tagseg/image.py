"""Turn whatever a user hands us (path, bytes, file object, PIL image, array) into RGB pixels.

:func:`load_image` is the single entry point. It returns an ``(H, W, 3)`` C-contiguous ``uint8``
array in RGB order and raises :class:`~tagseg.errors.ImageError` with a readable message, naming
the file where there is one, for anything that is not a usable image.

Conventions:

* EXIF orientation is applied, so the array is upright as a photo viewer shows it.
* Transparency (RGBA, LA, PA, palette images with a transparent colour) is composited onto a
  **white** background: segmenting a cut-out object on white matches what a viewer shows.
* Images with more than 8 bits per sample (PIL modes ``I;16*`` and ``I``, ``uint16`` arrays) are
  stretched linearly from their own value range (min..max) to 0..255. Such files often hold
  10-14-bit data, which a fixed division by 257 would darken and PIL's ``convert("L")`` would
  clip to white. A constant image becomes black.
* Float images (PIL mode ``F``, float arrays) are read as values in [0, 1]. Mode ``F`` files whose
  values leave [0, 1] are stretched like 16-bit ones; float arrays outside [0, 1] are refused.
* Animated and multi-page files give their first frame.
* The pixel count is checked against ``max_pixels`` from the header, before any pixel is decoded.
  Pillow's own ``PIL.Image.MAX_IMAGE_PIXELS`` guard (an error above twice that size) still applies on
  top; its ``DecompressionBombWarning`` below that is silenced, as the ``max_pixels`` check governs.
* PostScript (EPS) is refused: Pillow would hand it to Ghostscript, an external interpreter.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps

from tagseg.config import ModelSettings
from tagseg.errors import ConfigError, ImageError
from tagseg.files import is_glob_pattern, is_uri

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO, Image.Image, np.ndarray]

# Errors Pillow raises while decoding damaged or unsupported data.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError)

# Formats whose decoding runs an external program (Ghostscript for EPS).
_REFUSED_FORMATS = frozenset({"EPS"})
MIN_SIDE = 14
"""The shortest image side accepted, in pixels (a DINOv2 patch)."""

_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
# Modes whose transparency is one colour or palette entry named in ``image.info["transparency"]``.
_KEYED_TRANSPARENCY_MODES = frozenset({"P", "L", "RGB"})
_WIDE_INTEGER_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})


def load_image(
    source: ImageSource, *, max_pixels: int = ModelSettings.max_pixels, min_side: int = MIN_SIDE, copy: bool = True
) -> np.ndarray:
    """Load ``source`` as an RGB ``uint8`` array of shape ``(H, W, 3)``.

    ``source`` may be a path (``str`` or ``os.PathLike``), encoded bytes, a binary file object,
    a ``PIL.Image.Image`` or a numpy array (``HxW``, ``HxWx1``, ``HxWx3``, ``HxWx4`` of ``uint8``,
    ``uint16``, ``bool`` or float in [0, 1]). The result is a new array, never a view of the
    input, except with ``copy=False``: an RGB array that needs no conversion (``(H, W, 3)``
    C-contiguous ``uint8``, e.g. one this function returned) is then checked and returned itself. Images with more than ``max_pixels`` pixels or a side shorter than ``min_side``
    are refused with :class:`~tagseg.errors.ImageError`.
    """
    if max_pixels < 1:
        raise ConfigError(f"max_pixels must be at least 1, got {max_pixels}")
    if min_side < 1:
        raise ConfigError(f"min_side must be at least 1, got {min_side}")

    if isinstance(source, np.ndarray):
        return _from_array(source, max_pixels=max_pixels, min_side=min_side, copy=copy)
    if isinstance(source, Image.Image):
        name = getattr(source, "filename", "") or "the PIL image"
        return _from_pil(source, str(name), max_pixels=max_pixels, min_side=min_side)
    if isinstance(source, (str, os.PathLike)):
        if not os.fspath(source):
            raise ImageError("the image path is empty")
        return _from_path(Path(source), max_pixels=max_pixels, min_side=min_side)
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageError("the image data is empty (0 bytes)")
        return _from_stream(io.BytesIO(source), "the image data", max_pixels=max_pixels, min_side=min_side)
    if hasattr(source, "read"):
        name = getattr(source, "name", None)
        name = name if isinstance(name, str) and name else "the image stream"
        return _from_stream(source, name, max_pixels=max_pixels, min_side=min_side)
    raise ImageError(
        f"cannot load an image from a {type(source).__name__}; pass a file path, bytes, a binary file "
        "object, a PIL image or a numpy array"
    )


@dataclass(frozen=True)
class InputProblem:
    """Why one input of a batch cannot be segmented, and what to do about it."""

    input: str
    reason: str
    fix: str


def check_inputs(inputs: Iterable[str | os.PathLike[str]], *, max_pixels: int = ModelSettings.max_pixels) -> list[InputProblem]:
    """The inputs of a batch that cannot be segmented, found without loading any model or decoding any pixel.

    A file is checked as :func:`load_image` checks it, from its header only (milliseconds: corrupt or
    truncated pixel data is found by the batch when it decodes); a path that does not exist and is no glob
    pattern or URL is reported missing. Folders, glob patterns and URLs are left to the batch,
    which expands them.
    """
    problems = []
    for item in inputs:
        text = os.fspath(item)
        path = Path(text)
        if is_uri(text) or path.is_dir() or is_glob_pattern(text):
            continue
        if not path.exists():
            problems.append(InputProblem(text, f"{text}: no such file or folder", "check the path"))
            continue
        try:
            with _opened(path) as stream, _identified(stream, text) as image:
                width, height = image.size  # from the header: no pixel is decoded
        except ImageError as error:
            problems.append(InputProblem(text, str(error), "replace it with a readable image, or leave it out"))
            continue
        try:
            _check_size(width, height, text, max_pixels=max_pixels, min_side=MIN_SIDE)
        except ImageError as error:
            problems.append(InputProblem(text, str(error), "leave it out"))
    return problems


@contextmanager
def _opened(path: Path) -> Iterator[BinaryIO]:
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if path.is_dir():
        raise ImageError(f"{path}: is a directory, not an image file")
    try:
        stream = path.open("rb")
    except OSError as error:
        raise ImageError(f"{path}: cannot be read ({error.strerror or error})") from error
    with stream:
        if path.stat().st_size == 0:
            raise ImageError(f"{path}: the file is empty (0 bytes)")
        yield stream


def _from_path(path: Path, *, max_pixels: int, min_side: int) -> np.ndarray:
    with _opened(path) as stream:
        return _from_stream(stream, str(path), max_pixels=max_pixels, min_side=min_side)


def _from_stream(stream: BinaryIO, name: str, *, max_pixels: int, min_side: int) -> np.ndarray:
    with _identified(stream, name) as image:
        return _from_pil(image, name, max_pixels=max_pixels, min_side=min_side)


@contextmanager
def _identified(stream: BinaryIO, name: str) -> Iterator[Image.Image]:
    """The image in ``stream`` opened lazily (header read, no pixel decoded), or the :class:`ImageError` saying why not."""
    if not _is_seekable(stream):
        stream = io.BytesIO(stream.read())
    Image.init()  # registers every installed plugin, so the list below is complete
    formats = [plugin for plugin in Image.ID if plugin not in _REFUSED_FORMATS]
    try:
        with warnings.catch_warnings():  # tagseg's own max_pixels check speaks for the size
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(stream, formats=formats)
    except Image.DecompressionBombError as error:
        raise ImageError(f"{name}: too large to decode safely ({error})") from error
    except Image.UnidentifiedImageError as error:
        raise ImageError(f"{name}: not an image file, or a format Pillow cannot read") from error
    except _DECODE_ERRORS as error:
        raise ImageError(f"{name}: not a readable image ({error})") from error
    with image:
        yield image


def _is_seekable(stream: BinaryIO) -> bool:
    try:
        return bool(stream.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _from_pil(image: Image.Image, name: str, *, max_pixels: int, min_side: int) -> np.ndarray:
    # Image.size comes from the header: check it before any pixel is decoded.
    _check_size(image.width, image.height, name, max_pixels=max_pixels, min_side=min_side)
    try:
        image.load()  # a full decode, so truncated or corrupt data fails here
    except Image.DecompressionBombError as error:
        raise ImageError(f"{name}: too large to decode safely ({error})") from error
    except _DECODE_ERRORS as error:
        raise ImageError(f"{name}: the image data is truncated or corrupt ({error})") from error
    image = _upright(image)
    colour, alpha = _pil_to_arrays(image, name)
    return _compose(colour, alpha)


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; damaged EXIF metadata is ignored rather than failing the image."""
    try:
        return ImageOps.exif_transpose(image)
    except _DECODE_ERRORS:
        return image


def _pil_to_arrays(image: Image.Image, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Split a decoded PIL image into 8-bit colour ``(H, W, 1 or 3)`` and optional 8-bit alpha ``(H, W)``."""
    mode = image.mode
    if mode == "La":  # premultiplied; Pillow converts it only to LA
        image = image.convert("LA")
    if mode in _ALPHA_MODES or (mode in _KEYED_TRANSPARENCY_MODES and "transparency" in image.info):
        rgba = np.asarray(image.convert("RGBA"))
        return rgba[..., :3], rgba[..., 3]
    if mode in _WIDE_INTEGER_MODES:
        return _stretch(np.asarray(image))[..., None], None
    if mode == "F":
        values = np.asarray(image)
        if not np.isfinite(values).all():
            raise ImageError(f"{name}: the float image contains NaN or infinite values")
        if values.min() >= 0.0 and values.max() <= 1.0:
            return _unit_float_to_uint8(values)[..., None], None
        return _stretch(values)[..., None], None
    try:
        return np.asarray(image.convert("RGB")), None
    except ValueError as error:
        raise ImageError(f"{name}: unsupported colour mode {image.mode!r}") from error


def _from_array(array: np.ndarray, *, max_pixels: int, min_side: int, copy: bool = True) -> np.ndarray:
    if array.ndim == 3 and array.shape[2] in (1, 3, 4):
        channels = array
    elif array.ndim == 2:
        channels = array[..., None]
    else:
        raise ImageError(
            f"an image array must have shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got {array.shape}"
        )
    if array.size == 0:
        raise ImageError(f"the image array is empty (shape {array.shape})")
    height, width = channels.shape[:2]
    _check_size(width, height, "the image array", max_pixels=max_pixels, min_side=min_side)
    if not copy and array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3 and array.flags.c_contiguous:
        return array

    if array.dtype == np.uint8:
        as_uint8 = channels
    elif array.dtype == np.bool_:
        as_uint8 = channels.astype(np.uint8) * np.uint8(255)
    elif array.dtype == np.uint16:
        as_uint8 = _uint16_channels(channels)
    elif np.issubdtype(array.dtype, np.floating):
        as_uint8 = _float_channels(channels)
    else:
        raise ImageError(
            f"image arrays must be uint8, uint16, bool or float in [0, 1]; got {array.dtype} "
            "(for 0..255 integers use array.astype(np.uint8))"
        )
    if as_uint8.shape[2] == 4:
        return _compose(as_uint8[..., :3], as_uint8[..., 3])
    return _compose(as_uint8, None)


def _uint16_channels(channels: np.ndarray) -> np.ndarray:
    """Colour stretched by its joint range; alpha (4th channel) scaled from the full 16-bit range."""
    colour = _stretch(channels[..., :3])
    if channels.shape[2] < 4:
        return colour
    alpha = ((channels[..., 3].astype(np.uint32) + 128) // 257).astype(np.uint8)
    return np.concatenate([colour, alpha[..., None]], axis=2)


def _float_channels(channels: np.ndarray) -> np.ndarray:
    if not np.isfinite(channels).all():
        raise ImageError("the float image array contains NaN or infinite values")
    low, high = float(channels.min()), float(channels.max())
    if low < 0.0 or high > 1.0:
        raise ImageError(f"float image arrays must hold values in [0, 1]; got values from {low:g} to {high:g}")
    return _unit_float_to_uint8(channels)


def _unit_float_to_uint8(values: np.ndarray) -> np.ndarray:
    return np.rint(values.astype(np.float32) * 255.0).astype(np.uint8)


def _stretch(values: np.ndarray) -> np.ndarray:
    """Map the array's own min..max linearly onto 0..255 (all channels together); constant -> 0."""
    values = values.astype(np.float64)
    low, high = values.min(), values.max()
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.rint((values - low) * (255.0 / (high - low))).astype(np.uint8)


def _compose(colour: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """RGB ``uint8`` from 1- or 3-channel colour, with optional alpha composited onto white."""
    if colour.shape[2] == 1:
        colour = np.repeat(colour, 3, axis=2)
    if alpha is None:
        return np.array(colour, dtype=np.uint8, order="C", copy=True)
    weight = alpha.astype(np.uint32)[..., None]
    blended = (colour.astype(np.uint32) * weight + 255 * (255 - weight) + 127) // 255
    return np.ascontiguousarray(blended.astype(np.uint8))


def _check_size(width: int, height: int, name: str, *, max_pixels: int, min_side: int) -> None:
    if width < min_side or height < min_side:
        raise ImageError(
            f"{name}: the image is {width}x{height} pixels; both sides must be at least {min_side} pixels"
        )
    pixels = width * height
    if pixels > max_pixels:
        raise ImageError(
            f"{name}: the image is {width}x{height} pixels ({pixels:,}), more than the limit of "
            f"{max_pixels:,}; if you trust this file, raise the limit: --max-pixels N (tagseg segment, "
            "tagseg serve), max_pixels = N in [models] of a settings file, or TAG.from_pretrained(..., max_pixels=N)"
        )
