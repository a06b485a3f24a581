"""Options shared by the commands that build pipeline settings (segment, config show, serve, models).

The settings flags are generated from the declaration in :mod:`tagseg.config` (:func:`with_settings`).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import tomllib
import typing
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Callable, Iterator, Literal, Optional, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from tagseg.config import PRESETS, Setting, TAGConfig, declared_settings, resolve_config
from tagseg.errors import TagsegError

errors = Console(stderr=True, highlight=False, soft_wrap=True)

T = TypeVar("T")

SETTINGS = "Settings (override the preset and --config)"
DEFAULT_PRESET = "paper"

Preset = Annotated[
    Optional[str],
    typer.Option(
        "--preset", "-p", help=f"Named settings: {', '.join(PRESETS)}.  [default: {DEFAULT_PRESET}; tagseg eval --dataset toy: toy]", rich_help_panel=SETTINGS,
        show_default=False,
    ),
]
ConfigFile = Annotated[
    Optional[Path],
    typer.Option(
        "--config",
        "-c",
        envvar="TAGSEG_CONFIG",
        help="TOML file of settings (any `tagseg config show` key; `preset = ...` too). Flags override it.",
        rich_help_panel=SETTINGS,
        show_default=False,
    ),
]


def preset_defaults(item: Setting) -> str:
    """A setting's default as ``--help`` shows it: the default preset's value, then the presets that differ.

    ``  [default: 15 (paper); fast: 10, toy: 8]``; nothing for settings that are empty by default.
    """
    def shown(config: TAGConfig) -> str:
        value = getattr(config, item.name)
        if dataclasses.is_dataclass(value) and hasattr(value, "enabled"):  # the CRF table switches on and off
            value = value.enabled
        if isinstance(value, bool):
            return "on" if value else "off"
        return "" if value in ([], {}, None, "") else str(value)

    values = {name: shown(config) for name, config in PRESETS.items()}
    default = values.pop(DEFAULT_PRESET)
    others = [f"{name}: {value or 'none'}" for name, value in values.items() if value != default]
    if not default and not others:
        return ""
    return f"  [default: {default or 'none'} ({DEFAULT_PRESET}){'; ' + ', '.join(others) if others else ''}]"


def setting_panel(section: str) -> str:
    """The ``--help`` panel of a section's flags, named after its TOML table ``[section]``."""
    return f"Settings: {section}"


def _option(item: Setting, flags: tuple[str, ...], hidden: bool = False) -> Any:
    """The typer annotation of one declared setting's flag(s)."""
    if item.type is bool or dataclasses.is_dataclass(item.type):  # a switch; the CRF table switches on and off
        kind: Any = bool
        flags = (f"{flags[0]}/--no-{flags[0].removeprefix('--')}", *flags[1:])
    elif item.choices:
        kind = Literal[item.choices]  # type: ignore[valid-type]  (typer lists and checks the choices)
    elif item.type in (int, float, Path):
        kind = item.type
    else:  # text, and the values read from text: 'auto' or k, word lists, alias files
        kind = str
    option = typer.Option(
        *flags,
        help=f"{item.help}{preset_defaults(item)}",
        rich_help_panel=setting_panel(item.section),
        show_default=False,
        hidden=hidden,
    )
    return Annotated[Optional[kind], option]


CLI_SETTINGS = [item for item in declared_settings() if item.cli]
"""The declared settings that have flags: ``--field-name`` (and a short flag, and hidden old spellings)."""

_FLAGS = {item.name: _option(item, (item.flag, *([item.short] if item.short else []))) for item in CLI_SETTINGS}
_OLD_FLAGS = {
    f"old_{item.name}": (item.name, _option(item, item.old_flags, hidden=True)) for item in CLI_SETTINGS if item.old_flags
}

FeatureModel = _FLAGS["feature_model"]
ClipModel = _FLAGS["clip_model"]
SamModel = _FLAGS["sam_model"]
Segmenter = _FLAGS["segmenter"]


def with_settings(command: Callable[..., T]) -> Callable[..., T]:
    """Give a typer command ``--preset``, ``--config`` and one flag per declared setting.

    The command declares a ``settings: TAGConfig`` parameter and receives the effective settings
    (preset, then the TOML file, then the flags given) instead of the flags themselves. A command
    whose default preset depends on its other arguments (``tagseg eval``: ``toy`` for the toy
    dataset) declares ``settings: Callable[[str], TAGConfig]`` instead and calls it with that
    default, which applies when neither ``--preset`` nor ``--config`` is given.
    """
    signature = inspect.signature(command, eval_str=True)
    deferred = signature.parameters["settings"].annotation is not TAGConfig
    own = [parameter for name, parameter in signature.parameters.items() if name != "settings"]
    added = {"preset": Preset, "config": ConfigFile, **_FLAGS, **{name: option for name, (_, option) in _OLD_FLAGS.items()}}
    parameters = own + [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=None)
        for name, annotation in added.items()
    ]

    @functools.wraps(command)
    def run(**values: Any) -> T:
        flags = {name: values.pop(name) for name in _FLAGS}
        for old, (name, _) in _OLD_FLAGS.items():
            if flags[name] is None:
                flags[name] = values.pop(old)
            else:
                values.pop(old)
        preset, config = values.pop("preset"), values.pop("config")
        if deferred:
            def settings_for(default: str) -> TAGConfig:
                return build_config(preset or (None if config else default), config, **flags)

            return command(settings=settings_for, **values)
        with reported_errors():
            settings = build_config(preset, config, **flags)
        return command(settings=settings, **values)

    run.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    run.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters}
    return run


def build_config(preset: Optional[str], config: Optional[Path], **flags: Any) -> TAGConfig:
    """The effective settings: preset, then the TOML file, then the flags that were given (raw flag values)."""
    values = {name: _flag_value(name, value) for name, value in flags.items() if value is not None}
    return resolve_config(preset, config, **values)


def _flag_value(name: str, value: Any) -> Any:
    """A setting from its flag's text: ``--num-clusters`` a number or 'auto', word lists and alias files read."""
    if name == "num_clusters":
        return _clusters(value)
    if name == "crf":
        return value
    if name == "method_settings":
        return _method_settings(value)
    kind = {item.name: item.type for item in CLI_SETTINGS}[name]
    if typing.get_origin(kind) in (list, dict):
        from tagseg.controls import read_aliases, read_words

        return read_words(value) if typing.get_origin(kind) is list else read_aliases(value)
    return value


def _clusters(value: str) -> int | str:
    """``--num-clusters``: a positive number or ``auto``."""
    if value == "auto":
        return value
    if value.isdigit() and int(value) >= 1:
        return int(value)
    raise typer.BadParameter(f"{value!r} is neither a positive number nor 'auto'.", param_hint="--num-clusters")


def _method_settings(value: str) -> dict[str, Any]:
    """``--method-settings``: ``name=value`` pairs, comma-separated; values read as TOML (``3.0``, ``true``), else text."""
    settings: dict[str, Any] = {}
    for pair in filter(None, (part.strip() for part in value.split(","))):
        name, equals, text = (piece.strip() for piece in pair.partition("="))
        if not equals or not name:
            raise typer.BadParameter(f"{pair!r} is not name=value, e.g. gaussian_std=3.0", param_hint="--method-settings")
        try:
            settings[name] = tomllib.loads(f"value = {text}")["value"]
        except tomllib.TOMLDecodeError:
            settings[name] = text
    return settings


@contextmanager
def reported_errors() -> Iterator[None]:
    """Turn a :class:`TagsegError` into one red line on stderr and exit status 1, without a traceback."""
    try:
        yield
    except TagsegError as error:
        errors.print(f"[red]Error:[/red] {escape(str(error))}")
        raise typer.Exit(1) from None
