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

from tagseg.config import PRESETS, Setting, TAGConfig, declared_in, declared_settings, resolve_config
from tagseg.errors import TagsegError

errors = Console(stderr=True, highlight=False, soft_wrap=True)

T = TypeVar("T")
D = TypeVar("D")

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


def setting_panel(section: str) -> str:
    """The ``--help`` panel of a section's flags, named after its TOML table ``[section]``."""
    return f"Settings: {section}"


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


def _option(item: Setting, flags: tuple[str, ...], hidden: bool = False, per_preset: bool = True) -> Any:
    """The typer annotation of one declared setting's flag(s); its help ends with its default: per preset
    for pipeline settings (:func:`preset_defaults`), else the declared one."""
    if item.type is bool or dataclasses.is_dataclass(item.type):  # a switch; the CRF table switches on and off
        kind: Any = bool
        flags = (f"{flags[0]}/--no-{flags[0].removeprefix('--')}", *flags[1:])
    elif item.choices:
        kind = Literal[item.choices]  # type: ignore[valid-type]  (typer lists and checks the choices)
    elif item.type in (int, float, Path):
        kind = item.type
    elif typing.get_origin(item.type) is tuple:  # a repeatable flag
        kind = list[str]
    else:  # text, and the values read from text: 'auto' or k, word lists, alias files
        kind = str
    option = typer.Option(
        *flags,
        help=f"{item.help}{preset_defaults(item) if per_preset else _declared_default(item)}",
        rich_help_panel=item.panel or setting_panel(item.section),
        show_default=False,
        hidden=hidden,
        envvar=item.envvar,
    )
    return Annotated[Optional[kind], option]


def _declared_default(item: Setting) -> str:
    """``  [default: value]`` of a setting declared outside the presets; nothing for empty defaults."""
    if item.default in ([], {}, (), None) or dataclasses.is_dataclass(item.default):
        return ""
    shown = ("on" if item.default else "off") if isinstance(item.default, bool) else item.default
    return f"  [default: {shown}]"


def _old_flags(items: list[Setting], per_preset: bool = True) -> dict[str, tuple[str, Any]]:
    """``old_<name>`` -> (name, hidden option) for every earlier spelling of a flag."""
    return {
        f"old_{item.name}": (item.name, _option(item, item.old_flags, hidden=True, per_preset=per_preset))
        for item in items if item.old_flags
    }


CLI_SETTINGS = [item for item in declared_settings() if item.cli]
"""The declared settings that have flags: ``--field-name`` (and a short flag, and hidden old spellings)."""

_FLAGS = {item.name: _option(item, (item.flag, *([item.short] if item.short else []))) for item in CLI_SETTINGS}
_OLD_FLAGS = _old_flags(CLI_SETTINGS)

FeatureModel = _FLAGS["feature_model"]
ClipModel = _FLAGS["clip_model"]
SamModel = _FLAGS["sam_model"]
Segmenter = _FLAGS["segmenter"]


def _with_flags(
    command: Callable[..., T], parameter: str, flags: dict[str, Any], build: Callable[[dict[str, Any]], Any]
) -> Callable[..., T]:
    """``command`` with the typer ``flags`` (name -> annotation) in place of its ``parameter``, which
    receives ``build(values of the flags)``."""
    signature = inspect.signature(command, eval_str=True)
    own = [value for name, value in signature.parameters.items() if name != parameter]
    parameters = own + [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=None)
        for name, annotation in flags.items()
    ]

    @functools.wraps(command)
    def run(**values: Any) -> T:
        given = {name: values.pop(name) for name in flags}
        with reported_errors():
            built = build(given)
        return command(**{parameter: built}, **values)

    run.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    run.__annotations__ = {value.name: value.annotation for value in parameters}
    return run


def _newest(values: dict[str, Any], old: dict[str, tuple[str, Any]]) -> dict[str, Any]:
    """Flag values with each old spelling's folded into its setting's (the new spelling wins)."""
    for old_name, (name, _) in old.items():
        value = values.pop(old_name)
        if values[name] is None:
            values[name] = value
    return values


def with_settings(command: Callable[..., T]) -> Callable[..., T]:
    """Give a typer command ``--preset``, ``--config`` and one flag per declared setting.

    The command declares a ``settings: TAGConfig`` parameter and receives the effective settings
    (preset, then the TOML file, then the flags given) instead of the flags themselves. A command
    whose default preset depends on its other arguments (``tagseg eval``: ``toy`` for the toy
    dataset) declares ``settings: Callable[[str], TAGConfig]`` instead and calls it with that
    default, which applies when neither ``--preset`` nor ``--config`` is given.
    """
    deferred = inspect.signature(command, eval_str=True).parameters["settings"].annotation is not TAGConfig

    def build(values: dict[str, Any]) -> TAGConfig | Callable[[str], TAGConfig]:
        values = _newest(values, _OLD_FLAGS)
        preset, config = values.pop("preset"), values.pop("config")
        if deferred:
            def settings_for(default: str) -> TAGConfig:
                with reported_errors():
                    return build_config(preset or (None if config else default), config, **values)

            return settings_for
        return build_config(preset, config, **values)

    added = {"preset": Preset, "config": ConfigFile, **_FLAGS, **{name: option for name, (_, option) in _OLD_FLAGS.items()}}
    return _with_flags(command, "settings", added, build)


def with_declared(kind: type[D], parameter: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Give a typer command one flag per :func:`~tagseg.config.setting` of the dataclass ``kind``
    (e.g. :class:`~tagseg.serve_settings.ServeSettings`); its ``parameter`` receives the ``kind``
    built from the flags given, the declared defaults standing for the rest."""
    items = [item for item in declared_in(kind, parameter) if item.cli]
    flags = {item.name: _option(item, (item.flag,), per_preset=False) for item in items}
    old = _old_flags(items, per_preset=False)
    types = {item.name: item.type for item in items}

    def build(values: dict[str, Any]) -> D:
        values = _newest(values, old)
        return kind(**{name: _declared_value(types[name], value) for name, value in values.items() if value is not None})

    def decorate(command: Callable[..., T]) -> Callable[..., T]:
        return _with_flags(command, parameter, {**flags, **{name: option for name, (_, option) in old.items()}}, build)

    return decorate


def _declared_value(kind: Any, value: Any) -> Any:
    """A setting from its flag's value: repeated flags as a tuple, alias tables read from their file."""
    if typing.get_origin(kind) is tuple:
        return tuple(value)
    if typing.get_origin(kind) is dict:
        from tagseg.label_space import read_aliases

        return read_aliases(value)
    return value


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
        from tagseg.label_space import read_aliases, read_words

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
