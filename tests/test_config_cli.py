"""The settings declaration against what is generated from it: CLI flags, `config show` comments, the docs table."""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import tomllib
import typing
from pathlib import Path

import pytest
import typer
from typer.core import TyperOption
from typer.testing import CliRunner

from tagseg.result import segmentation_schema
from tagseg.cli import app
from tagseg.config import SECTIONS, config_toml, declared_settings, preset

COMMANDS = [("segment",), ("config", "show"), ("serve",), ("eval",)]
ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def options_of(path: tuple[str, ...]) -> list[TyperOption]:
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    return [param for param in command.params if isinstance(param, TyperOption)]


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_the_settings_flags_of_each_command_are_the_declaration(path: tuple[str, ...]) -> None:
    options = options_of(path)
    by_flag = {flag: option for option in options for flag in (*option.opts, *option.secondary_opts)}
    declared = [item for item in declared_settings() if item.cli]
    settings_panels = {f"Settings: {section}" for section in SECTIONS}
    shown = [o for o in options if getattr(o, "rich_help_panel", None) in settings_panels and not o.hidden]
    assert sorted(o.name for o in shown) == sorted(item.name for item in declared)  # nothing more, nothing less
    for item in declared:
        option = by_flag[item.flag]
        assert option.name == item.name and not option.hidden
        assert option.rich_help_panel == f"Settings: {item.section}"  # type: ignore[attr-defined]
        assert (option.help or "").startswith(item.help)  # help is plain text: brackets are kept
        assert option.default is None  # unset flags leave the preset and the file alone
        if item.short:
            assert item.short in option.opts
        if item.type is bool:
            assert option.secondary_opts == ["--no-" + item.flag[2:]]
        if item.choices:
            assert typing.get_args(option.type_descriptor.annotation) == item.choices
        for old in item.old_flags:
            assert by_flag[old].hidden and old not in option.opts
    for item in declared_settings():
        if not item.cli:
            assert item.flag not in by_flag


def shown(*args: str) -> dict:
    result = runner.invoke(app, ["config", "show", "--preset", "toy", *args])
    assert result.exit_code == 0, result.output
    return tomllib.loads(result.output)


@pytest.mark.parametrize("args", [["--num-clusters", "3"], ["-k", "3"], ["--clusters", "3"]])
def test_new_and_old_spellings_set_the_same_setting(args: list[str]) -> None:
    assert shown(*args)["clusters"]["num_clusters"] == 3


def test_old_spelling_of_the_threshold_and_which_flag_wins() -> None:
    assert shown("--abstain-below", "0.2")["controls"]["abstain_threshold"] == 0.2
    assert shown("--abstain-threshold", "0.3", "--abstain-below", "0.2")["controls"]["abstain_threshold"] == 0.3
    assert shown("-k", "auto", "--no-crf", "--vocabulary", "cat,dog")["controls"]["vocabulary"] == ["cat", "dog"]
    bad = runner.invoke(app, ["config", "show", "--names", "sentences"])
    assert bad.exit_code == 2 and "sentences" in bad.output


def test_config_show_comments_every_setting_with_its_declared_help() -> None:
    config = preset("toy", aliases={"kitty cat": "cat"}, vocabulary=["cat"])
    lines = config_toml(config).splitlines()
    for item in declared_settings():
        if dataclasses.is_dataclass(item.default):
            assert f"[{item.section}.{item.name}]" in lines
            continue
        key = next(i for i, line in enumerate(lines) if line.startswith(f"{item.name} = "))
        assert lines[key - 1] == f"# {item.help}"


def _script():
    spec = importlib.util.spec_from_file_location("write_settings_docs", ROOT / "scripts/write_settings_docs.py")
    script = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(script)  # type: ignore[union-attr]
    return script


REGENERATE = "run `PYTHONPATH=src python scripts/write_settings_docs.py`"


def test_the_docs_table_is_the_declaration() -> None:
    text = (ROOT / "docs/settings.md").read_text(encoding="utf-8")
    assert _script().with_table(text) == text, REGENERATE
    for item in declared_settings():
        assert f"| `{item.name}` |" in text and item.help in text
    assert "docs/settings.md" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_schema_describes_each_recorded_setting_as_declared() -> None:
    schema = segmentation_schema()
    assert _script().schema_text(_script().with_descriptions(copy.deepcopy(schema))) == _script().schema_text(schema), REGENERATE
    properties = schema["properties"]["settings"]["properties"]
    for item in declared_settings():
        assert properties[item.name]["description"] == item.help
        assert properties[item.name].get("enum", list(item.choices)) == list(item.choices)
