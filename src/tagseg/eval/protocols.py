"""Label-mapping protocols: how free-form segment names become a dataset's classes.

Every protocol works on :class:`ImageOverlap` tables (per image, pixels of each predicted segment
falling on each ground-truth class), so re-scoring with another protocol or threshold needs
neither the images nor the segmentation models.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from tagseg.errors import ConfigError, ModelNotAvailableError
from tagseg.interfaces import TextEncoder
from tagseg.label_space import LabelSpace

DEFAULT_SENTENCE_MODEL = "sentence-transformers/all-mpnet-base-v2"
UNASSIGNED = -1


@dataclass(frozen=True)
class ImageOverlap:
    """One image: its segment names and a ``(segments, classes)`` table of scored pixel counts."""

    image_id: str
    names: list[str]
    overlap: np.ndarray


class MappingProtocol(Protocol):
    """Turns the overlaps of a dataset into one ``(C, C + 1)`` confusion matrix.

    Optional attributes, read with defaults: ``mapping`` (name -> (class, score)) and
    ``mapping_score`` (what that score is, default "score"); ``abstains`` (default False): True when
    the last column holds pixels of names the protocol declined to map, which the reference scoring
    drops; ``prepare(class_names)`` to load models before a long run.
    """

    name: str

    def settings(self) -> dict[str, Any]: ...

    def confusion(self, images: Sequence[ImageOverlap], class_names: Sequence[str]) -> np.ndarray: ...


def _confusion_from_assignments(
    images: Sequence[ImageOverlap], assignments: Sequence[np.ndarray], num_classes: int
) -> np.ndarray:
    """Sum each segment's overlap row into the column of the class it was assigned (-1: unassigned)."""
    confusion = np.zeros((num_classes, num_classes + 1), dtype=np.int64)
    for image, assigned in zip(images, assignments):
        columns = np.where(assigned < 0, num_classes, assigned)
        for row, column in enumerate(columns):
            confusion[:, column] += image.overlap[row]
    return confusion


def name_totals(images: Sequence[ImageOverlap], num_classes: int) -> tuple[list[str], np.ndarray]:
    """Distinct names over the dataset and their ``(names, classes)`` summed pixel counts."""
    index: dict[str, int] = {}
    rows: list[np.ndarray] = []
    for image in images:
        for name, counts in zip(image.names, image.overlap):
            if name not in index:
                index[name] = len(rows)
                rows.append(np.zeros(num_classes, dtype=np.int64))
            rows[index[name]] += counts
    return list(index), np.array(rows, dtype=np.int64).reshape(len(rows), num_classes)


class NearestClassProtocol:
    """Each name goes to the class of the same name (ignoring case), else to the class name with the
    highest cosine of their text embeddings (:class:`~tagseg.label_space.LabelSpace`).

    ``encode`` returns L2-normalised embeddings; with ``threshold`` set, names whose best cosine is
    below it stay unassigned (their pixels count as misses; the reference scoring drops them).
    """

    abstains = True
    mapping_score = "cosine"

    def __init__(
        self,
        name: str,
        encode: Callable[[list[str]], np.ndarray],
        *,
        threshold: float | None = None,
        description: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.encode = encode
        self.threshold = threshold
        self.description = description or {}
        self.mapping: dict[str, tuple[str | None, float]] = {}  # after scoring: name -> (class, cosine)

    def settings(self) -> dict[str, Any]:
        return {"protocol": self.name, **self.description, "threshold": self.threshold}

    def prepare(self, class_names: Sequence[str]) -> None:
        """Load the text model now (embedding the class names), so a missing model fails before a long run."""
        self.encode(list(class_names[:1]))

    def assign(self, names: Sequence[str], class_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Class index (or -1) and best cosine of every name (:class:`~tagseg.label_space.LabelSpace`)."""
        if not names:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        matches = LabelSpace(class_names, self.encode, min_similarity=self.threshold).map(names)
        index = {name: i for i, name in reversed(list(enumerate(class_names)))}
        best = np.array([UNASSIGNED if m.label is None else index[m.label] for m in matches], dtype=np.int64)
        return best, np.array([m.similarity for m in matches])

    def confusion(self, images: Sequence[ImageOverlap], class_names: Sequence[str]) -> np.ndarray:
        names, _ = name_totals(images, len(class_names))
        best, cosine = self.assign(names, class_names)
        lookup = dict(zip(names, best))
        self.mapping = {
            name: (class_names[c] if c >= 0 else None, float(s)) for name, c, s in zip(names, best, cosine)
        }
        assignments = [np.array([lookup[n] for n in image.names], dtype=np.int64) for image in images]
        return _confusion_from_assignments(images, assignments, len(class_names))


def sentence_transformer_protocol(
    model: str | Path = DEFAULT_SENTENCE_MODEL, *, threshold: float | None = None, name: str = "tag"
) -> NearestClassProtocol:
    """The TAG protocol: a sentence-transformers model (hub id or directory), loaded on first use."""
    loaded: list[Any] = []

    def encode(texts: list[str]) -> np.ndarray:
        if not loaded:
            loaded.append(_load_sentence_model(str(model)))
        return loaded[0].encode(texts, normalize_embeddings=True, convert_to_numpy=True)

    return NearestClassProtocol(name, encode, threshold=threshold, description={"text_model": str(model)})


def _load_sentence_model(model: str) -> Any:
    """A sentence-transformers model from a directory, the local cache, or (only when it answers) the hub."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ConfigError(
            "The tag protocol needs sentence-transformers: pip install -e '.[eval]' in the tagseg checkout "
            "(or choose --protocol clip / oracle-image / oracle-dataset)."
        ) from None
    from tagseg.backbones.hub import hub_reachable, looks_like_path

    def unavailable(reason: str) -> ModelNotAvailableError:
        return ModelNotAvailableError(
            f"Sentence-embedding model {model} of the tag protocol could not be loaded ({reason}). "
            "Download it once while online, pass a local directory with --text-model, "
            "or leave the tag protocol out (--protocol clip --protocol oracle-image ...)."
        )

    if not looks_like_path(model):
        try:
            return SentenceTransformer(model, device="cpu", local_files_only=True)
        except OSError:
            if not hub_reachable():
                raise unavailable("it is not in the local cache and the Hugging Face hub cannot be reached") from None
    try:
        return SentenceTransformer(model, device="cpu")
    except OSError as error:
        raise unavailable(str(error).splitlines()[0]) from None


def text_encoder_protocol(
    encoder: TextEncoder | Callable[[], TextEncoder],
    *,
    threshold: float | None = None,
    template: str = "{}",
    name: str = "clip",
) -> NearestClassProtocol:
    """The CLIP text protocol: names and class names through a :class:`TextEncoder` (or a factory of one)."""
    held: list[TextEncoder] = []

    description = {"template": template}

    def get() -> TextEncoder:
        if not held:
            held.append(encoder if hasattr(encoder, "encode") else encoder())  # type: ignore[operator]
            description["text_model"] = held[0].model_id
        return held[0]

    def encode(texts: list[str]) -> np.ndarray:
        return get().encode([template.format(t) for t in texts]).float().numpy()

    return NearestClassProtocol(name, encode, threshold=threshold, description=description)


def _hungarian(overlap: np.ndarray) -> np.ndarray:
    """Class of every row under the one-to-one matching of rows to classes that maximises overlap."""
    from scipy.optimize import linear_sum_assignment

    assigned = np.full(overlap.shape[0], UNASSIGNED, dtype=np.int64)
    if overlap.size:
        rows, columns = linear_sum_assignment(overlap, maximize=True)
        keep = overlap[rows, columns] > 0
        assigned[rows[keep]] = columns[keep]
    return assigned


class OracleProtocol:
    """Best one-to-one (Hungarian) matching to classes, using the ground truth: measures segments, not names.

    ``scope="image"`` matches each image's segments anew; ``scope="dataset"`` matches each distinct
    name once for the whole dataset. Unmatched segments (and matches with zero overlap) stay unassigned
    and count as misses under either scoring. The dataset scope's mapping score is the share of the
    name's scored pixels that fall on its class.
    """

    abstains = False
    mapping_score = "pixel_share"

    def __init__(self, scope: str = "image") -> None:
        if scope not in ("image", "dataset"):
            raise ValueError(f"oracle scope must be 'image' or 'dataset', not {scope!r}")
        self.scope = scope
        self.name = f"oracle-{scope}"
        self.mapping: dict[str, tuple[str | None, float]] = {}  # dataset scope: name -> (class, pixel share)

    def settings(self) -> dict[str, Any]:
        return {"protocol": self.name, "matching": "hungarian, maximise pixel overlap"}

    def confusion(self, images: Sequence[ImageOverlap], class_names: Sequence[str]) -> np.ndarray:
        if self.scope == "image":
            assignments = [_hungarian(image.overlap) for image in images]
        else:
            names, totals = name_totals(images, len(class_names))
            best = _hungarian(totals)
            share = totals[np.arange(len(names)), np.maximum(best, 0)] / np.maximum(totals.sum(axis=1), 1)
            self.mapping = {
                name: (class_names[c] if c >= 0 else None, float(s) if c >= 0 else 0.0)
                for name, c, s in zip(names, best, share)
            }
            lookup = dict(zip(names, best))
            assignments = [np.array([lookup[n] for n in image.names], dtype=np.int64) for image in images]
        return _confusion_from_assignments(images, assignments, len(class_names))
