"""Ray itself, for the Ray engine's segmentation (:mod:`tagseg.engines.ray`) and database builds
(:mod:`tagseg.engines.ray_database`): importing it with a clear message, joining or starting a runtime."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Iterator

from tagseg.errors import TagsegError

__all__ = ["ray_runtime", "require_ray"]

_NOT_INSTALLED = "The Ray engine needs Ray, which is not installed: pip install -e '.[ray]' in the tagseg checkout (on every machine of the cluster)."


def require_ray() -> Any:
    """The ``ray`` module, or a :class:`TagsegError` that says what to install."""
    try:
        import ray
        import ray.data  # noqa: F401 - the [data] extra
    except ImportError:
        raise TagsegError(_NOT_INSTALLED) from None
    return ray


@contextmanager
def ray_runtime(address: str | None = None) -> Iterator[Any]:
    """Use the Ray runtime already started in this process, else join ``address`` or start a local one.

    ``address`` is what ``ray.init`` takes (``auto``, ``ray://host:10001``, ``host:6379``); ``None``
    joins the cluster named by ``RAY_ADDRESS`` or starts a local runtime on this machine. A runtime
    started here is shut down on leaving.
    """
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    if address is None and not os.environ.get("RAY_ADDRESS"):
        ray.init(include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=address, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
