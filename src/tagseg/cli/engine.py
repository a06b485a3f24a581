"""Options that choose where ``tagseg segment`` and ``tagseg db build`` run (see docs/ray.md)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Optional

import typer

from tagseg import engines

RAY = "Engine (where the work runs)"

EngineName = Enum("EngineName", {name: name for name in engines.ENGINES}, type=str)  # type: ignore[misc]

Engine = Annotated[
    EngineName,
    typer.Option(
        help="local: this process (default, needs nothing more); ray: the workers of a Ray cluster (needs the ray extra: pip install -e '.[ray]' in a checkout of tagseg).",
        rich_help_panel=RAY,
    ),
]
Address = Annotated[
    Optional[str],
    typer.Option(
        help="Ray cluster to join (auto, HOST:6379, ray://HOST:10001); default: $RAY_ADDRESS, else a local Ray runtime.",
        rich_help_panel=RAY,
        show_default=False,
    ),
]
Workers = Annotated[int, typer.Option(min=1, help="Ray workers (actors), each loading the models once.", rich_help_panel=RAY)]
CpusPerWorker = Annotated[float, typer.Option(min=0.01, help="CPUs reserved per Ray worker (its torch threads).", rich_help_panel=RAY)]
GpusPerWorker = Annotated[
    float, typer.Option(min=0.0, help="GPUs per Ray worker: 1, or 0.5 for two workers sharing a GPU; 0 on CPUs.", rich_help_panel=RAY)
]


def open_engine(
    name: EngineName, address: str | None, workers: int, cpus_per_worker: float, gpus_per_worker: float
) -> engines.Engine:
    """The engine the options above choose (:func:`tagseg.engines.open_engine`)."""
    return engines.open_engine(name.value, engines.WorkerOptions(workers, cpus_per_worker, gpus_per_worker, address))
