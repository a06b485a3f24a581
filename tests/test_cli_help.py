"""Every command's ``--help``, rendered at a narrow and a wide terminal, says everything its source says."""

from __future__ import annotations

import re

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from tagseg.cli import app

runner = CliRunner()


def _commands(group, path=()):
    """(argv prefix, click command) for the app, every group and every command below it."""
    yield list(path), group
    for name, command in getattr(group, "commands", {}).items():
        yield from _commands(command, (*path, name))


COMMANDS = list(_commands(get_command(app)))


def _words(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("columns", [80, 200])
@pytest.mark.parametrize("argv, command", COMMANDS, ids=[" ".join(argv) or "tagseg" for argv, _ in COMMANDS])
def test_help_keeps_every_word_value_name_and_default(argv, command, columns, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", str(columns))
    result = runner.invoke(app, [*argv, "--help"], env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    shown = _words(result.output)
    assert not re.search(r"<(str|int|float|bool|path|list\[[a-z]+\])>", result.output), "a Python type label"
    assert "{" + "inputs" not in result.output and "…" not in result.output and "\\[" not in result.output
    assert "Usage: tagseg" in result.output
    for param in command.params:
        if getattr(param, "hidden", False) or param.name == "help":
            continue
        if param.help:
            assert _words(param.help) in shown, f"{param.name}: help text lost or cut"
        if param.param_type_name == "option":
            assert any(flag in shown for flag in param.opts), param.opts
        default = getattr(param.default, "value", param.default)  # an enum member shows its value
        if param.param_type_name == "option" and param.show_default is not False and isinstance(default, (int, float, str)) \
                and not isinstance(default, bool) and str(default):
            assert f"default: {default}" in shown, f"{param.name}: default {default!r} not shown whole"


def test_brackets_in_help_are_text_and_settings_show_each_presets_default() -> None:
    segment = _words(runner.invoke(app, ["segment", "--help"], env={"COLUMNS": "80"}).output)
    assert "'tagseg[ray]'" in segment or "'.[ray]'" in segment
    assert "[default: openai/clip-vit-large-patch14 (paper); fast: openai/clip-vit-base-patch16, toy: toy]" in segment
    assert "--crf / --no-crf" in segment and "[default: on (paper)]" in segment
    assert "Usage: tagseg segment [OPTIONS] INPUTS..." in segment
    evaluate = _words(runner.invoke(app, ["eval", "--help"]).output)
    assert "-k, --num-clusters" in evaluate and "--no-crf" in evaluate and "[paper:" not in evaluate


def test_a_group_without_a_command_prints_its_help() -> None:
    for argv in ([], ["models"], ["db"], ["config"]):
        result = runner.invoke(app, argv)
        assert result.exit_code == 0 and "Usage: tagseg" in result.output and "Commands" in result.output
