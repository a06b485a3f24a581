"""Label Studio ML backend: ``/predict``, ``/setup``, ``/webhook`` (``/health`` is the service's own).

Predictions are ``brushlabels`` regions whose masks use Label Studio's brush RLE
(:func:`tagseg.masks.mask_to_brush_rle`).
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from fastapi import APIRouter, Body
from fastapi.responses import JSONResponse

from tagseg.interfaces import TextEncoder
from tagseg.masks import mask_to_brush_rle
from tagseg.result import Segmentation
from tagseg.serve.errors import ApiError, error_responses
from tagseg.serve.fetch import FetchPolicy
from tagseg.serve.service import SegmentOptions, Service


@dataclass(frozen=True)
class BrushTarget:
    """Where predictions go in a project: the BrushLabels tag, its image and its labels."""

    from_name: str
    to_name: str
    data_key: str
    labels: tuple[str, ...]


def parse_label_config(label_config: str) -> BrushTarget:
    """The first ``<BrushLabels>`` of a labelling config, the ``<Image>`` it points to and its labels."""
    try:
        root = ElementTree.fromstring(label_config)
    except ElementTree.ParseError as error:
        raise ApiError(422, "invalid_label_config", f"label_config is not valid XML: {error}") from None
    brush = next(root.iter("BrushLabels"), None)
    if brush is None or not brush.get("name") or not brush.get("toName"):
        raise ApiError(422, "invalid_label_config", "label_config has no <BrushLabels name=... toName=...> tag.")
    to_name = brush.get("toName", "").split(",")[0]
    image = next((e for e in root.iter("Image") if e.get("name") == to_name), None)
    if image is None or not image.get("value", "").startswith("$"):
        raise ApiError(422, "invalid_label_config", f"label_config has no <Image name={to_name!r} value=\"$...\">.")
    labels = tuple(label.get("value", "") for label in brush.iter("Label") if label.get("value"))
    return BrushTarget(brush.get("name", ""), to_name, image.get("value", "")[1:], labels)


class LabelMapper:
    """Maps free-form segment names onto a project's labels: alias table, exact match, then the
    most similar label by text embedding; below ``threshold`` it abstains (``None``)."""

    def __init__(
        self, labels: Sequence[str], encoder: TextEncoder, template: str, aliases: dict[str, str], threshold: float
    ) -> None:
        self.labels = list(labels)
        self.encoder = encoder
        self.template = template
        self.threshold = threshold
        by_lower = {label.lower(): label for label in self.labels}
        self.exact = dict(by_lower)
        self.exact.update({k.lower(): by_lower[v.lower()] for k, v in aliases.items() if v.lower() in by_lower})
        self.vectors = encoder.encode([template.format(label) for label in self.labels]).numpy()

    def __call__(self, name: str) -> tuple[str | None, float]:
        """The project label for ``name`` and the similarity it was chosen with."""
        if name.lower() in self.exact:
            return self.exact[name.lower()], 1.0
        vector = self.encoder.encode([self.template.format(name)]).numpy()[0]
        similarities = self.vectors @ vector
        best = int(np.argmax(similarities))
        if similarities[best] < self.threshold:
            return None, float(similarities[best])
        return self.labels[best], float(similarities[best])


def to_predictions(
    result: Segmentation, target: BrushTarget, mapper: LabelMapper | None, model_version: str
) -> dict[str, Any]:
    """One Label Studio prediction: a brushlabels region per (mapped) label, with scores."""
    height, width = result.image_size
    regions: dict[str, tuple[np.ndarray, float, int]] = {}
    for segment in result.segments:
        label = segment.label if mapper is None else mapper(segment.label)[0]
        if label is None or segment.area == 0:
            continue
        mask, weighted, area = regions.get(label, (np.zeros((height, width), dtype=bool), 0.0, 0))
        regions[label] = (mask | segment.mask, weighted + segment.score * segment.area, area + segment.area)
    items = []
    for number, (label, (mask, weighted, area)) in enumerate(regions.items()):
        items.append(
            {
                "id": f"tagseg{number}",
                "from_name": target.from_name,
                "to_name": target.to_name,
                "type": "brushlabels",
                "original_width": width,
                "original_height": height,
                "image_rotation": 0,
                "value": {"format": "rle", "rle": mask_to_brush_rle(mask), "brushlabels": [label]},
                "score": round(weighted / area, 6),
                "readonly": False,
            }
        )
    total = sum(area for _, _, area in regions.values())
    score = sum(weighted for _, weighted, _ in regions.values()) / total if total else 0.0
    return {"result": items, "score": round(score, 6), "model_version": model_version}


PREDICT_EXAMPLE: dict[str, Any] = {
    "tasks": [{"id": 1, "data": {"image": "/data/upload/1/street.jpg"}}],
    "project": "1.1712345678",
    "label_config": '<View><Image name="image" value="$image"/>'
    '<BrushLabels name="tag" toName="image"><Label value="Car"/><Label value="Road"/></BrushLabels></View>',
    "params": {"login": None, "password": None, "context": None},
}


def router(service: Service) -> APIRouter:
    """The Label Studio ML backend routes for ``service``."""
    settings = service.settings
    routes = APIRouter(tags=["label studio"])
    configs: dict[str, str] = {}
    mappers: dict[str, LabelMapper] = {}
    ls_url = (settings.label_studio_url or "").rstrip("/")
    trusted_policy = FetchPolicy(
        allow_hosts=settings.allow_hosts,
        allow_private=settings.allow_private,
        timeout=settings.fetch_timeout,
        max_bytes=settings.max_upload_bytes,
        trusted_origin=ls_url or None,
        trusted_headers=(("Authorization", f"Token {settings.label_studio_api_key}"),)
        if settings.label_studio_api_key
        else (),
    )

    def mapper_for(label_config: str, target: BrushTarget) -> LabelMapper | None:
        mode = settings.label_mode
        if mode == "free" or (mode == "auto" and not target.labels):
            return None
        if not target.labels:
            raise ApiError(422, "no_labels", "label mode 'map' needs <Label> values under <BrushLabels>.")
        if label_config not in mappers:
            if len(mappers) >= 64:
                mappers.clear()
            mappers[label_config] = LabelMapper(
                target.labels,
                service.tag.text_encoder,
                service.tag.config.prompt_template,
                settings.label_aliases,
                settings.abstain_threshold,
            )
        return mappers[label_config]

    async def task_image(reference: Any) -> bytes:
        if not isinstance(reference, str):
            raise ApiError(422, "invalid_task", "The task's image field is not a string.")
        if reference.startswith("/data/"):
            if not ls_url:
                raise ApiError(
                    422, "label_studio_url_missing", "Task images under /data/ need --label-studio-url (and an API key)."
                )
            return await service.fetch(ls_url + reference, trusted_policy)
        if reference.startswith(("http://", "https://")):
            return await service.fetch(reference, trusted_policy)
        raise ApiError(422, "invalid_task", "Task images must be http(s) URLs or Label Studio /data/ paths.")

    @routes.post("/setup", summary="Label Studio: connect a project")
    async def setup(payload: dict[str, Any] = Body(...)) -> dict[str, Any]:
        schema = payload.get("schema")
        if isinstance(schema, str):
            parse_label_config(schema)
            if len(configs) >= 1024:
                configs.clear()
            configs[_project_id(payload.get("project"))] = schema
        return {"model_version": service.model_version}

    @routes.post("/predict", summary="Label Studio: pre-label tasks", responses=error_responses(413, 415, 422, 429, 502, 504))
    async def predict(payload: dict[str, Any] = Body(..., examples=[PREDICT_EXAMPLE])) -> JSONResponse:
        tasks = payload.get("tasks")
        if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
            raise ApiError(422, "invalid_request", "'tasks' must be a list of task objects.")
        label_config = payload.get("label_config") or configs.get(_project_id(payload.get("project")))
        if not isinstance(label_config, str):
            raise ApiError(422, "invalid_request", "Send 'label_config' (or call /setup for the project first).")
        target = parse_label_config(label_config)
        mapper = mapper_for(label_config, target)
        results = []
        for task in tasks:
            data = task.get("data") if isinstance(task.get("data"), dict) else {}
            image = await task_image(data.get(target.data_key))
            results.append(
                await service.segment(
                    image,
                    SegmentOptions(masks=False),
                    lambda rgb, result: to_predictions(result, target, mapper, service.model_version),
                )
            )
        return JSONResponse({"results": results, "model_version": service.model_version})

    @routes.post("/webhook", summary="Label Studio: training events (accepted and ignored)", status_code=201)
    async def webhook(payload: dict[str, Any] = Body(default_factory=dict)) -> JSONResponse:
        return JSONResponse({"status": "ignored", "action": payload.get("action")}, status_code=201)

    return routes


def _project_id(project: Any) -> str:
    """Label Studio sends ``"<id>.<timestamp>"``; the id part names the project."""
    return str(project).split(".")[0] if project is not None else ""


__all__ = ["BrushTarget", "LabelMapper", "parse_label_config", "router", "to_predictions"]
