"""Settings of the TAG pipeline, named presets and TOML loading."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from tagseg.errors import ConfigError


@dataclass(frozen=True)
class CRFSettings:
    """Dense CRF refinement of the segment map (reference constants by default)."""

    enabled: bool = True
    iterations: int = 10
    gaussian_sxy: float = 1.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 67.0
    bilateral_srgb: float = 3.0
    bilateral_compat: float = 4.0
    scale: float = 1.0  # CRF grid relative to the working image; < 1: marginals upsampled (1.0 = the reference)


@dataclass(frozen=True)
class TAGConfig:
    """Every setting of the pipeline. Build one with :func:`preset` and :meth:`replace`.

    Model fields take a Hugging Face id or a local directory. Naming: ``names`` is ``"words"``
    (the reference's single words) or ``"phrases"`` (also multi-word phrases and whole name
    entries); ``length_penalty`` is the cosine each word beyond the first costs (only phrases have
    more than one); ``cased_alpha`` is the weight of CaSED's retrieved-text term (0 = TAG). See
    ``docs/names.md``.
    """

    feature_model: str = "facebook/dinov2-base"
    clip_model: str = "openai/clip-vit-large-patch14"
    image_size: int = 448
    keep_aspect_ratio: bool = False
    normalize: bool = True
    num_clusters: int | str = 15  # or "auto": chosen per image in [min_clusters, max_clusters]
    kmeans_restarts: int = 8
    kmeans_iterations: int = 100
    seed: int = 0
    crf: CRFSettings = field(default_factory=CRFSettings)
    gem_depth: int = 6
    database: str = "default"
    top_k: int = 10
    duplicate_threshold: float = 0.94
    prompt_template: str = "{}"
    min_count: int = 2
    pos_filter: bool = True
    names: str = "words"
    length_penalty: float = 0.01
    cased_alpha: float = 0.0
    device: str = "auto"
    dtype: str = "float32"  # or "bfloat16" / "float16", or "auto": bfloat16 where the hardware runs it natively
    # Granularity (tagseg.granularity).
    min_clusters: int = 2
    max_clusters: int = 15
    cluster_criterion: str = "silhouette"
    min_region_area: float = 0.0
    # Naming controls, all off by default (tagseg.controls).
    vocabulary: list[str] = field(default_factory=list)
    vocabulary_mode: str = "closest"
    aliases: dict[str, str] = field(default_factory=dict)
    blocklist: list[str] = field(default_factory=list)
    abstain_threshold: float = -1.0
    unknown_label: str = "unknown"
    prefer_objects: bool = False
    prefer_objects_margin: float = 0.03

    def __post_init__(self) -> None:
        for name in ("vocabulary", "blocklist"):
            if isinstance(getattr(self, name), tuple):
                object.__setattr__(self, name, list(getattr(self, name)))
        checks = {
            "image_size": self.image_size >= 14,
            "num_clusters": self.num_clusters == "auto" or (isinstance(self.num_clusters, int) and self.num_clusters >= 1),
            "min_clusters": 2 <= self.min_clusters <= self.max_clusters,
            "cluster_criterion": self.cluster_criterion in ("silhouette", "elbow"),
            "min_region_area": 0.0 <= self.min_region_area < 1.0,
            "vocabulary": isinstance(self.vocabulary, list) and all(isinstance(w, str) and w for w in self.vocabulary),
            "vocabulary_mode": self.vocabulary_mode in ("closest", "direct"),
            "aliases": isinstance(self.aliases, dict) and all(isinstance(v, str) and v for v in self.aliases.values()),
            "blocklist": isinstance(self.blocklist, list) and all(isinstance(w, str) for w in self.blocklist),
            "unknown_label": bool(self.unknown_label),
            "prefer_objects_margin": self.prefer_objects_margin >= 0.0,
            "kmeans_restarts": self.kmeans_restarts >= 1,
            "kmeans_iterations": self.kmeans_iterations >= 1,
            "gem_depth": self.gem_depth >= 0,
            "top_k": self.top_k >= 1,
            "duplicate_threshold": 0.0 < self.duplicate_threshold <= 1.0,
            "min_count": self.min_count >= 1,
            "prompt_template": "{}" in self.prompt_template,
            "names": self.names in ("words", "phrases"),
            "length_penalty": self.length_penalty >= 0.0,
            "cased_alpha": 0.0 <= self.cased_alpha <= 1.0,
            "dtype": self.dtype in ("auto", "float32", "float16", "bfloat16"),
            "crf.iterations": self.crf.iterations >= 1,
            "crf.scale": 0.0 < self.crf.scale <= 1.0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            values = ", ".join(f"{name}={_get(self, name)!r}" for name in bad)
            raise ConfigError(f"Invalid setting(s): {values}.")

    def replace(self, **overrides: Any) -> "TAGConfig":
        """A copy with some fields changed; ``crf`` accepts a bool or a mapping of CRF fields."""
        overrides = {key: value for key, value in overrides.items() if value is not None}
        unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigError(
                f"Unknown setting(s): {', '.join(sorted(unknown))}. Known: {', '.join(self.field_names())}."
            )
        if "crf" in overrides:
            overrides["crf"] = _crf_from(self.crf, overrides["crf"])
        try:
            return dataclasses.replace(self, **overrides)
        except TypeError as error:
            raise ConfigError(str(error)) from None

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of the settings (JSON and TOML friendly)."""
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]


def _get(config: TAGConfig, dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def _crf_from(current: CRFSettings, value: Any) -> CRFSettings:
    if isinstance(value, CRFSettings):
        return value
    if isinstance(value, bool):
        return dataclasses.replace(current, enabled=value)
    if isinstance(value, Mapping):
        unknown = set(value) - {f.name for f in dataclasses.fields(CRFSettings)}
        if unknown:
            raise ConfigError(f"Unknown CRF setting(s): {', '.join(sorted(unknown))}.")
        return dataclasses.replace(current, **value)
    raise ConfigError(f"crf must be a bool or a table of CRF settings, not {value!r}.")


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
}


def preset(name: str, **overrides: Any) -> TAGConfig:
    """The named preset (``paper``, ``fast`` or ``toy``) with optional field overrides."""
    try:
        base = PRESETS[name]
    except KeyError:
        raise ConfigError(f"Unknown preset {name!r}; choose one of: {', '.join(PRESETS)}.") from None
    return base.replace(**overrides)


def load_config(path: str | Path, **overrides: Any) -> TAGConfig:
    """Read a TOML file: an optional ``preset`` key, then any :class:`TAGConfig` fields (``[crf]`` table too)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"Configuration file not found: {path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"Configuration file {path} is not valid TOML: {error}") from None
    name = data.pop("preset", "paper")
    return preset(name, **data).replace(**overrides)
