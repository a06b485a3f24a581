"""One category table per run: the same name always gets the same id, in every export format."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Collection, Mapping

from tagseg.errors import ConfigError

__all__ = ["CategoryTable"]


class CategoryTable:
    """Names to category ids (1, 2, ...; 0 means unlabelled in label maps).

    New names get the next free id in order of first appearance, so ids never change during a run.
    Load a table saved by an earlier run (:meth:`load`) to keep its ids; with ``frozen`` the table
    is fixed and names outside it are left out of the exports (:class:`~tagseg.exports.RunExporter`
    counts the segments left out in :attr:`unmatched`).
    """

    def __init__(self, ids: Mapping[str, int] | None = None, *, frozen: bool = False) -> None:
        self._ids: dict[str, int] = dict(ids or {})
        if any(not isinstance(i, int) or i < 1 for i in self._ids.values()) or len(set(self._ids.values())) < len(self._ids):
            raise ConfigError("Category ids must be distinct integers >= 1.")
        self.frozen = frozen
        self.unmatched: Counter[str] = Counter()

    def id(self, name: str) -> int | None:
        """The id of ``name``, assigning a new one unless frozen; None for a name a frozen table lacks."""
        if name not in self._ids:
            if self.frozen:
                return None
            self._ids[name] = max(self._ids.values(), default=0) + 1
        return self._ids[name]

    @property
    def max_id(self) -> int:
        return max(self._ids.values(), default=0)

    def names_by_id(self) -> dict[int, str]:
        """``{id: name}`` in id order."""
        return {i: name for name, i in sorted(self._ids.items(), key=lambda item: item[1])}

    def coco_categories(self, *, isthing: bool = True, stuff: Collection[int] = ()) -> list[dict[str, Any]]:
        """COCO ``categories``; with ``isthing`` (panoptic's field) the ids in ``stuff`` are stuff and
        every other name a thing (k-means segments cannot tell them apart)."""
        return [
            {"id": i, "name": name, "supercategory": "tagseg", **({"isthing": int(i not in stuff)} if isthing else {})}
            for i, name in self.names_by_id().items()
        ]

    def save(self, path: str | Path) -> Path:
        """Write the table as a COCO ``categories`` JSON list, which :meth:`load` reads back."""
        path = Path(path)
        path.write_text(json.dumps(self.coco_categories(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path, *, frozen: bool = False) -> "CategoryTable":
        """Read ids from a COCO JSON file (its ``categories``), a JSON list of categories, a JSON
        ``{name: id}`` object, or a text file of names, one a line (id = line number)."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigError(f"Cannot read the category file {path}: {error.strerror or error}") from None
        if path.suffix.lower() != ".json":
            names = [line.strip() for line in text.splitlines() if line.strip()]
            return cls({name: i for i, name in enumerate(names, start=1)}, frozen=frozen)
        try:
            data = json.loads(text)
        except ValueError as error:
            raise ConfigError(f"The category file {path} is not valid JSON: {error}") from None
        if isinstance(data, dict) and "categories" in data:
            data = data["categories"]
        if isinstance(data, list):
            try:
                data = {str(c["name"]): int(c["id"]) for c in data}
            except (TypeError, KeyError, ValueError):
                raise ConfigError(f"{path}: categories need 'id' and 'name' fields.") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected COCO categories or a {{name: id}} object.")
        return cls(data, frozen=frozen)
