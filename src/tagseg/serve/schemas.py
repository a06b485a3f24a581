"""Request bodies of the API and the examples its OpenAPI schema shows."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Annotated, Any, Literal

import numpy as np
from PIL import Image

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, create_model, model_validator

from tagseg.config import Setting, declared_settings
from tagseg.serve.service import SegmentOptions

_MAX_FORMATS = 8
"""Entries of ``formats`` a request may give (repeats included): a form then stays within the
server's field limit, one of each field plus eight (``routes.segment._read_segment_request``)."""


@dataclass(frozen=True)
class RequestSetting:
    """A pipeline setting a request may change: its request field, the request's own limits and,
    where the request takes less than the setting does, its type and description."""

    field: str
    setting: str
    limits: dict[str, Any] = dataclass_field(default_factory=dict)
    kind: Any = None
    help: str | None = None
    note: str = ""


REQUEST_SETTINGS = (
    RequestSetting("k", "num_clusters", {"ge": 1, "le": 64}, int, "Number of k-means clusters (segment candidates)."),
    RequestSetting("top_k", "top_k", {"ge": 1, "le": 200}),
    RequestSetting("crf", "crf", kind=bool),
    RequestSetting("names", "names"),
    RequestSetting(
        "segmenter", "segmenter",
        note=" The server loads its `sam_model` on the first such request unless it started with `--segmenter sam`.",
    ),
    RequestSetting("dense_method", "dense_method", note=" Default: the server's."),
)
"""The per-request settings; type, choices and description come from the setting's declaration."""

_DECLARED: dict[str, Setting] = {item.name: item for item in declared_settings()}


def _request_type(request: RequestSetting) -> Any:
    declared = _DECLARED[request.setting]
    if request.kind is not None:
        return request.kind
    return Literal[declared.choices] if declared.choices else declared.type  # type: ignore[valid-type]


def _request_field(request: RequestSetting) -> tuple[Any, Any]:
    description = (request.help or _DECLARED[request.setting].help) + request.note
    return (_request_type(request) | None, Field(None, description=description, **request.limits))


class _RequestSettings(BaseModel):
    """The behaviour of :data:`SegmentSettings` (its fields are generated below)."""

    model_config = ConfigDict(extra="forbid")

    def options(self) -> SegmentOptions:
        """The request's setting overrides (by setting name) and outputs."""
        fields = self.model_dump()
        overrides = {r.setting: fields[r.field] for r in REQUEST_SETTINGS if fields[r.field] is not None}
        formats = fields["formats"]
        return SegmentOptions(overrides, masks=fields["masks"], overlay="overlay" in formats, labels="labels" in formats)


SegmentSettings = create_model(  # type: ignore[call-overload]
    "SegmentSettings",
    __base__=_RequestSettings,
    __doc__="Optional per-request settings, as JSON fields or multipart form fields.",
    **{request.field: _request_field(request) for request in REQUEST_SETTINGS},
    masks=(bool, Field(True, description="Include each segment's mask (uncompressed COCO RLE).")),
    formats=(
        list[Literal["overlay", "labels"]],
        Field(
            default_factory=list,
            max_length=_MAX_FORMATS,
            description="Extra pictures as base64 PNG: `overlay` (photo with names and legend), `labels` (label map).",
        ),
    ),
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
        **{
            r.field: TypeAdapter(Annotated[_request_type(r), Field(**r.limits)]).json_schema()  # type: ignore[valid-type]
            for r in REQUEST_SETTINGS
        },
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
