"""The scripts that write parts of the README: the Speed table and the gallery."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_the_speed_section_names_command_cpu_and_load_and_lists_every_stage() -> None:
    stages = {"features": 0.4, "kmeans": 0.3, "crf": 1.2, "regions": 0.005, "embedder": 2.0, "pooling": 0.02, "naming": 0.15}
    result = {"dtype": "torch.bfloat16", "stages": stages, "forwards": {"dinov2": 0.6, "clip": 1.2}, "peak_rss_gib": 2.08,
              "folder": {"ahead 1": 0.25}}
    record = {"command": "python benchmarks/bench_pipeline.py --preset paper", "cpu": "Some CPU, 2 cores, avx2", "torch": "2.13.0",
              "date": "2026-12-05", "load_before": 0.1, "load_after": 0.3, "preset": "paper", "entries": 100000, "folder": 20,
              "results": {"auto": result}}
    section = _script("write_speed_section").speed_section(record)
    assert section.startswith("<!-- speed-table -->") and section.endswith("<!-- /speed-table -->")
    assert "`python benchmarks/bench_pipeline.py --preset paper` on Some CPU, 2 cores, avx2" in section
    assert "| dense CRF | 1200 ms |" in section and "| **total per image** | **4.1 s** |" in section
    assert "| folder of 20 photos, images/s | ahead 1: 0.25 |" in section
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme.count("<!-- speed-table -->") == 1 and readme.count("<!-- /speed-table -->") == 1
