"""What the HTTP routes share: the loaded TAG, the inference queue, limits, metrics, database access."""

from __future__ import annotations

import asyncio
import base64
import io
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, TypeVar

import numpy as np
from PIL import Image

from tagseg import __version__
from tagseg.errors import ConfigError, ImageError, ModelNotAvailableError
from tagseg.pipeline import TAG
from tagseg.result import Segmentation
from tagseg.serve.database import DatabaseAccess
from tagseg.serve.errors import ApiError
from tagseg.serve.fetch import FetchPolicy, fetch_image_bytes
from tagseg.serve.metrics import Metrics
from tagseg.serve.queue import InferenceQueue, QueueFull
from tagseg.serve_settings import ServeSettings

T = TypeVar("T")


@dataclass(frozen=True)
class SegmentOptions:
    """Per-request settings: overrides of the pipeline's settings by name (per-call overrides of
    :meth:`TAG.__call__ <tagseg.pipeline.TAG.__call__>`) and which outputs to return."""

    overrides: Mapping[str, Any] = field(default_factory=dict)
    masks: bool = True
    overlay: bool = False
    labels: bool = False


class Service:
    """One loaded model behind a bounded queue; every route goes through here."""

    def __init__(self, tag: TAG, settings: ServeSettings) -> None:
        self.tag = tag
        self.settings = settings
        self.queue = InferenceQueue(settings.workers, settings.queue_size)
        self.database = DatabaseAccess(tag)
        self.started = time.time()
        self.metrics = Metrics(
            {
                "tagseg_queue_depth": ("Requests waiting for a worker.", lambda: self.queue.depth),
                "tagseg_queue_running": ("Requests on a worker.", lambda: self.queue.running),
                "tagseg_database_size": ("Texts in the database.", lambda: len(self.tag.database)),
            }
        )
        self.fetch_policy = FetchPolicy(
            allow_hosts=settings.allow_hosts,
            allow_private=settings.allow_private,
            timeout=settings.fetch_timeout,
            max_bytes=settings.max_upload_bytes,
        )

    @property
    def max_pixels(self) -> int:
        """The largest image accepted: the pipeline's ``max_pixels`` setting (``--max-pixels``)."""
        return self.tag.config.models.max_pixels

    @property
    def model_version(self) -> str:
        """Names the models and the tagseg version; Label Studio shows it next to predictions."""
        if self.settings.model_version:
            return self.settings.model_version
        return f"tagseg-{__version__}:{self.tag.models['features']}+{self.tag.models['embedder']}"

    def check_image(self, data: bytes) -> None:
        """Refuse, before queueing, data that is too big (413) or not an image at all (415)."""
        limit = self.settings.max_upload_bytes
        if len(data) > limit:
            raise ApiError(413, "image_too_large", f"The image is {len(data):,} bytes; the limit is {limit:,} (--max-upload-mb).")
        if not data:
            raise ApiError(415, "not_an_image", "The image data is empty.")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(data)) as image:
                    width, height = image.size
        except Image.DecompressionBombError as error:
            raise ApiError(
                413,
                "too_many_pixels",
                f"The image has too many pixels to decode safely ({error}); this server's limit is "
                f"{self.max_pixels:,} pixels (--max-pixels).",
            ) from None
        except Exception:
            raise ApiError(415, "not_an_image", "The data is not an image in a format this server reads.") from None
        if width * height > self.max_pixels:
            raise ApiError(
                413,
                "too_many_pixels",
                f"The image is {width}x{height} = {width * height:,} pixels; the limit is {self.max_pixels:,} (--max-pixels).",
            )

    async def fetch(self, url: str, policy: FetchPolicy | None = None) -> bytes:
        """Image bytes from an http(s) URL under the fetch policy."""
        return await fetch_image_bytes(url, policy or self.fetch_policy)

    async def segment(
        self, data: bytes, options: SegmentOptions, then: Callable[[np.ndarray, Segmentation], T]
    ) -> T:
        """Check, queue and segment one encoded image; ``then(rgb, result)`` runs on the worker too."""
        self.check_image(data)
        overrides = dict(options.overrides)
        try:
            self.tag.settings_for(**overrides)  # refuse bad settings before queueing
        except ConfigError as error:
            raise ApiError(422, "invalid_setting", str(error)) from None
        try:
            return await self.queue.run(lambda: then(*self._segment_now(data, overrides)), self.settings.request_timeout)
        except QueueFull:
            raise ApiError(
                429,
                "queue_full",
                "Every worker is busy and the queue is full; retry later.",
                headers={"Retry-After": str(self.settings.retry_after)},
            ) from None
        except (TimeoutError, asyncio.TimeoutError):
            raise ApiError(
                504, "timeout", f"Segmentation took longer than {self.settings.request_timeout:g} s."
            ) from None
        except ImageError as error:
            raise ApiError(422, "corrupt_image", str(error)) from None
        except ModelNotAvailableError as error:  # segmenter "sam" asked for, its model not here
            raise ApiError(503, "model_not_available", str(error)) from None

    def _segment_now(self, data: bytes, overrides: dict[str, Any]) -> tuple[np.ndarray, Segmentation]:
        rgb = self.tag.decode(data)
        with self.database.lock.reading():
            result = self.tag(rgb, **overrides)
        self.metrics.image_processed()
        return rgb, result

    def result_json(self, rgb: np.ndarray, result: Segmentation, options: SegmentOptions) -> dict[str, Any]:
        """The per-image JSON (as the CLI writes it), with base64 PNGs when asked for."""
        data = result.to_dict(include_masks=options.masks)
        if options.overlay or options.labels:
            from tagseg import render

            if options.overlay:
                data["overlay_png"] = _png_base64(render.overlay(rgb, result))
            if options.labels:
                data["label_png"] = _png_base64(render.label_image(result))
        return data


def _png_base64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
