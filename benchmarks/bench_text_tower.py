"""First run: how long embedding the shipped vocabulary takes with CLIP ViT-L/14's text tower.

Embeds the first ``--names`` names of the shipped vocabulary (random weights, real architecture)
in float32 and in the ``auto`` dtype, in the default build's batches, and extrapolates to the
whole vocabulary. Also prints the tokens per name: the test tokenizer of ``tagseg.testing`` has a
tiny BPE vocabulary and splits unseen words into more tokens than CLIP's real BPE, so the real
tokenizer gives shorter batches and these figures are an upper bound.

    python benchmarks/bench_text_tower.py [--names 2048]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from tagseg.backbones.clip import CLIPTextEncoder
from tagseg.database.default import ENCODE_BATCH, default_vocabulary
from tagseg.testing import save_random_clip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--names", type=int, default=2048)
    args = parser.parse_args()
    vocabulary = default_vocabulary()
    names = [vocabulary[i] for i in np.random.default_rng(0).permutation(len(vocabulary))[: args.names]]
    with tempfile.TemporaryDirectory() as tmp:
        clip = save_random_clip(Path(tmp) / "clip-large-14", "large-14")
        for dtype in ("float32", "auto"):
            encoder = CLIPTextEncoder.from_pretrained(clip, dtype=dtype)
            tokens = [len(ids) for ids in encoder.tokenizer(names, truncation=True, max_length=77)["input_ids"]]
            encoder.encode(names[:32])  # warm-up
            start = time.perf_counter()
            for begin in range(0, len(names), ENCODE_BATCH):
                encoder.encode(names[begin : begin + ENCODE_BATCH])
            seconds = time.perf_counter() - start
            whole = seconds / len(names) * len(vocabulary)
            print(
                f"{dtype:<8} ({encoder.dtype}): {len(names)} names in {seconds:.1f} s = {len(names) / seconds:.0f} names/s; "
                f"whole vocabulary ({len(vocabulary)}) about {whole / 60:.1f} min; "
                f"tokens per name mean {np.mean(tokens):.1f}, max {max(tokens)}"
            )
            del encoder


if __name__ == "__main__":
    main()
