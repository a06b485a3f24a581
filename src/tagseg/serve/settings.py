"""Settings of the HTTP service: limits, queue, URL fetching, database writes, Label Studio."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from tagseg.errors import ConfigError

LabelMode = Literal["auto", "map", "free"]


@dataclass(frozen=True)
class ServeSettings:
    """Everything ``tagseg serve`` can be told; the defaults suit one CPU box on loopback.

    ``allow_hosts`` limits URL fetching to these host names (``*.example.com`` matches sub-domains);
    empty means any host. Private, loopback and link-local addresses are refused unless
    ``allow_private``. Database writes are off unless ``database_writes``; with ``token`` set they
    need ``Authorization: Bearer <token>``.
    """

    workers: int = 1
    queue_size: int = 8
    request_timeout: float = 120.0
    max_upload_bytes: int = 20 * 1024 * 1024
    allow_hosts: tuple[str, ...] = ()
    allow_private: bool = False
    fetch_timeout: float = 10.0
    database_writes: bool = False
    token: str | None = None
    retry_after: int = 2
    label_studio_url: str | None = None
    label_studio_api_key: str | None = None
    label_mode: LabelMode = "auto"
    label_aliases: dict[str, str] = field(default_factory=dict)
    label_min_similarity: float = 0.5
    model_version: str | None = None

    def __post_init__(self) -> None:
        checks = {
            "workers": self.workers >= 1,
            "queue_size": self.queue_size >= 0,
            "request_timeout": self.request_timeout > 0,
            "max_upload_bytes": self.max_upload_bytes >= 1,
            "fetch_timeout": self.fetch_timeout > 0,
            "retry_after": self.retry_after >= 1,
            "label_mode": self.label_mode in ("auto", "map", "free"),
            "label_min_similarity": -1.0 <= self.label_min_similarity <= 1.0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ConfigError("Invalid serve setting(s): " + ", ".join(f"{n}={getattr(self, n)!r}" for n in bad))
