"""Request bodies of the API and the examples its OpenAPI schema shows."""

from __future__ import annotations

import base64
import io
from typing import Any, Literal

import numpy as np
from PIL import Image

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tagseg.dense_registry import DENSE_METHODS
from tagseg.serve.service import SegmentOptions

DenseMethodName = Literal[tuple(DENSE_METHODS)]  # type: ignore[valid-type]


_MAX_FORMATS = 8
"""Entries of ``formats`` a request may give (repeats included): a form then stays within the
server's field limit, one of each field plus eight (``app._read_segment_request``)."""


class SegmentSettings(BaseModel):
    """Optional per-request settings, as JSON fields or multipart form fields."""

    model_config = ConfigDict(extra="forbid")

    k: int | None = Field(None, ge=1, le=64, description="Number of k-means clusters (segment candidates).")
    top_k: int | None = Field(None, ge=1, le=200, description="Texts retrieved per segment.")
    crf: bool | None = Field(None, description="Refine segment borders with a dense CRF.")
    names: Literal["words", "phrases"] | None = Field(
        None, description="Candidate names: `words` (the paper's single words) or `phrases` (multi-word names too)."
    )
    segmenter: Literal["kmeans", "sam"] | None = Field(
        None,
        description="Stage 1: `kmeans` (DINOv2 k-means) or `sam` (Segment Anything's masks; the server loads its "
        "`sam_model` on the first such request unless it started with `--segmenter sam`).",
    )
    dense_method: DenseMethodName | None = Field(
        None, description="Dense CLIP method of the patch embeddings (docs/dense_methods.md); default: the server's."
    )
    masks: bool = Field(True, description="Include each segment's mask (uncompressed COCO RLE).")
    formats: list[Literal["overlay", "labels"]] = Field(
        default_factory=list,
        max_length=_MAX_FORMATS,
        description="Extra pictures as base64 PNG: `overlay` (photo with names and legend), `labels` (label map).",
    )

    def options(self) -> SegmentOptions:
        return SegmentOptions(
            num_clusters=self.k,
            top_k=self.top_k,
            crf=self.crf,
            names=self.names,
            segmenter=self.segmenter,
            dense_method=self.dense_method,
            masks=self.masks,
            overlay="overlay" in self.formats,
            labels="labels" in self.formats,
        )


class SegmentJSON(SegmentSettings):
    """An image as base64 data or as an http(s) URL, plus optional settings."""

    image_base64: str | None = Field(None, description="The encoded image file, base64 (a `data:` URI prefix is fine).")
    image_url: str | None = Field(None, description="An http(s) URL the server fetches (host allow-list applies).")

    @model_validator(mode="after")
    def _one_image(self) -> "SegmentJSON":
        if (self.image_base64 is None) == (self.image_url is None):
            raise ValueError("give exactly one of image_base64 and image_url")
        return self


class TextsRequest(BaseModel):
    """Texts to add to or remove from the database."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"texts": ["a teal kayak on a lake"]}]})

    texts: list[str] = Field(min_length=1, max_length=10_000)


MULTIPART_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["image"],
    "properties": {
        "image": {"type": "string", "format": "binary", "description": "The image file."},
        "k": {"type": "integer", "minimum": 1, "maximum": 64},
        "top_k": {"type": "integer", "minimum": 1, "maximum": 200},
        "crf": {"type": "boolean"},
        "names": {"type": "string", "enum": ["words", "phrases"]},
        "segmenter": {"type": "string", "enum": ["kmeans", "sam"]},
        "dense_method": {"type": "string", "enum": list(DENSE_METHODS)},
        "masks": {"type": "boolean", "default": True},
        "formats": {"type": "array", "maxItems": _MAX_FORMATS, "items": {"type": "string", "enum": ["overlay", "labels"]}},
    },
    "additionalProperties": False,  # unknown form fields are refused (422)
}

SEGMENT_EXAMPLE: dict[str, Any] = {
    "image": {"height": 240, "width": 320},
    "models": {"features": "facebook/dinov2-base", "embedder": "openai/clip-vit-large-patch14", "text_encoder": "openai/clip-vit-large-patch14"},
    "settings": {"num_clusters": 15, "top_k": 10},
    "segments": [
        {
            "id": 0,
            "label": "sky",
            "score": 0.281,
            "area": 30120,
            "bbox": [0, 0, 320, 110],
            "cluster_ids": [2, 7],
            "candidates": [{"name": "sky", "score": 0.281, "count": 5}, {"name": "cloud", "score": 0.262, "count": 3}],
            "retrieved": [{"text": "blue sky with white clouds", "similarity": 0.301}],
            "rle": {"size": [240, 320], "counts": [0, 110, 130, 110]},
        }
    ],
}

def _example_png() -> str:
    """A real 64x48 PNG (sky over grass), base64, so that the schema's example is a request that works."""
    pixels = np.zeros((48, 64, 3), dtype=np.uint8)
    pixels[:24] = (110, 170, 230)
    pixels[24:] = (60, 140, 50)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


SEGMENT_REQUEST_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "multipart/form-data": {"schema": MULTIPART_SCHEMA},
        "application/json": {
            "schema": SegmentJSON.model_json_schema(),
            "examples": {
                "url": {"summary": "Fetch from a URL", "value": {"image_url": "https://example.com/street.jpg", "k": 10}},
                "base64": {
                    "summary": "Inline base64 with an overlay",
                    "value": {"image_base64": _example_png(), "formats": ["overlay"]},
                },
            },
        },
    },
}
