"""Text databases that segments retrieve their names from."""

from tagseg.database.memory import InMemoryTextDatabase

__all__ = ["InMemoryTextDatabase"]
