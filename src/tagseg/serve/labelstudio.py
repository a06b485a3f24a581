"""Label Studio ML backend: ``/predict``, ``/setup``, ``/webhook`` (``/health`` is the service's own).

Predictions are ``polygonlabels`` regions for a ``<PolygonLabels>`` project and otherwise
``brushlabels`` regions, whose masks use Label Studio's brush RLE
(:func:`tagseg.masks.mask_to_brush_rle`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import time
import xml.etree.ElementTree as ElementTree
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np
from fastapi import APIRouter, Body
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.background import BackgroundTask

from tagseg.label_space import LabelSpace
from tagseg.masks import connected_components, mask_to_brush_rle, outer_polygon
from tagseg.result import Instance, Segmentation
from tagseg.serve.errors import ApiError, error_responses
from tagseg.serve.service import SegmentOptions, Service

logger = logging.getLogger("tagseg.serve")

REGION_TYPES = {"BrushLabels": "brushlabels", "PolygonLabels": "polygonlabels"}


@dataclass(frozen=True)
class LabelTarget:
    """Where predictions go in a project: the labels tag (brush or polygon), its image and its labels.

    ``dynamic`` is true when the labels come from task data (``value="$..."``).
    """

    from_name: str
    to_name: str
    data_key: str
    labels: tuple[str, ...]
    region_type: str = "brushlabels"
    dynamic: bool = False


def parse_label_config(label_config: str) -> LabelTarget:
    """The first ``<BrushLabels>`` or ``<PolygonLabels>`` of a labelling config, its ``<Image>`` and labels."""
    try:
        root = ElementTree.fromstring(label_config)
    except ElementTree.ParseError as error:
        raise ApiError(422, "invalid_label_config", f"label_config is not valid XML: {error}") from None
    control = next((e for e in root.iter() if e.tag in REGION_TYPES), None)
    if control is None or not control.get("name") or not control.get("toName"):
        raise ApiError(
            422,
            "invalid_label_config",
            "label_config has no <BrushLabels name=... toName=...> or <PolygonLabels name=... toName=...> tag.",
        )
    to_name = control.get("toName", "").split(",")[0]
    image = next((e for e in root.iter("Image") if e.get("name") == to_name), None)
    if image is None or not image.get("value", "").startswith("$"):
        raise ApiError(422, "invalid_label_config", f"label_config has no <Image name={to_name!r} value=\"$...\">.")
    labels = tuple(label.get("value", "") for label in control.iter("Label") if label.get("value"))
    return LabelTarget(
        control.get("name", ""),
        to_name,
        image.get("value", "")[1:],
        labels,
        REGION_TYPES[control.tag],
        control.get("value", "").startswith("$"),
    )


def add_labels(label_config: str, control_name: str, names: Sequence[str]) -> str | None:
    """``label_config`` with ``<Label value=name/>`` added under the control ``control_name`` for each
    name it does not list yet; ``None`` when nothing is missing."""
    root = ElementTree.fromstring(label_config)
    control = next(e for e in root.iter() if e.tag in REGION_TYPES and e.get("name") == control_name)
    present = {label.get("value") for label in control.iter("Label")}
    missing = [name for name in dict.fromkeys(names) if name not in present]
    if not missing:
        return None
    for name in missing:
        ElementTree.SubElement(control, "Label", {"value": name, "background": _label_colour(name)})
    return ElementTree.tostring(root, encoding="unicode")


def _label_colour(name: str) -> str:
    """A stable colour per name, so that regions with different names look different."""
    digest = hashlib.sha1(name.encode("utf-8")).digest()
    return "#" + digest[:3].hex()


class LabelStudioAuth:
    """The ``Authorization`` header for Label Studio's API and media.

    A personal access token (Label Studio 1.20+; a JWT refresh token) is exchanged at
    ``/api/token/refresh/`` for a short-lived access token sent as ``Bearer``, renewed shortly
    before it expires; any other key is a legacy token, sent as ``Token <key>``.
    """

    RENEW_BEFORE_S = 30.0

    def __init__(self, url: str, key: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.key = key
        self.timeout = timeout
        self.personal = _jwt_claims(key) is not None
        self._access: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()

    async def header(self) -> tuple[str, str]:
        """``("Authorization", value)`` for the next request."""
        if not self.personal:
            return ("Authorization", f"Token {self.key}")
        async with self._lock:
            if self._access is None or time.time() > self._expires - self.RENEW_BEFORE_S:
                self._access = await self._refresh()
                self._expires = float((_jwt_claims(self._access) or {}).get("exp", time.time() + 60))
        return ("Authorization", f"Bearer {self._access}")

    async def _refresh(self) -> str:
        import httpx

        endpoint = f"{self.url}/api/token/refresh/"
        try:
            async with httpx.AsyncClient(timeout=self.timeout, trust_env=False) as client:
                response = await client.post(endpoint, json={"refresh": self.key})
        except httpx.HTTPError as error:
            raise ApiError(502, "label_studio_unreachable", f"Label Studio at {self.url} could not be reached: {error}") from None
        access = response.json().get("access") if response.status_code == 200 else None
        if not isinstance(access, str):
            raise ApiError(
                502,
                "label_studio_token_refused",
                f"Label Studio refused the personal access token at {endpoint} (HTTP {response.status_code}); "
                "copy a current one from Account & Settings → Personal Access Token into --label-studio-api-key.",
            )
        return access


def _jwt_claims(token: str) -> dict[str, Any] | None:
    """The (unverified) claims of a JSON web token, or ``None`` if ``token`` is not one."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        header, claims = (json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4))) for p in parts[:2])
    except (ValueError, UnicodeDecodeError):
        return None
    return claims if isinstance(header, dict) and "alg" in header and isinstance(claims, dict) else None


def to_predictions(
    result: Segmentation, target: LabelTarget, labels: LabelSpace | None, model_version: str
) -> dict[str, Any]:
    """One Label Studio prediction: a region per (mapped) label, with scores.

    Brush targets get one ``brushlabels`` region per label, and one per SAM mask (scored by its
    predicted IoU) when the segments came from ``segmenter="sam"``; polygon targets one
    ``polygonlabels`` region per connected part of those (points in percent of the image, at pixel centres).
    With ``labels``, segment names are mapped onto the project's labels; a segment whose name maps
    to none is left out.
    """
    height, width = result.image_size
    names = [segment.label for segment in result.segments]
    mapped = names if labels is None else [match.label for match in labels.map(names)]
    regions: dict[tuple[str, int | None], tuple[np.ndarray, float, int]] = {}
    for segment, label in zip(result.segments, mapped):
        if label is None or segment.area == 0:
            continue
        parts = segment.instances() if segment.regions else [Instance(segment.mask, segment.score)]
        for part in parts:
            key, part_area = (label, part.proposal), int(part.mask.sum())
            mask, weighted, area = regions.get(key, (np.zeros((height, width), dtype=bool), 0.0, 0))
            regions[key] = (mask | part.mask, weighted + part.score * part_area, area + part_area)
    items = []
    for (label, _), (mask, weighted, area) in regions.items():
        common = {
            "from_name": target.from_name,
            "to_name": target.to_name,
            "type": target.region_type,
            "original_width": width,
            "original_height": height,
            "image_rotation": 0,
            "score": round(weighted / area, 6),
            "readonly": False,
        }
        if target.region_type == "polygonlabels":
            for points in _polygons(mask):
                value = {"points": points, "closed": True, "polygonlabels": [label]}
                items.append({"id": f"tagseg{len(items)}", **common, "value": value})
        else:
            value = {"format": "rle", "rle": mask_to_brush_rle(mask), "brushlabels": [label]}
            items.append({"id": f"tagseg{len(items)}", **common, "value": value})
    total = sum(area for _, _, area in regions.values())
    score = sum(weighted for _, weighted, _ in regions.values()) / total if total else 0.0
    return {"result": items, "score": round(score, 6), "model_version": model_version}


def _polygons(mask: np.ndarray) -> list[list[list[float]]]:
    """Outer polygons of the mask's connected parts, in percent of width and height; parts whose
    outline has fewer than 3 vertices (a pixel, a one-pixel line) are left out."""
    height, width = mask.shape
    components, count = connected_components(mask)
    polygons = []
    for number in range(1, count + 1):
        outline = outer_polygon(components == number)
        if len(outline) >= 3:
            percent = (outline + 0.5) / [width, height] * 100.0
            polygons.append([[round(x, 4), round(y, 4)] for x, y in percent.tolist()])
    return polygons


class PredictRequest(BaseModel):
    """What Label Studio posts to ``/predict`` (other fields it sends are accepted and ignored)."""

    model_config = ConfigDict(extra="allow")

    tasks: list[dict[str, Any]] = Field(description="Tasks as Label Studio serialises them: `id`, `data`, ...")
    label_config: str | None = Field(None, description="The project's labelling config (else the one /setup stored).")
    project: str | int | None = Field(None, description='`"<project id>.<timestamp>"`.')


PREDICT_EXAMPLE: dict[str, Any] = {
    "tasks": [{"id": 1, "data": {"image": "/data/upload/1/street.jpg"}}],
    "project": "1.1712345678",
    "label_config": '<View><Image name="image" value="$image"/>'
    '<BrushLabels name="tag" toName="image"><Label value="Car"/><Label value="Road"/></BrushLabels></View>',
    "params": {"login": None, "password": None, "context": None},
}


class _Bounded(OrderedDict[str, Any]):
    """A dict that forgets its least recently stored entries beyond ``size``."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


class LabelStudioBackend:
    """The Label Studio ML backend of a service; :meth:`router` gives its routes.

    It holds the labelling config of each project that called ``/setup`` (the latest
    :attr:`MAX_PROJECTS`), the label space of each project label set it mapped names onto (the
    latest :attr:`MAX_LABEL_SPACES`, each with its labels' embeddings) and the connection to Label
    Studio (its address, the API key's authorisation, the fetch policy that trusts its origin).
    """

    MAX_PROJECTS = 1024
    MAX_LABEL_SPACES = 64

    def __init__(self, service: Service) -> None:
        self.service = service
        self.settings = settings = service.settings
        self.url = (settings.label_studio_url or "").rstrip("/")
        self.auth = (
            LabelStudioAuth(self.url, settings.label_studio_api_key, settings.fetch_timeout)
            if self.url and settings.label_studio_api_key
            else None
        )
        self.fetch_policy = replace(service.fetch_policy, trusted_origin=self.url or None)
        self.project_configs: _Bounded = _Bounded(self.MAX_PROJECTS)
        self.label_spaces: _Bounded = _Bounded(self.MAX_LABEL_SPACES)
        self._naming_lock = asyncio.Lock()

    def label_space(self, target: LabelTarget) -> LabelSpace | None:
        """The project's labels to map segment names onto, or ``None`` to keep the names (label mode)."""
        mode = self.settings.label_mode
        if mode == "free" or (mode == "auto" and not target.labels):
            return None
        if not target.labels:
            raise ApiError(422, "no_labels", "label mode 'map' needs <Label> values under the labels tag.")
        key = "\n".join(target.labels)
        if key not in self.label_spaces:
            encoder, template = self.service.tag.text_encoder, self.service.tag.config.prompt_template
            self.label_spaces[key] = LabelSpace(
                target.labels,
                lambda texts: encoder.encode([template.format(text) for text in texts]),
                aliases=self.settings.label_aliases,
                min_similarity=self.settings.label_min_similarity,
            )
        return self.label_spaces[key]

    async def task_image(self, reference: Any) -> bytes:
        """The bytes of a task's image: an http(s) URL or a Label Studio ``/data/`` path (with its key)."""
        if not isinstance(reference, str):
            raise ApiError(422, "invalid_task", "The task's image field is not a string.")
        if reference.startswith("/data/"):
            if not self.url:
                raise ApiError(
                    422, "label_studio_url_missing", "Task images under /data/ need --label-studio-url (and an API key)."
                )
            reference = self.url + reference
        elif not reference.startswith(("http://", "https://")):
            raise ApiError(422, "invalid_task", "Task images must be http(s) URLs or Label Studio /data/ paths.")
        own = bool(self.url) and reference.startswith(self.url + "/")
        headers = (await self.auth.header(),) if self.auth is not None and own else ()
        return await self.service.fetch(reference, replace(self.fetch_policy, trusted_headers=headers))

    async def predict_task(self, task: dict[str, Any], target: LabelTarget, labels: LabelSpace | None) -> dict[str, Any]:
        """One task's prediction."""
        data = task.get("data") if isinstance(task.get("data"), dict) else {}
        image = await self.task_image(data.get(target.data_key))
        return await self.service.segment(
            image,
            SegmentOptions(masks=False),
            lambda rgb, result: to_predictions(result, target, labels, self.service.model_version),
        )

    async def name_the_labels(self, project: str, target: LabelTarget, names: list[str]) -> None:
        """Add the predicted names as <Label>s of a project whose labels tag lists none, so that
        Label Studio shows them (it hides region labels its config does not list)."""
        if self.auth is None:
            return
        import httpx

        async with self._naming_lock:
            try:
                async with httpx.AsyncClient(timeout=self.settings.fetch_timeout, trust_env=False) as client:
                    endpoint = f"{self.url}/api/projects/{project}/"
                    current = await client.get(endpoint, headers=dict([await self.auth.header()]))
                    current.raise_for_status()
                    updated = add_labels(current.json()["label_config"], target.from_name, names)
                    if updated is not None:
                        answer = await client.patch(
                            endpoint, json={"label_config": updated}, headers=dict([await self.auth.header()])
                        )
                        answer.raise_for_status()
                        self.project_configs[project] = updated
            except (httpx.HTTPError, ApiError, KeyError, ValueError, StopIteration) as error:
                logger.warning("Could not add the names %s as labels of Label Studio project %s: %s", names, project, error)

    def setup(self, payload: dict[str, Any]) -> dict[str, Any]:
        """``/setup``: remember the project's labelling config."""
        schema = payload.get("schema")
        if isinstance(schema, str):
            target = parse_label_config(schema)
            if not target.labels and not target.dynamic and self.auth is None:
                logger.warning(
                    "Project %s: the labels tag lists no <Label>, so Label Studio will show tagseg's regions "
                    "unnamed; give --label-studio-url and --label-studio-api-key so tagseg adds the names as labels.",
                    _project_id(payload.get("project")),
                )
            self.project_configs[_project_id(payload.get("project"))] = schema
        return {"model_version": self.service.model_version}

    async def predict(self, request: PredictRequest) -> JSONResponse:
        """``/predict``: a prediction (or an error) per task, in order."""
        payload = request.model_dump()
        tasks = payload.get("tasks")
        if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
            raise ApiError(422, "invalid_request", "'tasks' must be a list of task objects.")
        project = _project_id(payload.get("project"))
        label_config = payload.get("label_config") or self.project_configs.get(project)
        if not isinstance(label_config, str):
            raise ApiError(422, "invalid_request", "Send 'label_config' (or call /setup for the project first).")
        target = parse_label_config(label_config)
        labels = self.label_space(target)
        results: list[dict[str, Any]] = []
        for task in tasks:
            try:
                results.append(await self.predict_task(task, target, labels))
            except ApiError as error:
                logger.warning("Label Studio task %s failed: %s %s: %s", task.get("id"), error.status, error.code, error.message)
                results.append({"task": task.get("id"), "error": {"code": error.code, "message": error.message}})
        names = [region["value"][target.region_type][0] for r in results for region in r.get("result", [])]
        background = None
        if names and not target.labels and not target.dynamic and project:
            background = BackgroundTask(self.name_the_labels, project, target, names)
        return JSONResponse({"results": results, "model_version": self.service.model_version}, background=background)

    def router(self) -> APIRouter:
        """The routes ``/setup``, ``/predict`` and ``/webhook``."""
        routes = APIRouter(tags=["label studio"])

        @routes.post("/setup", summary="Label Studio: connect a project", responses=error_responses(400, 422))
        async def setup(payload: dict[str, Any] = Body(...)) -> dict[str, Any]:
            return self.setup(payload)

        @routes.post(
            "/predict",
            summary="Label Studio: pre-label tasks",
            description=(
                "One entry of `results` per task, in order: a prediction (`result`, `score`, `model_version`) or, "
                "for a task that failed (its image could not be fetched or read), `{\"task\": id, \"error\": "
                "{\"code\", \"message\"}}`, which Label Studio skips and logs."
            ),
            responses=error_responses(400, 422),
        )
        async def predict(request: PredictRequest = Body(..., examples=[PREDICT_EXAMPLE])) -> JSONResponse:
            return await self.predict(request)

        @routes.post(
            "/webhook",
            summary="Label Studio: training events (accepted and ignored)",
            status_code=201,
            responses=error_responses(400),
        )
        async def webhook(payload: dict[str, Any] = Body(default_factory=dict)) -> JSONResponse:
            return JSONResponse({"status": "ignored", "action": payload.get("action")}, status_code=201)

        return routes


def _project_id(project: Any) -> str:
    """Label Studio sends ``"<id>.<timestamp>"``; the id part names the project."""
    return str(project).split(".")[0] if project is not None else ""


__all__ = ["LabelStudioAuth", "LabelStudioBackend", "LabelTarget", "add_labels", "parse_label_config", "to_predictions"]
