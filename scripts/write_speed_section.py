"""Fill the README's Speed table from a ``benchmarks/bench_pipeline.py --json`` file.

    python benchmarks/bench_pipeline.py --preset paper --runs 2 --folder 20 --json bench.json
    python scripts/write_speed_section.py bench.json

Replaces what stands between ``<!-- speed-table -->`` and ``<!-- /speed-table -->`` in README.md: a
line naming the command, the CPU, the load average and the date, then the table of stages per dtype.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- speed-table -->", "<!-- /speed-table -->"
STAGES = {
    "features": "DINOv2 forward",
    "kmeans": "k-means",
    "crf": "dense CRF",
    "regions": "small regions",
    "embedder": "CLIP + dense method forward",
    "pooling": "pooling",
    "naming": "retrieval and naming",
}


def speed_section(record: dict) -> str:
    """The README's Speed table (markdown) for one ``bench_pipeline.py --json`` record."""
    results = record["results"]
    dtypes = list(results)
    header = " | ".join(f"`{dtype}` ({results[dtype]['dtype'].removeprefix('torch.')})" for dtype in dtypes)
    rows = [f"| stage | {header} |", "|---" * (len(dtypes) + 1) + "|"]
    totals = {dtype: sum(results[dtype]["stages"].values()) for dtype in dtypes}
    for stage, label in STAGES.items():
        if any(stage in results[dtype]["stages"] for dtype in dtypes):
            cells = " | ".join(f"{1000 * results[dtype]['stages'].get(stage, 0.0):.0f} ms" for dtype in dtypes)
            rows.append(f"| {label} | {cells} |")
    rows.append("| **total per image** | " + " | ".join(f"**{totals[d]:.1f} s**" for d in dtypes) + " |")
    plain = " | ".join(f"{sum(results[d]['forwards'].values()):.1f} s" for d in dtypes)
    rows.append(f"| plain DINOv2 + plain CLIP forwards, same run | {plain} |")
    rows.append("| peak RSS | " + " | ".join(f"{results[d]['peak_rss_gib']:.2f} GiB" for d in dtypes) + " |")
    folders = [results[d].get("folder") for d in dtypes]
    if any(folders):
        cells = " | ".join(", ".join(f"{mode}: {rate:.2f}" for mode, rate in (f or {}).items()) or "" for f in folders)
        rows.append(f"| folder of {record['folder']} photos, images/s | {cells} |")
    intro = (
        f"`{record['command']}` on {record['cpu']}, torch {record['torch']}, {record['date']}; load average "
        f"{record['load_before']:.1f} before and {record['load_after']:.1f} after (2 or more on 2 cores means other "
        f"jobs shared the CPU); preset `{record['preset']}`, real-size architectures with random weights, "
        f"{record['entries']:,}-entry database, 448x448:"
    )
    return f"{START}\n{intro}\n\n" + "\n".join(rows) + f"\n{END}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("record", type=Path, help="the file bench_pipeline.py --json wrote")
    args = parser.parse_args()
    text = README.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise SystemExit(f"README.md has no {START} ... {END} block to fill")
    section = speed_section(json.loads(args.record.read_text(encoding="utf-8")))
    README.write_text(re.sub(f"{re.escape(START)}.*?{re.escape(END)}", lambda _: section, text, flags=re.S), encoding="utf-8")
    print(f"README.md: Speed table from {args.record}")


if __name__ == "__main__":
    main()
