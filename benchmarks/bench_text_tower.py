"""First run: how long embedding the shipped vocabulary takes with CLIP ViT-L/14's text tower.

Embeds ``--names`` names drawn from the shipped vocabulary (random weights, real architecture)
in each of ``--precisions`` (``float32``, ``auto``, ``bfloat16``, and ``int8``: float32 with its
linear layers quantised to int8 by ``torch.ao.quantization.quantize_dynamic``), in the default
build's batches, and extrapolates to the whole vocabulary. For int8 it also prints how close its
embeddings stay to float32's (lowest cosine) and whether top-10 retrieval over the drawn names
is unchanged.

The tokenizer decides the sequence lengths and so the speed. The test tokenizer of
``tagseg.testing`` has a tiny BPE vocabulary and splits unseen words into many more tokens than
CLIP's; pass ``--bpe`` with CLIP's BPE merges file (``bpe_simple_vocab_16e6.txt.gz``, shipped in
the ``open_clip_torch`` and OpenAI ``clip`` packages) to measure with CLIP's real tokenizer.

    python benchmarks/bench_text_tower.py [--names 2048] [--bpe bpe_simple_vocab_16e6.txt.gz]
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tagseg.backbones.clip import CLIPTextEncoder
from tagseg.database.default import ENCODE_BATCH, default_vocabulary
from tagseg.testing import save_random_clip


def _bytes_to_unicode() -> dict[int, str]:
    """OpenAI CLIP's byte -> printable character table (``simple_tokenizer.bytes_to_unicode``)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(code) for code in codes)))


def install_clip_tokenizer(bpe: Path, model_dir: Path) -> None:
    """Write CLIP's real tokenizer (vocab.json + merges.txt, derived as OpenAI's code does) into ``model_dir``."""
    from transformers import CLIPTokenizer

    merges = gzip.open(bpe).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    characters = list(_bytes_to_unicode().values())
    vocabulary = characters + [c + "</w>" for c in characters] + ["".join(m.split()) for m in merges]
    vocabulary += ["<|startoftext|>", "<|endoftext|>"]
    tokenizer = CLIPTokenizer(
        vocab={token: i for i, token in enumerate(vocabulary)}, merges=[tuple(m.split()) for m in merges], model_max_length=77
    )
    for stale in ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (model_dir / stale).unlink(missing_ok=True)
    tokenizer.save_pretrained(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    text = config["text_config"]
    text.update(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    (model_dir / "config.json").write_text(json.dumps(config))


def _encoder(clip: Path, precision: str) -> CLIPTextEncoder:
    if precision != "int8":
        return CLIPTextEncoder.from_pretrained(clip, dtype=precision)
    encoder = CLIPTextEncoder.from_pretrained(clip, dtype="float32")
    encoder.model = torch.ao.quantization.quantize_dynamic(encoder.model, {torch.nn.Linear}, dtype=torch.qint8)
    return encoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--names", type=int, default=2048)
    parser.add_argument("--precisions", default="float32,auto,int8", help="comma-separated: float32, auto, bfloat16, int8")
    parser.add_argument("--bpe", type=Path, help="CLIP's bpe_simple_vocab_16e6.txt.gz: measure with the real tokenizer")
    args = parser.parse_args()
    print(f"CPU: {platform.processor() or platform.machine()}, {_cpu_model()}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; tokenizer: {'CLIP BPE' if args.bpe else 'test (tiny BPE)'}")
    vocabulary = default_vocabulary()
    names = [vocabulary[i] for i in np.random.default_rng(0).permutation(len(vocabulary))[: args.names]]
    embeddings: dict[str, torch.Tensor] = {}
    with tempfile.TemporaryDirectory() as tmp:
        clip = save_random_clip(Path(tmp) / "clip-large-14", "large-14")
        if args.bpe:
            install_clip_tokenizer(args.bpe, clip)
        for precision in args.precisions.split(","):
            encoder = _encoder(clip, precision)
            tokens = [len(ids) for ids in encoder.tokenizer(names, truncation=True, max_length=77)["input_ids"]]
            encoder.encode(names[:32])  # warm-up
            start = time.perf_counter()
            embeddings[precision] = torch.cat(
                [encoder.encode(names[begin : begin + ENCODE_BATCH]) for begin in range(0, len(names), ENCODE_BATCH)]
            )
            seconds = time.perf_counter() - start
            whole = seconds / len(names) * len(vocabulary)
            print(
                f"{precision:<8} ({encoder.dtype}): {len(names)} names in {seconds:.1f} s = {len(names) / seconds:.0f} names/s; "
                f"whole vocabulary ({len(vocabulary)}) about {whole / 60:.1f} min; "
                f"tokens per name mean {np.mean(tokens):.1f}, max {max(tokens)}"
            )
            del encoder
    if "float32" in embeddings:
        reference = embeddings["float32"]
        queries = reference[: min(200, len(names))] + 0.05 * torch.randn(min(200, len(names)), reference.shape[1])
        expected = (queries @ reference.T).topk(10).indices
        for precision, other in embeddings.items():
            if precision == "float32":
                continue
            cosine = (reference * other).sum(dim=1)
            same = (queries @ other.T).topk(10).indices
            unchanged = sum(set(a.tolist()) == set(b.tolist()) for a, b in zip(expected, same))
            print(f"{precision} vs float32: cosine min {cosine.min():.5f}, mean {cosine.mean():.5f}; "
                  f"top-10 unchanged for {unchanged}/{len(queries)} queries")


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    wanted = [flag for flag in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8") if flag in flags]
    return f"{model} ({' '.join(wanted) or 'no AVX2'})"


if __name__ == "__main__":
    main()
