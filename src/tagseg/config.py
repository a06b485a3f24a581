"""Settings of the TAG pipeline: one frozen section per stage, named presets, TOML reading and writing.

Every setting is declared once, as a field of its section with :func:`setting` metadata (help
text, default, allowed values, command-line flag). The command line (:mod:`tagseg.cli.options`),
``tagseg config show`` (:func:`config_toml`) and the settings table of ``docs/settings.md``
(:func:`settings_markdown`) are generated from that declaration.

* :class:`ModelSettings` (``models``): which models, at what input size, on which device.
* :class:`ClusterSettings` (``clusters``): Stage 1, k-means segments (or Segment Anything's masks,
  :class:`SamSettings`), granularity and the CRF; read by the segmenter :mod:`tagseg.segmenters` names.
* :class:`EmbeddingSettings` (``embedding``): Stage 2, the dense CLIP method and its sliding windows.
* :class:`NamingSettings` (``naming``): Stage 3, retrieval and the candidate-name rules.
* :class:`ControlSettings` (``controls``): the optional naming controls applied after Stage 3.

:class:`TAGConfig` holds the five sections and keeps the flat view: ``config.num_clusters``,
``TAGConfig(num_clusters=3)``, ``config.replace(num_clusters=3, crf=False)`` and the flat
:meth:`TAGConfig.to_dict` recorded in every result.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Collection, Mapping, TypeVar

from tagseg.dense_registry import DENSE_METHODS, SlidingWindow, dense_method_settings
from tagseg.segmenter_registry import SEGMENTERS
from tagseg.errors import ConfigError

__all__ = [
    "CRFSettings",
    "ClusterSettings",
    "ControlSettings",
    "DTYPES",
    "EmbeddingSettings",
    "ModelSettings",
    "NamingSettings",
    "PRESETS",
    "SECTIONS",
    "SamSettings",
    "Setting",
    "SettingsSection",
    "TAGConfig",
    "config_toml",
    "declared_in",
    "declared_settings",
    "load_config",
    "preset",
    "resolve_config",
    "setting",
    "settings_markdown",
]


def setting(
    default: Any,
    help: str,
    *,
    choices: Collection[str] = (),
    check: Callable[[Any], bool] | None = None,
    cli: bool = True,
    short: str | None = None,
    old_flags: tuple[str, ...] = (),
    flag: str | None = None,
    envvar: str | None = None,
    panel: str | None = None,
) -> Any:
    """Declare one setting: a dataclass field whose metadata says everything about it.

    ``help`` is the one description (command line, ``config show`` comments, docs table);
    ``choices`` and ``check`` say which values are valid; ``cli`` whether the commands that build
    settings get a ``--field-name`` flag for it (``flag`` another name), ``short`` a short flag,
    ``old_flags`` earlier spellings that still work, hidden from ``--help``, ``envvar`` an environment
    variable the flag reads, and ``panel`` the ``--help`` panel it is shown in (default: its section's).
    """
    metadata = {
        "help": help, "choices": choices, "check": check, "cli": cli, "short": short, "old_flags": old_flags,
        "flag": flag, "envvar": envvar, "panel": panel,
    }
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)  # frozen sections (the CRF table) are safe to share


S = TypeVar("S", bound="SettingsSection")


class SettingsSection:
    """Validation shared by frozen dataclasses of :func:`setting` fields (the sections, the service's
    settings): every field's declared check, then :meth:`_invalid`."""

    _prefix: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, item.name)
            if isinstance(value, tuple) and item.default is dataclasses.MISSING:  # only list and dict settings
                object.__setattr__(self, item.name, list(value))  # word lists given as tuples
        bad = [item.name for item in dataclasses.fields(self) if not _valid(item, getattr(self, item.name))]  # type: ignore[arg-type]
        bad += [name for name in self._invalid() if name not in bad]
        if bad:
            values = ", ".join(f"{self._prefix}{name}={getattr(self, name)!r}" for name in bad)
            raise ConfigError(f"Invalid setting(s): {values}.")

    def _invalid(self) -> list[str]:
        """Settings that are wrong only together with another one."""
        return []

    def replace(self: S, **changes: Any) -> S:
        """A copy with some settings changed (validated again)."""
        return _changed(self, changes)


def _valid(item: dataclasses.Field, value: Any) -> bool:
    choices, check = item.metadata.get("choices"), item.metadata.get("check")
    try:
        return (not choices or value in choices) and (check is None or bool(check(value)))
    except TypeError:  # e.g. a string where a number belongs
        return False


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_words(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(word, str) and word for word in value)


@dataclass(frozen=True)
class CRFSettings(SettingsSection):
    """Dense CRF refinement of the segment map (reference constants by default)."""

    _prefix: ClassVar[str] = "crf."

    enabled: bool = setting(True, "Refine segment edges with a dense CRF.")
    iterations: int = setting(10, "Mean-field iterations.", check=lambda v: _is_int(v) and v >= 1)
    gaussian_sxy: float = setting(1.0, "Spatial standard deviation of the smoothness kernel.")
    gaussian_compat: float = setting(3.0, "Weight of the smoothness kernel.")
    bilateral_sxy: float = setting(67.0, "Spatial standard deviation of the appearance kernel.")
    bilateral_srgb: float = setting(3.0, "Colour standard deviation of the appearance kernel.")
    bilateral_compat: float = setting(4.0, "Weight of the appearance kernel.")
    scale: float = setting(
        1.0, "CRF grid relative to the working image; below 1 the marginals are upsampled (1 = the reference).",
        check=lambda v: isinstance(v, (int, float)) and 0.0 < v <= 1.0,
    )
    min_side: int = setting(
        224, "With scale below 1, the reduced CRF grid's shorter side is never below this many pixels (nor above the image's).",
        check=lambda v: _is_int(v) and v >= 1,
    )
    backend: str = setting(
        "pydensecrf", "Dense CRF implementation: 'pydensecrf' (C++, one image at a time on the CPU; the reference) or "
        "'torch' (on the features' device, all same-size images of a batch at once: choose it on GPUs or for batches).",
        choices=("pydensecrf", "torch"),
    )


def _is_fraction(value: Any) -> bool:
    return isinstance(value, (int, float)) and 0.0 <= value <= 1.0


@dataclass(frozen=True)
class SamSettings(SettingsSection):
    """Segment Anything's automatic mask generation (segment-anything's defaults but points_per_side)."""

    _prefix: ClassVar[str] = "sam."

    points_per_side: int = setting(
        16, "Point prompts per side of the grid (points_per_side**2 per crop), the main cost; segment-anything uses 32.",
        check=lambda v: _is_int(v) and v >= 1,
    )
    points_per_batch: int = setting(
        64, "Points per mask-decoder call (memory against speed only).", check=lambda v: _is_int(v) and v >= 1
    )
    pred_iou_threshold: float = setting(
        0.88, "Keep masks whose predicted IoU (SAM's own quality estimate) is above this (0: off).", check=_is_fraction
    )
    stability_threshold: float = setting(
        0.95, "Keep masks whose stability score (IoU of the mask at two logit cutoffs) is at least this (0: off).",
        check=_is_fraction,
    )
    stability_offset: float = setting(
        1.0, "Logit offset of the two cutoffs of the stability score.", check=lambda v: isinstance(v, (int, float)) and v > 0
    )
    mask_threshold: float = setting(0.0, "Logit cutoff that binarises the masks.")
    box_nms_threshold: float = setting(
        0.7, "Box IoU above which the less confident of two masks is a duplicate.", check=_is_fraction
    )
    crop_layers: int = setting(
        0, "Extra layers of (2**i)**2 overlapping crops, each with its own image embedding (0: the whole image only).",
        check=lambda v: _is_int(v) and v >= 0,
    )
    crop_overlap_ratio: float = setting(
        512 / 1500, "Overlap of first-layer crops, as a fraction of the shorter image side.",
        check=lambda v: isinstance(v, (int, float)) and 0.0 <= v < 1.0,
    )
    crop_nms_threshold: float = setting(0.7, "Box IoU for duplicates across crops (smaller crops win).", check=_is_fraction)
    min_region_area: int = setting(
        0, "Pixels: islands and holes smaller than this are removed from each mask (0: off).",
        check=lambda v: _is_int(v) and v >= 0,
    )


DTYPES = ("auto", "float32", "float16", "bfloat16")
"""The dtype names a configuration accepts; ``auto`` is bfloat16 where it runs natively, else float32."""


@dataclass(frozen=True)
class ModelSettings(SettingsSection):
    """Which models run, on what input and where; fixed once a TAG is built (not per call)."""

    feature_model: str = setting("facebook/dinov2-base", "Patch feature model (DINOv2): Hugging Face id or local directory.")
    clip_model: str = setting(
        "openai/clip-vit-large-patch14", "CLIP model (dense image embedder and text encoder): Hugging Face id or local directory."
    )
    sam_model: str = setting(
        "facebook/sam-vit-base",
        "Segment Anything checkpoint (a transformers SamModel, SlimSAM too): Hugging Face id or local directory; "
        "loaded only when segmenter is sam.",
    )
    database: str = setting(
        "default",
        "Text database: 'default' (the shipped vocabulary), 'landmarks' (it plus WordNet's named structures, "
        "places and landmarks), 'toy' or a folder made by `tagseg db build`.",
    )
    image_size: int = setting(
        448, "Working size in pixels the models see (square, or the longer side with keep_aspect_ratio).",
        check=lambda v: _is_int(v) and v >= 14,
    )
    keep_aspect_ratio: bool = setting(False, "Keep the image's aspect ratio at the working size instead of squaring it.")
    max_pixels: int = setting(
        100_000_000,
        "Largest input image in pixels (width x height), checked from the file header before decoding; "
        "raise it for huge images you trust (the HTTP service answers 413 above it).",
        check=lambda v: _is_int(v) and v >= 1,
    )
    normalize: bool = setting(True, "Normalise pixels with each model's own mean and deviation (off: as the reference code).", cli=False)
    device: str = setting("auto", "Device of the models: auto, cpu, cuda, cuda:1, mps ...")
    dtype: str = setting(
        "auto",
        "Floating-point type of the backbones: auto (bfloat16 where the CPU or GPU runs it natively, else "
        "float32; the resolved type is recorded in each result's models), or float32 for exact reproduction.",
        choices=DTYPES,
    )


@dataclass(frozen=True)
class ClusterSettings(SettingsSection):
    """Stage 1: k-means segment candidates (or SAM's masks), their number per image, small regions and the CRF."""

    segmenter: str = setting(
        "kmeans", "Stage 1: 'kmeans' (DINOv2 k-means segments, the paper's) or 'sam' (Segment Anything's masks, docs/sam.md).",
        choices=SEGMENTERS,
    )
    uncovered: str = setting(
        "fallback", "With segmenter sam, pixels no mask covers: 'fallback' (take the k-means segments, named as usual) "
        "or 'unlabelled' (one region named unknown_label; DINOv2 and k-means do not run).",
        choices=("fallback", "unlabelled"),
    )

    num_clusters: int | str = setting(
        15, "k of k-means: segment candidates per image, or 'auto' to choose k per image in [min_clusters, max_clusters].",
        check=lambda v: v == "auto" or (_is_int(v) and v >= 1), short="-k", old_flags=("--clusters",),
    )
    kmeans_restarts: int = setting(8, "k-means restarts; the best run is kept.", check=lambda v: _is_int(v) and v >= 1)
    kmeans_iterations: int = setting(100, "Iterations per k-means run.", check=lambda v: _is_int(v) and v >= 1)
    kmeans_backend: str = setting(
        "faiss", "k-means implementation: 'faiss' (the CPU, one image at a time; the reference) or 'torch' (on the "
        "features' device, all same-size images of a batch in one call: choose it on GPUs or for batches).",
        choices=("faiss", "torch"),
    )
    seed: int = setting(0, "Random seed of k-means.")
    min_clusters: int = setting(2, "Smallest k tried when num_clusters is 'auto'.", check=lambda v: _is_int(v) and v >= 2)
    max_clusters: int = setting(15, "Largest k tried when num_clusters is 'auto'.", check=_is_int)
    cluster_criterion: str = setting(
        "silhouette", "How 'auto' chooses k: the best silhouette or the knee of the inertia curve.",
        choices=("silhouette", "elbow"),
    )
    min_region_area: float = setting(
        0.0, "Merge regions smaller than this fraction of the image into their most similar neighbour.",
        check=lambda v: 0.0 <= v < 1.0,
    )
    crf: CRFSettings = setting(CRFSettings(), "Refine segment edges with a dense CRF (a switch, or a table of CRF settings).")
    sam: SamSettings = setting(SamSettings(), "Segment Anything's automatic mask generation with segmenter sam (a table; docs/sam.md).", cli=False)

    def _invalid(self) -> list[str]:
        return [] if self.min_clusters <= self.max_clusters else ["min_clusters", "max_clusters"]

    @property
    def on_device(self) -> bool:
        """Whether Stage 1 runs in torch (either backend 'torch'): the patch features then stay on the forward's device."""
        return self.kmeans_backend == "torch" or (self.crf.enabled and self.crf.backend == "torch")


@dataclass(frozen=True)
class EmbeddingSettings(SettingsSection):
    """Stage 2: the dense CLIP method that embeds every patch, its hyper-parameters and sliding windows."""

    dense_method: str = setting(
        "gem", "Dense CLIP method of the patch embeddings (docs/dense_methods.md).", choices=DENSE_METHODS
    )
    gem_depth: int = setting(
        6, "Number of last CLIP vision blocks run as GEM (self-self attention) blocks (dense_method gem).",
        check=lambda v: _is_int(v) and v >= 0,
    )
    method_settings: dict[str, Any] = setting(
        {}, "Hyper-parameters of the dense method by name, other than gem_depth (empty: its official code's; "
        "'none' for None). Flag: 'gaussian_std=3.0,keep_mlp=true'.",
        check=lambda v: isinstance(v, dict) and all(isinstance(key, str) for key in v),
    )
    window_size: int = setting(
        0, "Sliding-window inference: square windows of this many pixels, a multiple of CLIP's patch (0: off).",
        check=lambda v: _is_int(v) and v >= 0,
    )
    window_stride: int = setting(
        0, "Pixels from one sliding window to the next, 1 to window_size (0 when windows are off).",
        check=lambda v: _is_int(v) and v >= 0,
    )

    def _invalid(self) -> list[str]:
        if self.window_stride and not self.window_size:
            return ["window_size", "window_stride"]
        if self.window_size and not 1 <= self.window_stride <= self.window_size:
            raise ConfigError(
                f"Invalid embedding settings: sliding windows need 1 <= stride <= size, "
                f"not window_size={self.window_size}, window_stride={self.window_stride}."
            )
        if self.method_settings:  # checked against the method's settings dataclass
            try:
                self.dense_options()
            except ConfigError as error:
                raise ConfigError(f"Invalid embedding settings: {error}.") from None
        return []

    def dense_options(self) -> dict[str, Any]:
        """What :class:`~tagseg.backbones.clip.DenseCLIP` takes: ``method``, ``method_settings`` (the
        method's settings dataclass) and ``sliding_window`` (``None`` when off)."""
        if self.dense_method == "gem":
            if "depth" in self.method_settings:
                raise ConfigError("GEM's depth is the gem_depth setting, not method_settings.depth")
            values = {"depth": self.gem_depth, **self.method_settings}
        else:
            values = dict(self.method_settings)
        window = SlidingWindow(self.window_size, self.window_stride) if self.window_size else None
        return {
            "method": self.dense_method,
            "method_settings": dense_method_settings(self.dense_method, values),
            "sliding_window": window,
        }


@dataclass(frozen=True)
class NamingSettings(SettingsSection):
    """Stage 3: texts retrieved per segment and the rules that turn them into candidate names."""

    top_k: int = setting(10, "Texts retrieved per segment.", check=lambda v: _is_int(v) and v >= 1)
    duplicate_threshold: float = setting(
        0.94, "Cosine above which retrieved texts count as near-duplicates.", check=lambda v: 0.0 < v <= 1.0
    )
    prompt_template: str = setting(
        "{}", "Template a candidate name is put into before text encoding; {} marks the name.", check=lambda v: "{}" in v
    )
    min_count: int = setting(
        2, "Retrieved texts a word must occur in to become a candidate name.", check=lambda v: _is_int(v) and v >= 1
    )
    pos_filter: bool = setting(True, "Keep only nouns, adjectives, gerunds and participles as candidate words.")
    names: str = setting(
        "words", "Candidate names: 'words' (the paper's single words) or 'phrases' (also multi-word names).",
        choices=("words", "phrases"),
    )
    length_penalty: float = setting(
        0.01, "Cosine each word of a candidate beyond the first costs (phrases).", check=lambda v: v >= 0.0
    )
    cased_alpha: float = setting(
        0.0, "Weight of CaSED's retrieved-text term in the candidate score (0 = TAG).", check=lambda v: 0.0 <= v <= 1.0
    )


@dataclass(frozen=True)
class ControlSettings(SettingsSection):
    """Naming controls applied after Stage 3 (tagseg.controls), all off by default."""

    vocabulary: list[str] = setting(
        [], "Allowed names (empty: any). Flag: a file (one a line) or 'cat,dog,...'.", check=_is_words
    )
    vocabulary_mode: str = setting(
        "closest", "'closest': each candidate becomes the closest allowed name; 'direct': the allowed names compete.",
        choices=("closest", "direct"),
    )
    aliases: dict[str, str] = setting(
        {}, "Names replaced by another (many to one). Flag: a file of lines 'kitten, kitty -> cat'.",
        check=lambda v: isinstance(v, dict) and all(isinstance(t, str) and t for t in v.values()),
    )
    blocklist: list[str] = setting(
        [], "Names never given. Flag: a file (one a line) or 'thing,stuff'.",
        check=lambda v: isinstance(v, list) and all(isinstance(w, str) for w in v),
    )
    abstain_threshold: float = setting(
        -1.0, "Name a segment unknown_label when its best name scores below this cosine (-1: never).",
        old_flags=("--abstain-below",),
    )
    unknown_label: str = setting("unknown", "Name of segments below abstain_threshold.", check=bool)
    prefer_objects: bool = setting(False, "Prefer an object name to a scene or part word that scores close.")
    prefer_objects_margin: float = setting(
        0.03, "How close (cosine) an object name must score for prefer_objects.", check=lambda v: v >= 0.0
    )


SECTIONS: dict[str, type[SettingsSection]] = {
    "models": ModelSettings,
    "clusters": ClusterSettings,
    "embedding": EmbeddingSettings,
    "naming": NamingSettings,
    "controls": ControlSettings,
}
"""The sections of :class:`TAGConfig`, by attribute (and TOML table) name."""

_SECTION_OF = {item.name: name for name, kind in SECTIONS.items() for item in dataclasses.fields(kind)}


@dataclass(frozen=True, init=False)
class TAGConfig:
    """Every setting of the pipeline, in five sections. Build one with :func:`preset` and :meth:`replace`.

    ``TAGConfig(models=ModelSettings(...), clusters=...)`` or flat keywords ``TAGConfig(num_clusters=8)``
    (both may be mixed: flat keywords change the given sections). Settings read flat too:
    ``config.num_clusters is config.clusters.num_clusters``. See ``docs/settings.md``.
    """

    models: ModelSettings
    clusters: ClusterSettings
    embedding: EmbeddingSettings
    naming: NamingSettings
    controls: ControlSettings

    def __init__(
        self,
        models: ModelSettings | None = None,
        clusters: ClusterSettings | None = None,
        embedding: EmbeddingSettings | None = None,
        naming: NamingSettings | None = None,
        controls: ControlSettings | None = None,
        **settings: Any,
    ) -> None:
        given = {"models": models, "clusters": clusters, "embedding": embedding, "naming": naming, "controls": controls}
        for name, kind in SECTIONS.items():
            section = given[name] if given[name] is not None else kind()
            if not isinstance(section, kind):
                raise ConfigError(f"{name} must be a {kind.__name__}, not {type(section).__name__}.")
            object.__setattr__(self, name, section)
        for name, changes in _by_section(settings).items():
            object.__setattr__(self, name, _changed(getattr(self, name), changes))

    def __getattr__(self, name: str) -> Any:
        """Flat read access: ``config.top_k`` is ``config.naming.top_k``."""
        section = _SECTION_OF.get(name)
        if section is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(object.__getattribute__(self, section), name)

    def replace(self, **overrides: Any) -> "TAGConfig":
        """A copy with some settings changed; ``None`` values are ignored.

        Keys are flat setting names (``crf`` accepts a bool or a mapping of CRF settings) or section
        names with a section object or a mapping of that section's settings.
        """
        settings = {key: value for key, value in overrides.items() if value is not None}
        sections = {name: getattr(self, name) for name in SECTIONS}
        for name in SECTIONS:
            if name in settings:
                sections[name] = _section_from(SECTIONS[name], sections[name], settings.pop(name), name)
        return TAGConfig(**sections, **settings)

    def to_dict(self) -> dict[str, Any]:
        """Plain flat dict of the settings (JSON and TOML friendly; ``crf`` is a nested dict)."""
        return {key: value for name in SECTIONS for key, value in dataclasses.asdict(getattr(self, name)).items()}

    @classmethod
    def field_names(cls) -> list[str]:
        """Every setting's flat name, section by section."""
        return list(_SECTION_OF)


def _by_section(settings: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Flat settings grouped by the section that holds them; unknown names are refused."""
    unknown = sorted(set(settings) - set(_SECTION_OF))
    if unknown:
        raise ConfigError(f"Unknown setting(s): {', '.join(unknown)}. Known: {', '.join(_SECTION_OF)}.")
    grouped: dict[str, dict[str, Any]] = {}
    for key, value in settings.items():
        grouped.setdefault(_SECTION_OF[key], {})[key] = value
    return grouped


def _changed(section: Any, changes: Mapping[str, Any]) -> Any:
    """``section`` with ``changes``; a nested section (``crf``) accepts a bool or a mapping."""
    changes = dict(changes)
    for name, value in changes.items():
        current = getattr(section, name, None)
        if isinstance(current, SettingsSection):
            changes[name] = _section_from(type(current), current, value, name)
    try:
        return dataclasses.replace(section, **changes)
    except TypeError as error:
        raise ConfigError(str(error)) from None


def _section_from(kind: type, current: Any, value: Any, name: str) -> Any:
    """A section from a section object, a mapping of its settings, or (for on/off sections) a bool."""
    if isinstance(value, kind):
        return value
    if isinstance(value, bool) and "enabled" in {item.name for item in dataclasses.fields(kind)}:
        return dataclasses.replace(current, enabled=value)
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - {item.name for item in dataclasses.fields(kind)})
        if unknown:
            raise ConfigError(f"Unknown setting(s) in {name}: {', '.join(unknown)}.")
        return _changed(current, value)
    switch = " a bool or" if isinstance(current, CRFSettings) else ""
    raise ConfigError(f"{name} must be{switch} a table of {kind.__name__} settings, not {value!r}.")


PRESETS: dict[str, TAGConfig] = {
    # The paper's settings: DINOv2 ViT-B/14 segments, GEM on OpenAI CLIP ViT-L/14 at 448x448.
    "paper": TAGConfig(),
    # Smaller backbones for CPUs: DINOv2 ViT-S/14 and CLIP ViT-B/16 (patch grid 28x28 at 448).
    "fast": TAGConfig(
        feature_model="facebook/dinov2-small",
        clip_model="openai/clip-vit-base-patch16",
        num_clusters=10,
        kmeans_restarts=4,
    ),
    # The toy world of :mod:`tagseg.toy`: no neural network, no download; for demos and tests.
    "toy": TAGConfig(
        feature_model="toy",
        clip_model="toy",
        database="toy",
        image_size=256,
        num_clusters=8,
        gem_depth=0,
        device="cpu",
    ),
    # The paper's models with ProxyCLIP (proxy attention from Stage 1's DINOv2 features) and its official
    # 336/112 sliding windows: the best published average of the training-free dense CLIP methods
    # (docs/dense_methods.md gives the numbers).
    "proxyclip": TAGConfig(dense_method="proxyclip", window_size=336, window_stride=112),
    # Talk2DINO: CLIP ViT-B/16 texts projected into DINOv2-with-registers' patch space; Stage 1's patch
    # features are the segment embeddings (one image forward). Abstaining below logit(bg_thresh) of the
    # official background evaluation (0.55 ViT-B, 0.54 ViT-L; docs/dense_methods.md).
    "talk2dino": TAGConfig(
        feature_model="facebook/dinov2-with-registers-base",
        clip_model="talk2dino:lorebianchi98/Talk2DINO-ViTB",
        abstain_threshold=0.20,
    ),
    "talk2dino-large": TAGConfig(
        feature_model="facebook/dinov2-with-registers-large",
        clip_model="talk2dino:lorebianchi98/Talk2DINO-ViTL",
        abstain_threshold=0.16,
    ),
}


def preset(name: str, **overrides: Any) -> TAGConfig:
    """The named preset (``paper``, ``fast``, ``toy``, ``proxyclip``, ``talk2dino``, ``talk2dino-large``) with overrides."""
    try:
        base = PRESETS[name]
    except KeyError:
        raise ConfigError(f"Unknown preset {name!r}; choose one of: {', '.join(PRESETS)}.") from None
    return base.replace(**overrides)


# ----------------------------------------------------------------------------- TOML


def load_config(path: str | Path, **overrides: Any) -> TAGConfig:
    """Read a TOML file: an optional ``preset`` key, then settings (see :func:`resolve_config`)."""
    return resolve_config(None, path, **overrides)


def resolve_config(
    preset_name: str | None = None, config_file: str | Path | None = None, **overrides: Any
) -> TAGConfig:
    """Effective settings: a preset (default ``paper``), then a TOML file, then ``overrides``.

    The file holds an optional ``preset`` key and settings as section tables (``[models]``,
    ``[clusters]``, ``[clusters.crf]``, ``[embedding]``, ``[naming]``, ``[controls]``) or as flat keys (with a
    ``[crf]`` table). ``preset_name`` replaces the file's own ``preset`` key; ``None`` overrides are
    ignored, so flags that a user did not give leave the file's values alone.
    """
    data = _read_toml(Path(config_file)) if config_file is not None else {}
    file_preset = data.pop("preset", "paper")
    return preset(preset_name or file_preset, **_flat_settings(data)).replace(**overrides)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"Configuration file not found: {path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"Configuration file {path} is not valid TOML: {error}") from None


def _flat_settings(data: Mapping[str, Any]) -> dict[str, Any]:
    """Section tables of a TOML document turned into flat settings (flat keys pass through)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key not in SECTIONS:
            flat[key] = value
            continue
        if not isinstance(value, Mapping):
            raise ConfigError(f"[{key}] must be a table of {SECTIONS[key].__name__} settings, not {value!r}.")
        own = {item.name for item in dataclasses.fields(SECTIONS[key])}
        misplaced = sorted(set(value) - own)
        if misplaced:
            where = ", ".join(f"{name} (belongs in [{_SECTION_OF[name]}])" if name in _SECTION_OF else name for name in misplaced)
            raise ConfigError(f"Unknown setting(s) in [{key}]: {where}.")
        flat.update(value)
    return flat


def config_toml(config: TAGConfig) -> str:
    """``config`` as a commented TOML document, one table per section, that :func:`load_config` reads back."""
    lines = ["# tagseg settings; use with `tagseg segment --config FILE` (flags override them)."]
    for name in SECTIONS:
        lines += _toml_table(name, getattr(config, name))
    return "\n".join(lines) + "\n"


def _toml_table(name: str, section: Any) -> list[str]:
    lines = ["", f"# {type(section).__doc__.splitlines()[0]}", f"[{name}]"]
    nested = []
    for item in dataclasses.fields(section):
        value = getattr(section, item.name)
        if dataclasses.is_dataclass(value):
            nested.append((f"{name}.{item.name}", value))
            continue
        lines += [f"# {item.metadata['help']}", f"{item.name} = {_toml_value(value)}"]
    for table, value in nested:
        lines += _toml_table(table, value)
    return lines


def _toml_key(key: str) -> str:
    """A bare TOML key where allowed, else a quoted one (alias tables hold multi-word names)."""
    return key if key and all(c.isascii() and (c.isalnum() or c in "_-") for c in key) else json.dumps(key, ensure_ascii=False)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(str(value), ensure_ascii=False)


# ----------------------------------------------------------------------------- the declaration


@dataclass(frozen=True)
class Setting:
    """One declared setting, as the command line and the documentation see it."""

    name: str
    section: str
    type: Any
    default: Any
    help: str
    choices: tuple[str, ...]
    cli: bool
    short: str | None
    old_flags: tuple[str, ...]
    own_flag: str | None = None
    envvar: str | None = None
    panel: str | None = None

    @property
    def flag(self) -> str:
        """The command-line flag: the name with dashes (``--num-clusters``) unless declared otherwise."""
        return self.own_flag or "--" + self.name.replace("_", "-")


def declared_in(kind: type, section: str) -> list[Setting]:
    """Every :func:`setting` field of the dataclass ``kind`` (which builds with no arguments), from its metadata."""
    hints = typing.get_type_hints(kind)
    defaults = kind()
    found = []
    for item in dataclasses.fields(kind):
        meta = item.metadata
        found.append(
            Setting(
                item.name, section, hints[item.name], getattr(defaults, item.name), meta["help"], tuple(meta["choices"]),
                meta["cli"], meta["short"], meta["old_flags"], meta["flag"], meta["envvar"], meta["panel"],
            )
        )
    return found


def declared_settings() -> list[Setting]:
    """Every top-level setting of :class:`TAGConfig`, section by section, from the field metadata."""
    return [item for section, kind in SECTIONS.items() for item in declared_in(kind, section)]


def settings_markdown() -> str:
    """The settings table of ``docs/settings.md``: every setting with its section, default, flag and help."""
    lines = ["| setting | default | flag | what it does |", "|---|---|---|---|"]
    for section, kind in SECTIONS.items():
        lines.append(f"| **[{section}]** | | | {kind.__doc__.splitlines()[0]} |")
        for item in declared_settings():
            if item.section != section:
                continue
            if dataclasses.is_dataclass(item.default):
                switch = f"`--{item.name}/--no-{item.name}`" if item.cli else ""
                lines.append(f"| `{item.name}` | | {switch} | {item.help} |")
                lines += [
                    f"| `{item.name}.{sub.name}` | `{_toml_value(getattr(item.default, sub.name))}` | | {sub.metadata['help']} |"
                    for sub in dataclasses.fields(item.default)
                ]
                continue
            flag = f"{item.flag}/--no-{item.flag[2:]}" if item.type is bool else item.flag
            flags = ", ".join(f"`{name}`" for name in (flag, item.short) if name) if item.cli else ""
            choices = f" One of {', '.join(item.choices)}." if item.choices else ""
            lines.append(f"| `{item.name}` | `{_toml_value(item.default)}` | {flags} | {item.help}{choices} |")
    return "\n".join(lines) + "\n"
