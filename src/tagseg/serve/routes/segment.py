"""``POST /v1/segment``: one image, as a multipart upload or JSON (base64 or a URL), segmented and named."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from tagseg.serve.errors import ApiError, error_responses
from tagseg.serve.routes import service_of
from tagseg.serve.schemas import SEGMENT_EXAMPLE, SEGMENT_REQUEST_BODY, SegmentJSON, SegmentSettings
from tagseg.serve.service import Service

_FORM_FIELDS = frozenset({"image", *SegmentSettings.model_fields})

router = APIRouter()


@router.post(
    "/v1/segment",
    tags=["segmentation"],
    summary="Segment one image and name its segments",
    description=(
        "Send the image as a multipart upload (field `image`) or as JSON with `image_base64` or `image_url`. "
        "The answer is the per-image JSON that `tagseg segment` writes."
    ),
    openapi_extra={"requestBody": SEGMENT_REQUEST_BODY},
    responses={
        200: {"description": "Named segments", "content": {"application/json": {"example": SEGMENT_EXAMPLE}}},
        **error_responses(400, 413, 415, 422, 429, 502, 503, 504),
    },
)
async def segment(request: Request, service: Service = Depends(service_of)) -> JSONResponse:
    data, fields = await _read_segment_request(request, service)
    options = fields.options()
    body = await service.segment(data, options, lambda rgb, result: service.result_json(rgb, result, options))
    return JSONResponse(body)


async def _read_segment_request(request: Request, service: Service) -> tuple[bytes, SegmentSettings]:
    """The image bytes and settings of a multipart or JSON segmentation request."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        form = await request.form(max_files=1, max_fields=len(_FORM_FIELDS) + 8)
        unknown = sorted(set(form.keys()) - _FORM_FIELDS)
        if unknown:
            raise ApiError(422, "unknown_field", f"Unknown form field(s): {', '.join(unknown)}.")
        repeated = sorted({key for key in form.keys() if key != "formats" and len(form.getlist(key)) > 1})
        if repeated:
            raise ApiError(422, "repeated_field", f"Give each form field once: {', '.join(repeated)} repeated.")
        upload = form.get("image")
        if not isinstance(upload, UploadFile):
            raise ApiError(422, "missing_image", "Send the image as a file in the form field 'image'.")
        raw: dict[str, Any] = {key: form.get(key) for key in form.keys() if key not in ("image", "formats")}
        formats = [f.strip() for value in form.getlist("formats") for f in str(value).split(",") if f.strip()]
        fields = _validate(SegmentSettings, {**raw, "formats": formats})
        return await upload.read(), fields
    if media_type == "application/json":
        try:
            payload = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError) as error:
            raise ApiError(400, "invalid_json", f"The body is not valid JSON: {error}") from None
        if not isinstance(payload, dict):
            raise ApiError(422, "invalid_request", "The JSON body must be an object.")
        unknown = sorted(set(payload) - set(SegmentJSON.model_fields))
        if unknown:
            raise ApiError(422, "unknown_field", f"Unknown field(s): {', '.join(unknown)}.")
        body = _validate(SegmentJSON, payload)
        if body.image_url is not None:
            return await service.fetch(body.image_url), body
        return _decode_base64(body.image_base64 or ""), body
    raise ApiError(
        415, "unsupported_media_type", "Send multipart/form-data with an 'image' file, or application/json."
    )


def _validate(model: type[SegmentSettings], data: dict[str, Any]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise RequestValidationError(error.errors(include_url=False)) from None


def _decode_base64(text: str) -> bytes:
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(422, "invalid_base64", "image_base64 is not valid base64.") from None
