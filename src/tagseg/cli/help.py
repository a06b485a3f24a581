"""``--help`` as plain text, the way git, uv and huggingface-cli print it.

Typer's rich help reads brackets as markup (``pip install 'tagseg[ray]'`` lost its ``[ray]``),
labels values with Python types (``<list[str]>``), writes the usage as ``{inputs}...`` and cuts
long defaults at the panel's edge. These classes print instead: the usage with upper-case
argument names, the command's text with its own line breaks, then one section per help panel
(``rich_help_panel``) listing each flag with a plain value name (``PATH``, ``N``, ``TEXT``,
``[local|ray]``), its help and its default in full, wrapped to the terminal.
"""

from __future__ import annotations

import inspect
import textwrap
import typing
from typing import Any

from typer.core import TyperCommand, TyperGroup

__all__ = ["PlainCommand", "PlainGroup", "value_name"]

_VALUE_NAMES = {int: "N", float: "NUMBER", str: "TEXT"}


def value_name(param: Any) -> str:
    """The placeholder shown after a flag or for an argument: its metavar, choices, or a plain kind of value."""
    if param.metavar:
        return str(param.metavar)
    if param.param_type_name == "argument":
        return param.name.upper()
    choices, kind = _kind(param)
    if choices:
        return "[" + "|".join(str(getattr(choice, "value", choice)) for choice in choices) + "]"
    return kind


def _kind(param: Any) -> tuple[tuple[Any, ...] | None, str]:
    """The choices of a parameter (or None) and its plain kind of value, from typer's description of its type
    (or click's, for typer versions that keep one)."""
    described = getattr(param, "type_descriptor", None)
    if described is not None:
        annotation = described.annotation
        if described.is_list:
            annotation = typing.get_args(annotation)[0]
        if described.is_path:
            return described.choices, "PATH"
        return described.choices, _VALUE_NAMES.get(annotation, "TEXT")
    kind = param.type
    names = {"integer": "N", "integer range": "N", "float": "NUMBER", "float range": "NUMBER", "path": "PATH"}
    return getattr(kind, "choices", None), names.get(kind.name, "TEXT")


def _is_switch(param: Any) -> bool:
    return bool(getattr(param, "is_flag", False))


def _flags(param: Any) -> str:
    if param.param_type_name == "argument":
        return value_name(param) + ("..." if param.nargs != 1 else "")
    short = sorted((flag for flag in param.opts if not flag.startswith("--")), key=len)
    long = [flag for flag in param.opts if flag.startswith("--")]
    names = ", ".join([*short, *long])
    if param.secondary_opts:
        names += " / " + ", ".join(param.secondary_opts)
    return names if _is_switch(param) else f"{names} {value_name(param)}"


def _range(param: Any) -> str:
    bounds = param if hasattr(param, "min") else getattr(param, "type", None)
    low, high = getattr(bounds, "min", None), getattr(bounds, "max", None)
    if low is not None and high is not None:
        return f"{low} to {high}"
    if low is not None:
        return f"at least {low}"
    if high is not None:
        return f"at most {high}"
    return ""


def _default(param: Any) -> str:
    if param.show_default is False or param.required or param.default is None or param.param_type_name == "argument":
        return ""
    value = param.default
    if _is_switch(param):
        if not param.secondary_opts:
            return ""  # a plain switch is off unless given
        return f"default: {param.opts[0] if value else param.secondary_opts[0]}"
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    value = getattr(value, "value", value)  # an enum member
    return f"default: {value}" if str(value) != "" else ""


def _help(param: Any) -> str:
    notes = [note for note in (_default(param), _range(param)) if note]
    if param.envvar:
        envvars = param.envvar if isinstance(param.envvar, (list, tuple)) else [param.envvar]
        notes.append("env var: " + ", ".join(envvars))
    if param.required:
        notes.append("required")
    text = " ".join((param.help or "").split())
    return f"{text}  [{'; '.join(notes)}]" if notes else text


def _sections(command: Any, ctx: Any) -> dict[str, list[tuple[str, str]]]:
    sections: dict[str, list[tuple[str, str]]] = {}
    for param in command.get_params(ctx):
        if getattr(param, "hidden", False):
            continue
        default_panel = "Arguments" if param.param_type_name == "argument" else "Options"
        panel = getattr(param, "rich_help_panel", None) or default_panel
        sections.setdefault(panel, []).append((_flags(param), _help(param)))
    return sections


def _usage(command: Any, ctx: Any) -> str:
    pieces = ["[OPTIONS]"]
    for param in command.get_params(ctx):
        if param.param_type_name == "argument" and not getattr(param, "hidden", False):
            name = value_name(param) + ("..." if param.nargs != 1 else "")
            pieces.append(name if param.required else f"[{name}]")
    return " ".join(pieces)


def _write_text(formatter: Any, text: str) -> None:
    """The command's text, paragraph by paragraph, rewrapped to the terminal; a paragraph that starts with a
    line holding only ``\\b`` keeps its line breaks (click's convention, for lists)."""
    width = max(formatter.width - formatter.current_indent - 2, 20)
    indent = " " * (formatter.current_indent + 2)
    for paragraph in inspect.cleandoc(text).split("\n\n"):
        lines = paragraph.splitlines()
        if lines and lines[0].strip() == "\b":
            pieces = [piece for line in lines[1:] for piece in textwrap.wrap(line, width, subsequent_indent="  ") or [""]]
        else:
            pieces = textwrap.wrap(" ".join(paragraph.split()), width, break_on_hyphens=False)
        formatter.write_paragraph()
        formatter.write("".join(f"{indent}{piece}\n" for piece in pieces))


def _write_rows(formatter: Any, rows: list[tuple[str, str]], widest: int = 30) -> None:
    """Flags and their help in two columns; a flag wider than ``widest`` puts its help on the next line.

    Lines break at spaces only, so ids, paths and defaults (``openai/clip-vit-large-patch14``) stay whole.
    """
    indent = " " * (formatter.current_indent)
    first = min(max((len(flags) for flags, _ in rows), default=0), widest) + 2
    width = max(formatter.width - formatter.current_indent - first, 20)
    for flags, text in rows:
        lines = textwrap.wrap(text, width, break_on_hyphens=False, break_long_words=False) or [""]
        if len(flags) + 2 > first:
            formatter.write(f"{indent}{flags}\n")
        else:
            formatter.write(f"{indent}{flags.ljust(first)}{lines.pop(0)}\n")
        formatter.write("".join(f"{indent}{' ' * first}{line}\n" for line in lines))


class PlainCommand(TyperCommand):
    """A command whose ``--help`` is plain text (see the module's text)."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        formatter.write_usage(ctx.command_path, _usage(self, ctx))
        if self.help:
            _write_text(formatter, self.help)
        for title, rows in _sections(self, ctx).items():
            with formatter.section(title):
                _write_rows(formatter, rows)
        if self.epilog:
            _write_text(formatter, self.epilog)


class PlainGroup(TyperGroup):
    """A command group whose ``--help`` is plain text; given no command it prints its help and exits 0."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not args and self.no_args_is_help and not ctx.resilient_parsing:
            formatter = ctx.make_formatter()
            self.format_help(ctx, formatter)
            print(formatter.getvalue().rstrip("\n"))
            ctx.exit(0)
        return super().parse_args(ctx, args)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        formatter.write_usage(ctx.command_path, "[OPTIONS] COMMAND [ARGS]...")
        if self.help:
            _write_text(formatter, self.help)
        options = _sections(self, ctx)
        for title, rows in options.items():
            with formatter.section(title):
                _write_rows(formatter, rows)
        panels: dict[str, list[tuple[str, str]]] = {}
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is None or command.hidden:
                continue
            panel = getattr(command, "rich_help_panel", None) or "Commands"
            panels.setdefault(panel, []).append((name, command.get_short_help_str(limit=300)))
        for title, rows in panels.items():
            with formatter.section(title):
                _write_rows(formatter, rows)
