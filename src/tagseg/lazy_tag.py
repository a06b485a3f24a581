"""A :class:`~tagseg.TAG` built on first use, so runs that find nothing to segment load no model.

The local engine (:mod:`tagseg.batch`), the Ray workers (:mod:`tagseg.engines.ray`) and the
evaluation (:mod:`tagseg.eval`) all hold their pipeline this way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from tagseg.config import TAGConfig
from tagseg.result import Segmentation

if TYPE_CHECKING:
    from tagseg.interfaces import TextEncoder
    from tagseg.pipeline import TAG

__all__ = ["LazyTAG"]


class LazyTAG:
    """The :class:`~tagseg.TAG` of ``config``, built the first time it is needed (or ``tag``, already built)."""

    def __init__(self, config: TAGConfig, tag: "TAG | None" = None) -> None:
        self.config = config
        self._tag = tag

    @property
    def built(self) -> bool:
        """Whether the models are loaded."""
        return self._tag is not None

    def get(self) -> "TAG":
        """The pipeline, built now if it was not; a :class:`~tagseg.errors.TagsegError` when models or database are missing."""
        if self._tag is None:
            from tagseg.pipeline import TAG

            self._tag = TAG.from_pretrained(self.config)
        return self._tag

    def __call__(self, image: np.ndarray) -> Segmentation:
        return self.get()(image)

    def text_encoder(self) -> "TextEncoder":
        """The pipeline's text tower: the built pipeline's, or loaded alone (no image model)."""
        if self._tag is not None:
            return self._tag.text_encoder
        from tagseg.builder import build_text_encoder

        return build_text_encoder(self.config)
