"""Rewrite the settings table of ``docs/settings.md`` from the declaration in ``tagseg.config``.

    PYTHONPATH=src python scripts/write_settings_table.py

The table sits between the ``<!-- settings-table -->`` markers; ``tests/test_config_cli.py`` fails
while it is out of date.
"""

from __future__ import annotations

from pathlib import Path

from tagseg.config import settings_markdown

DOC = Path(__file__).resolve().parents[1] / "docs/settings.md"
START, END = "<!-- settings-table -->\n", "<!-- /settings-table -->\n"


def with_table(text: str) -> str:
    """``text`` with the block between the markers replaced by the current table."""
    before, _, rest = text.partition(START)
    _, _, after = rest.partition(END)
    return before + START + settings_markdown() + END + after


if __name__ == "__main__":
    DOC.write_text(with_table(DOC.read_text(encoding="utf-8")), encoding="utf-8")
