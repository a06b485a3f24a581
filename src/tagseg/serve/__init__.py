"""``tagseg serve``: an HTTP API, a web page and a Label Studio ML backend around one loaded TAG."""

from tagseg.serve.app import create_app
from tagseg.serve.settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]
