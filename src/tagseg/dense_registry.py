"""The dense CLIP methods by name and their settings dataclasses, without torch.

The settings (:mod:`tagseg.config`) check ``dense_method`` against :data:`DENSE_METHODS` and
``method_settings`` with :func:`dense_method_settings`; the methods themselves live in
:mod:`tagseg.backbones.dense_methods`, which needs torch. A built-in method is listed here by where
its class is, imported on first lookup; a method of your own is added with
:func:`tagseg.backbones.dense_methods.register_dense_method` and is then a valid ``dense_method``
setting too.
"""

from __future__ import annotations

import dataclasses
import importlib
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from tagseg.errors import ConfigError

__all__ = [
    "DENSE_METHODS",
    "ClearCLIPSettings",
    "DenseMethodRegistry",
    "GEMSettings",
    "MaskCLIPSettings",
    "NACLIPSettings",
    "ProxyCLIPSettings",
    "SCLIPSettings",
    "SlidingWindow",
    "dense_method_settings",
]


# Settings, one frozen dataclass per method


@dataclass(frozen=True)
class GEMSettings:
    """GEM: ``depth`` final blocks carry the self-self attention stream (official code: 6, its
    ``depth=7`` counting one past the last block). ``depth=0`` gives the plain final tokens."""

    depth: int = 6

    def __post_init__(self) -> None:
        if self.depth < 0:
            raise ConfigError(f"gem_depth must be 0 or more, got {self.depth}")


@dataclass(frozen=True)
class MaskCLIPSettings:
    """MaskCLIP: ``keep_residual`` adds the block input back, ``keep_mlp`` runs the feed-forward
    network after the identity attention (both kept in the official code)."""

    keep_residual: bool = True
    keep_mlp: bool = True


@dataclass(frozen=True)
class SCLIPSettings:
    """SCLIP: ``keep_residual`` and ``keep_mlp`` keep the last block's residual connection and
    feed-forward network around the correlative attention (both kept in the official code)."""

    keep_residual: bool = True
    keep_mlp: bool = True


@dataclass(frozen=True)
class ClearCLIPSettings:
    """ClearCLIP: ``keep_residual`` and ``keep_mlp`` put back the residual connection and the
    feed-forward network the method removes (official default ``ignore_residual=True``: neither)."""

    keep_residual: bool = False
    keep_mlp: bool = False


@dataclass(frozen=True)
class NACLIPSettings:
    """NACLIP: ``gaussian_std`` is the standard deviation, in patches, of the Gaussian neighbourhood
    added to the key-key scores (official 5.0; ``None`` drops the neighbourhood: plain key-key
    attention); ``keep_residual``/``keep_mlp`` as for ClearCLIP (official "reduced" block: neither)."""

    gaussian_std: float | None = 5.0
    keep_residual: bool = False
    keep_mlp: bool = False

    def __post_init__(self) -> None:
        if self.gaussian_std is not None and not self.gaussian_std > 0:
            raise ConfigError(f"NACLIP's gaussian_std must be positive or None, got {self.gaussian_std}")


@dataclass(frozen=True)
class ProxyCLIPSettings:
    """ProxyCLIP: proxy similarities ``S`` become attention scores ``gamma * (S - beta * mean(S))``,
    negative ones masked out (official ``beta=1.2``, ``gamma=3.0``); ``keep_residual``/``keep_mlp``
    as for ClearCLIP (official: neither)."""

    beta: float = 1.2
    gamma: float = 3.0
    keep_residual: bool = False
    keep_mlp: bool = False

    def __post_init__(self) -> None:
        if not self.gamma > 0:
            raise ConfigError(f"ProxyCLIP's gamma must be positive, got {self.gamma}")


@dataclass(frozen=True)
class SlidingWindow:
    """Sliding-window inference: square windows of ``size`` pixels every ``stride`` pixels.

    Windows are laid out as in the methods' official evaluations (mmsegmentation's slide mode):
    along each side, starts ``0, stride, 2 * stride, ...`` with the last window flush with the
    end, and a side shorter than ``size`` taken whole. Official settings: SCLIP and NACLIP
    224/112, ClearCLIP 448/224, ProxyCLIP 336/112 (on images resized to a short side of 336 or 448).
    Both numbers must be multiples of the model's patch size.
    """

    size: int
    stride: int

    def __post_init__(self) -> None:
        if self.size < 1 or not 1 <= self.stride <= self.size:
            raise ConfigError(
                f"a sliding window needs size >= 1 and 1 <= stride <= size, got size {self.size}, stride {self.stride}"
            )

    def check(self, patch_size: int) -> None:
        """Refuse a window or stride that is not a whole number of patches."""
        if self.size % patch_size or self.stride % patch_size:
            raise ConfigError(
                f"sliding window size {self.size} and stride {self.stride} must be multiples of the patch size "
                f"{patch_size}; try size {max(1, round(self.size / patch_size)) * patch_size}, "
                f"stride {max(1, round(self.stride / patch_size)) * patch_size}"
            )



class DenseMethodRegistry(Mapping[str, Any]):
    """Method name -> :class:`~tagseg.backbones.dense_methods.DenseMethod` subclass.

    Names, ``in`` and iteration import nothing; looking a built-in method up imports its module.
    """

    def __init__(self, builtin: Mapping[str, tuple[str, type]]) -> None:
        self._locations = {name: location for name, (location, _) in builtin.items()}  # name -> "module:Class"
        self._settings = {name: settings_type for name, (_, settings_type) in builtin.items()}
        self._classes: dict[str, Any] = {}

    def register(self, method: Any) -> Any:
        """Add a method class under its ``name``; a name is registered once."""
        if method.name in self:
            raise ConfigError(f"a dense method named {method.name!r} is already registered")
        self._classes[method.name] = method
        return method

    def unregister(self, name: str) -> None:
        """Remove a method added with :meth:`register` (built-in methods stay)."""
        if name not in self._locations:
            self._classes.pop(name, None)

    def settings_type(self, name: str) -> type:
        """The settings dataclass of the method ``name`` (a built-in method's without importing it)."""
        if name not in self:
            raise ConfigError(f"unknown dense method {name!r}; choose one of {', '.join(self)}")
        return self._settings[name] if name in self._settings else self[name].settings_type

    def __contains__(self, name: object) -> bool:
        return name in self._locations or name in self._classes

    def __getitem__(self, name: str) -> Any:
        if name not in self._classes and name in self._locations:
            module, _, attribute = self._locations[name].partition(":")
            self._classes[name] = getattr(importlib.import_module(module), attribute)
        return self._classes[name]

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys([*self._locations, *self._classes]))

    def __len__(self) -> int:
        return len(set(self._locations) | set(self._classes))


DENSE_METHODS = DenseMethodRegistry(
    {
        name: (f"tagseg.backbones.dense_methods:{attribute}", settings_type)
        for name, attribute, settings_type in [
            ("gem", "GEM", GEMSettings),
            ("maskclip", "MaskCLIP", MaskCLIPSettings),
            ("sclip", "SCLIP", SCLIPSettings),
            ("clearclip", "ClearCLIP", ClearCLIPSettings),
            ("naclip", "NACLIP", NACLIPSettings),
            ("proxyclip", "ProxyCLIP", ProxyCLIPSettings),
        ]
    }
)
"""Every dense method by name: the built-in ones (imported on first lookup) and the registered ones."""


def dense_method_settings(name: str, values: Mapping[str, Any]) -> Any:
    """The settings dataclass of the method ``name`` from a mapping of its fields, type-checked.

    Whole numbers take ints, real numbers ints or floats, switches only booleans; a field that may be ``None`` also takes
    the text ``"none"`` (any case), since TOML and command-line values have no null.
    """
    settings_type = DENSE_METHODS.settings_type(name)
    hints = typing.get_type_hints(settings_type)
    fields = {field.name for field in dataclasses.fields(settings_type)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join(unknown)} for the {name} method; it takes {', '.join(sorted(fields))}"
        )
    checked = {}
    for key, value in values.items():
        kinds = typing.get_args(hints[key]) or (hints[key],)
        if type(None) in kinds and (value is None or (isinstance(value, str) and value.lower() == "none")):
            checked[key] = None
        elif bool in kinds and isinstance(value, bool):
            checked[key] = value
        elif not isinstance(value, bool) and (
            (float in kinds and isinstance(value, (int, float))) or (int in kinds and isinstance(value, int))
        ):
            checked[key] = value
        else:
            wanted = " or ".join("none" if kind is type(None) else kind.__name__ for kind in kinds)
            raise ConfigError(f"the {name} method's {key} must be {wanted}, not {value!r}")
    return settings_type(**checked)
