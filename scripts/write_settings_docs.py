"""Rewrite what documents the settings from their declaration in ``tagseg.config``.

* the table of ``docs/settings.md`` (between the ``<!-- settings-table -->`` markers);
* the ``description`` (and, for settings with choices, ``enum``) of every setting in the
  ``settings`` part of ``src/tagseg/data/segmentation.schema.json``.

    PYTHONPATH=src python scripts/write_settings_docs.py

``tests/test_config_cli.py`` fails while either is out of date.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from tagseg.config import declared_settings, settings_markdown

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs/settings.md"
SCHEMA = ROOT / "src/tagseg/data/segmentation.schema.json"
START, END = "<!-- settings-table -->\n", "<!-- /settings-table -->\n"


def with_table(text: str) -> str:
    """``text`` with the block between the markers replaced by the current table."""
    before, _, rest = text.partition(START)
    _, _, after = rest.partition(END)
    return before + START + settings_markdown() + END + after


def with_descriptions(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with each recorded setting described (and its choices listed) as declared."""
    properties = schema["properties"]["settings"]["properties"]
    for item in declared_settings():
        entry = properties.setdefault(item.name, {})
        entry["description"] = item.help
        if item.choices:
            entry["enum"] = list(item.choices)
        if dataclasses.is_dataclass(item.default):
            for sub in dataclasses.fields(item.default):
                entry.setdefault("properties", {}).setdefault(sub.name, {})["description"] = sub.metadata["help"]
    return schema


def schema_text(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    DOC.write_text(with_table(DOC.read_text(encoding="utf-8")), encoding="utf-8")
    SCHEMA.write_text(schema_text(with_descriptions(json.loads(SCHEMA.read_text(encoding="utf-8")))), encoding="utf-8")
