"""From a configuration's model section to the four seams: the registry of model specs.

A *model spec* is what ``feature_model`` and ``clip_model`` hold:

* a name registered with :func:`register_backend`, exactly (``toy``, the built-in toy world) or by
  a prefix that ends in ``:`` (a backend registered as ``mine:`` claims ``mine:large``);
* anything else is a Hugging Face id (``facebook/dinov2-base``) or a local directory written by
  ``save_pretrained`` (:func:`tagseg.backbones.hub.looks_like_path` tells them apart), built by
  the Hugging Face backend: DINOv2 for the patch features, CLIP with the configured dense
  method (GEM by default) for the dense embeddings, CLIP's text tower for the text encoder.

``feature_model``'s backend builds the :class:`~tagseg.interfaces.PatchFeatureExtractor`,
``clip_model``'s builds the :class:`~tagseg.interfaces.DenseImageEmbedder` and the
:class:`~tagseg.interfaces.TextEncoder` (one joint space), ``sam_model``'s the
:class:`~tagseg.interfaces.RegionProposer` (Segment Anything; only when the ``segmenter`` loads it,
as ``sam`` does: :mod:`tagseg.segmenters`). The *database spec* (``database``)
is ``default`` (the shipped vocabulary), ``toy`` (the toy captions) or a database folder.

A new kind of model plugs in without touching the pipeline::

    from tagseg.builder import Backend, register_backend

    register_backend("mine:", Backend(features=lambda spec, config: MyFeatures(spec.removeprefix("mine:"))))
    TAG.from_pretrained("paper", feature_model="mine:large")

Nothing here imports torch until a model is built.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, TypeVar

from tagseg.backbones.hub import ModelStatus, cache_status, download_model, looks_like_path, require_available
from tagseg.errors import ConfigError, DatabaseError
from tagseg.segmenters import segmenter_entry

if TYPE_CHECKING:
    from tagseg.config import TAGConfig
    from tagseg.interfaces import DenseImageEmbedder, PatchFeatureExtractor, RegionProposer, TextDatabase, TextEncoder

__all__ = [
    "ModelStatus",
    "Backend",
    "Seams",
    "backend_for",
    "build",
    "build_embedder",
    "build_features",
    "build_proposer",
    "build_text_encoder",
    "check_database",
    "check_models",
    "config_models",
    "database_from_spec",
    "download_models",
    "model_status",
    "register_backend",
    "unregister_backend",
]

SeamT = TypeVar("SeamT")
SeamBuilder = Callable[[str, "TAGConfig"], SeamT]
"""Builds one seam from the model spec and the configuration (device, dtype, normalisation...)."""


@dataclass(frozen=True)
class Backend:
    """How the model specs of one registry key become seams; a seam left ``None`` is not offered.

    Each builder is called with the spec as written in the configuration and the configuration
    itself (read ``config.device``, ``config.dtype``, ``config.normalize``, ``config.embedding``).
    ``description`` is what ``tagseg models list`` shows as the model's location.
    """

    features: SeamBuilder[PatchFeatureExtractor] | None = None
    embedder: SeamBuilder[DenseImageEmbedder] | None = None
    text_encoder: SeamBuilder[TextEncoder] | None = None
    proposer: SeamBuilder[RegionProposer] | None = None
    description: str = "a registered backend"


@dataclass(frozen=True)
class Seams:
    """The parts a :class:`~tagseg.TAG` is made of (``proposer`` only when ``segmenter`` is ``sam``)."""

    features: PatchFeatureExtractor
    embedder: DenseImageEmbedder
    text_encoder: TextEncoder
    database: TextDatabase
    proposer: RegionProposer | None = None


_BACKENDS: dict[str, Backend] = {}


def register_backend(spec: str, backend: Backend, *, replace: bool = False) -> None:
    """Let ``spec`` (an exact name, or a prefix ending in ``:``) be built by ``backend``.

    Registering a spec twice is an error unless ``replace`` is set. A registered spec wins over a
    Hugging Face id of the same name and is never looked up on the hub: ``tagseg models`` reports
    it as built in.
    """
    if not spec or "/" in spec or "\\" in spec or spec.startswith(("~", ".")):
        raise ConfigError(
            f"A backend spec must be a plain name such as 'toy' or a prefix such as 'mine:' "
            f"(no slashes: those are Hugging Face ids and paths), not {spec!r}."
        )
    if spec in _BACKENDS and not replace:
        raise ConfigError(f"A backend is already registered for {spec!r}; pass replace=True to replace it.")
    _BACKENDS[spec] = backend


def unregister_backend(spec: str) -> None:
    """Forget the backend registered for ``spec`` (a :class:`KeyError` when there is none)."""
    del _BACKENDS[spec]


def _registered(spec: str) -> Backend | None:
    """The backend registered for ``spec`` exactly, else for its longest registered prefix."""
    if spec in _BACKENDS:
        return _BACKENDS[spec]
    prefixes = [key for key in _BACKENDS if key.endswith(":") and spec.startswith(key)]
    return _BACKENDS[max(prefixes, key=len)] if prefixes else None


def backend_for(spec: str) -> Backend:
    """The backend that builds ``spec``: a registered one, else the Hugging Face backend."""
    return _registered(spec) or HUGGING_FACE


_SEAM_NAMES = {
    "features": "patch features",
    "embedder": "dense image embedder",
    "text_encoder": "text encoder",
    "proposer": "region proposer (Segment Anything)",
}


def _build(seam: str, setting: str, config: TAGConfig) -> object:
    spec = getattr(config, setting)
    backend = backend_for(spec)
    builder = getattr(backend, seam)
    if builder is None:
        raise ConfigError(
            f"Model {spec!r} ({backend.description}) provides no {_SEAM_NAMES[seam]}; "
            f"set {setting} to a model that does."
        )
    return builder(spec, config)


def build_features(config: TAGConfig) -> PatchFeatureExtractor:
    """The patch feature extractor of ``config.feature_model``."""
    return _build("features", "feature_model", config)  # type: ignore[return-value]


def build_embedder(config: TAGConfig) -> DenseImageEmbedder:
    """The dense image embedder of ``config.clip_model``."""
    return _build("embedder", "clip_model", config)  # type: ignore[return-value]


def build_text_encoder(config: TAGConfig) -> TextEncoder:
    """The text encoder of ``config.clip_model`` (the text side of the embedder's joint space)."""
    return _build("text_encoder", "clip_model", config)  # type: ignore[return-value]


def build_proposer(config: TAGConfig) -> RegionProposer:
    """The region proposer of ``config.sam_model``, with the knobs of ``config.clusters.sam``."""
    return _build("proposer", "sam_model", config)  # type: ignore[return-value]


def text_encoder_for(spec: str, config: TAGConfig | None = None) -> TextEncoder:
    """The text tower a model spec names (``tagseg db``'s ``--text-model``, or a database's model id),
    on ``config``'s device and dtype (the ``paper`` preset's by default)."""
    from tagseg.config import preset
    from tagseg.toy import ToyTextEncoder

    for shades in (False, True):  # a toy-embedded database records the toy tower's own model id
        if spec == ToyTextEncoder(shades=shades).model_id:
            return ToyTextEncoder(shades=shades)
    return build_text_encoder((config or preset("paper")).replace(clip_model=spec))


def build(config: TAGConfig, *, database: TextDatabase | None = None) -> Seams:
    """Build the seams of ``config``; ``database`` replaces the one ``config.database`` names.

    The region proposer is built only when ``config.segmenter`` loads ``sam_model`` (``sam``). A
    database folder that does not exist is refused before any model loads.
    """
    if database is None:
        check_database(config.database)
    check_models(config)
    features = build_features(config)
    embedder = build_embedder(config)
    text_encoder = build_text_encoder(config)
    if database is None:
        database = database_from_spec(config.database, text_encoder)
    proposer = build_proposer(config) if "sam_model" in segmenter_entry(config.segmenter).models else None
    return Seams(features, embedder, text_encoder, database, proposer)


def config_models(config: TAGConfig) -> list[str]:
    """The model specs (ids, directories, registered names) a configuration needs, without repeats:
    ``feature_model``, ``clip_model`` and those its ``segmenter`` loads (``sam_model`` for ``sam``)."""
    own = [getattr(config, setting) for setting in segmenter_entry(config.segmenter).models]
    return list(dict.fromkeys([config.feature_model, config.clip_model, *own]))


# ----------------------------------------------------------------------------- databases


def _default_database(encoder: TextEncoder) -> TextDatabase:
    from tagseg.database import default_database

    return default_database(encoder)


def _landmarks_database(encoder: TextEncoder) -> TextDatabase:
    from tagseg.database import default_database

    return default_database(encoder, vocabulary="landmarks")


def _toy_database(encoder: TextEncoder) -> TextDatabase:
    from tagseg.toy import toy_database

    return toy_database(encoder)


_DATABASES: dict[str, Callable[[TextEncoder], TextDatabase]] = {
    "default": _default_database,
    "landmarks": _landmarks_database,
    "toy": _toy_database,
}


def check_database(spec: str | os.PathLike[str]) -> None:
    """Refuse a database spec that is neither a named database nor an existing folder."""
    if os.fspath(spec) not in _DATABASES and not Path(spec).is_dir():
        raise DatabaseError(f"No database at {spec}: the folder does not exist.")


def database_from_spec(spec: str | os.PathLike[str], text_encoder: TextEncoder) -> TextDatabase:
    """The database a config value names: ``default`` (the shipped vocabulary), ``landmarks`` (it plus
    WordNet's landmarks and places), ``toy`` or a folder."""
    opener = _DATABASES.get(os.fspath(spec))
    if opener is not None:
        return opener(text_encoder)
    from tagseg.database import open_database

    return open_database(Path(spec), encoder=text_encoder)


# ----------------------------------------------------------------------------- model cache


def model_status(models: Iterable[str], *, verify: bool = False, cache_dir: str | Path | None = None) -> list[ModelStatus]:
    """Whether each model is ready for offline use, without any network access.

    Registered specs (``toy``) are built in; ids and directories are checked by
    :func:`tagseg.backbones.hub.cache_status` (``verify`` also hashes every cached file).
    """
    models = list(models)
    backends = [_registered(model) for model in models]
    from_hub = iter(cache_status([m for m, b in zip(models, backends) if b is None], verify=verify, cache_dir=cache_dir))
    return [
        next(from_hub) if backend is None else ModelStatus(model, "builtin", backend.description)
        for model, backend in zip(models, backends)
    ]


def check_models(config: TAGConfig) -> None:
    """Refuse, before any model loads, a configuration whose models (features, CLIP, SAM when chosen) cannot be
    loaded: one :class:`~tagseg.errors.ModelNotAvailableError` names all of them (one hub probe at most)."""
    require_available(model_status(config_models(config)))


def download_models(models: Iterable[str]) -> list[Path]:
    """Download Hugging Face models into the cache (skipping registered and local ones); snapshot folders."""
    return [download_model(model) for model in models if _registered(model) is None and not looks_like_path(model)]


# ----------------------------------------------------------------------------- the built-in backends


def _dinov2(spec: str, config: TAGConfig) -> PatchFeatureExtractor:
    from tagseg.backbones.dinov2 import Dinov2Features

    return Dinov2Features.from_pretrained(spec, device=config.device, normalize=config.normalize, dtype=config.dtype)


def _dense_clip(spec: str, config: TAGConfig) -> DenseImageEmbedder:
    from tagseg.backbones.clip import DenseCLIP

    return DenseCLIP.from_pretrained(
        spec, **config.embedding.dense_options(), device=config.device, normalize=config.normalize, dtype=config.dtype
    )


def _clip_text(spec: str, config: TAGConfig) -> TextEncoder:
    from tagseg.backbones.clip import CLIPTextEncoder

    return CLIPTextEncoder.from_pretrained(spec, device=config.device, dtype=config.dtype)


def _sam(spec: str, config: TAGConfig) -> RegionProposer:
    from tagseg.backbones.sam import SamMaskGenerator

    return SamMaskGenerator.from_pretrained(spec, device=config.device, dtype=config.dtype, **asdict(config.clusters.sam))


HUGGING_FACE = Backend(
    features=_dinov2,
    embedder=_dense_clip,
    text_encoder=_clip_text,
    proposer=_sam,
    description="Hugging Face id or model directory",
)
"""The backend of every spec no registered backend claims."""


def _toy_features(spec: str, config: TAGConfig) -> PatchFeatureExtractor:
    from tagseg.toy import ToyPatchFeatures

    return ToyPatchFeatures()


def _refuse_dense_settings(config: TAGConfig, embedder: str) -> None:
    """Refuse dense CLIP settings for an embedder without CLIP blocks (gem_depth is ignored)."""
    embedding = config.embedding
    if embedding.dense_method != "gem" or embedding.method_settings or embedding.window_size:
        raise ConfigError(
            f"The {embedder} embedder has no CLIP blocks to run dense_method {embedding.dense_method!r}, method_settings "
            "or sliding windows on; leave them at the preset's values, or set clip_model to a CLIP model."
        )


def _toy_embedder(spec: str, config: TAGConfig) -> DenseImageEmbedder:
    """The toy joint space's embedder: it has no CLIP blocks, so it takes no dense method."""
    from tagseg.toy import ToyDenseEmbedder

    _refuse_dense_settings(config, "toy")
    return ToyDenseEmbedder()


def _toy_text_encoder(spec: str, config: TAGConfig) -> TextEncoder:
    from tagseg.toy import ToyTextEncoder

    return ToyTextEncoder()


register_backend(
    "toy",
    Backend(features=_toy_features, embedder=_toy_embedder, text_encoder=_toy_text_encoder, description="built into tagseg"),
)


TALK2DINO_PREFIX = "talk2dino:"
"""``talk2dino:<projection>``: Talk2DINO's projection (an id, a folder or the official ``.pth``) as the joint space."""


def _talk2dino_embedder(spec: str, config: TAGConfig) -> DenseImageEmbedder:
    """Stage 1's DINOv2 patch features as the segment embeddings (no CLIP image tower, no dense method)."""
    from tagseg.backbones.talk2dino import Talk2DINOEmbedder

    _refuse_dense_settings(config, "Talk2DINO")
    return Talk2DINOEmbedder.from_pretrained(spec.removeprefix(TALK2DINO_PREFIX), model_id=spec)


def _talk2dino_text_encoder(spec: str, config: TAGConfig) -> TextEncoder:
    from tagseg.backbones.talk2dino import Talk2DINOTextEncoder

    source = spec.removeprefix(TALK2DINO_PREFIX)
    return Talk2DINOTextEncoder.from_pretrained(source, model_id=spec, device=config.device, dtype=config.dtype)


register_backend(
    TALK2DINO_PREFIX,
    Backend(
        embedder=_talk2dino_embedder,
        text_encoder=_talk2dino_text_encoder,
        description="Talk2DINO projection (CLIP text tower -> DINOv2 patch space)",
    ),
)
