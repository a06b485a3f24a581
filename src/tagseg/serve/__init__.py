"""``tagseg serve``: an HTTP API, a web page and a Label Studio ML backend around one loaded TAG.

Needs the ``serve`` extra (``pip install -e '.[serve]'`` in the tagseg checkout); without it, importing this package
raises :class:`~tagseg.errors.MissingDependencyError` naming what is missing.
"""

from importlib.util import find_spec

from tagseg.errors import MissingDependencyError

SERVE_PACKAGES = {"fastapi": "fastapi", "uvicorn": "uvicorn", "multipart": "python-multipart", "httpx": "httpx", "pydantic": "pydantic"}
"""Import name -> distribution name of what the web service needs beyond the core."""

_missing = [distribution for module, distribution in SERVE_PACKAGES.items() if find_spec(module) is None]
if _missing:
    raise MissingDependencyError(
        f"The web service needs {', '.join(_missing)}, which are not installed. "
        "Install them with: pip install -e '.[serve]' in the tagseg checkout"
    )

from tagseg.serve.app import create_app  # noqa: E402  (after the check, so a missing package gets the message above)
from tagseg.serve_settings import ServeSettings  # noqa: E402

__all__ = ["SERVE_PACKAGES", "ServeSettings", "create_app"]
