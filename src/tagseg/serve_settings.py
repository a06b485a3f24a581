"""Settings of the HTTP service (:mod:`tagseg.serve`): limits, queue, URL fetching, database writes, Label Studio.

Every setting is declared once, with :func:`tagseg.config.setting`; the flags of ``tagseg serve``
are generated from the declaration (:func:`tagseg.cli.options.with_declared`). This module is
outside :mod:`tagseg.serve` so that the command line reads it without the ``serve`` extra.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from tagseg.config import SettingsSection, setting

LabelMode = Literal["auto", "map", "free"]

SERVICE = "Service"
LABEL_STUDIO = "Label Studio"


def _at_least(minimum: float, kind: type | tuple[type, ...] = (int, float)) -> Any:
    return lambda value: isinstance(value, kind) and not isinstance(value, bool) and value >= minimum


@dataclass(frozen=True)
class ServeSettings(SettingsSection):
    """Everything ``tagseg serve`` can be told; the defaults suit one CPU box on loopback.

    ``allow_hosts`` limits URL fetching to these host names (``*.example.com`` matches sub-domains);
    empty means any host. Private, loopback and link-local addresses are refused unless
    ``allow_private``. Database writes are off unless ``database_writes``; with ``token`` set they
    need ``Authorization: Bearer <token>``.
    """

    workers: int = setting(1, "Images segmented at the same time.", check=_at_least(1, int), panel=SERVICE)
    queue_size: int = setting(
        8, "Requests that may wait for a worker; beyond that: 429.", check=_at_least(0, int), panel=SERVICE
    )
    request_timeout: float = setting(
        120.0, "Seconds a request may take before 504.", check=lambda v: _at_least(0)(v) and v > 0, flag="--timeout",
        panel=SERVICE,
    )
    max_upload_bytes: int = setting(
        20 * 1024 * 1024, "Largest image file accepted, in bytes (flag: --max-upload-mb).", check=_at_least(1, int), cli=False
    )
    allow_hosts: tuple[str, ...] = setting(
        (), "Host that image URLs may point to (repeat; *.example.com for sub-domains). Default: any public host.",
        flag="--allow-host", panel=SERVICE,
    )
    allow_private: bool = setting(False, "Let image URLs reach private and loopback addresses.", panel=SERVICE)
    fetch_timeout: float = setting(
        10.0, "Seconds an image URL may take to answer.", check=lambda v: _at_least(0)(v) and v > 0, cli=False
    )
    database_writes: bool = setting(False, "Enable the endpoints that add and remove database texts.", panel=SERVICE)
    token: str | None = setting(
        None, "Bearer token the database-writing endpoints require.", envvar="TAGSEG_TOKEN", panel=SERVICE
    )
    retry_after: int = setting(2, "Seconds a 429 answer asks the client to wait.", check=_at_least(1, int), cli=False)
    label_studio_url: str | None = setting(
        None, "Label Studio's address, for task images under /data/.", envvar="LABEL_STUDIO_URL", panel=LABEL_STUDIO
    )
    label_studio_api_key: str | None = setting(
        None, "Label Studio access token for those images: a personal access token or a legacy token.", envvar="LABEL_STUDIO_API_KEY", panel=LABEL_STUDIO
    )
    label_mode: LabelMode = setting(
        "auto", "auto, map (onto the project's labels) or free (segment names as they are).",
        choices=("auto", "map", "free"), panel=LABEL_STUDIO,
    )
    label_aliases: dict[str, str] = setting(
        {}, "File of alias lines 'kitten, kitty -> cat' mapping segment names to project labels.", panel=LABEL_STUDIO,
        check=lambda v: isinstance(v, dict),
    )
    label_min_similarity: float = setting(
        0.5, "In map mode, drop segments whose name's text embedding has a lower cosine with every label's.",
        check=lambda v: isinstance(v, (int, float)) and -1.0 <= v <= 1.0, old_flags=("--label-abstain-below",),
        panel=LABEL_STUDIO,
    )
    model_version: str | None = setting(
        None, "Model version shown in Label Studio (default: from the models).", panel=LABEL_STUDIO
    )
