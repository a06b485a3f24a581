"""Old import paths that keep working: a module that moved leaves a shim built by :func:`moved_module`."""

from __future__ import annotations

import importlib
import warnings
from typing import Any, Callable


def moved_module(old_name: str, *new_homes: str) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for a shim at ``old_name`` whose names now live in ``new_homes``.

    Each name read from the shim is looked up in ``new_homes`` in order and comes with a
    :class:`DeprecationWarning` that names its new home. Use in the old module::

        __getattr__, __dir__ = moved_module(__name__, "tagseg.backbones.hub")
    """

    def __getattr__(name: str) -> Any:
        for home in new_homes:
            module = importlib.import_module(home)
            if hasattr(module, name):
                warnings.warn(
                    f"{old_name}.{name} moved to {home}.{name}; import it from there "
                    f"({old_name} will be removed in a future release).",
                    DeprecationWarning,
                    stacklevel=2,
                )
                return getattr(module, name)
        raise AttributeError(f"module {old_name!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted({name for home in new_homes for name in getattr(importlib.import_module(home), "__all__", [])})

    return __getattr__, __dir__
