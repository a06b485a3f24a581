"""The package's layers, as docs/architecture.md's layer table states them, hold for every import.

Every import in src/tagseg counts, inside functions too; only those under ``if TYPE_CHECKING:`` do
not. The table is read from the documentation, so the documentation and this test cannot drift
apart: every module of the package must be in it, and every import must go to a layer its own
layer may import.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from test_import_cycles import imported_module, imports, module_names

ARCHITECTURE = Path(__file__).parent.parent / "docs" / "architecture.md"

PIPELINE_ENTRY_POINTS = {"TAG", "Forwarded"}
"""What modules outside the pipeline's layer take from ``tagseg.pipeline``: the pipeline, not its helpers."""

KNOWN_EXCEPTIONS: set[tuple[str, str]] = set()
"""Imports that break the layers today and are being fixed: (importing module, imported module or name)."""


def layer_table(text: str) -> tuple[dict[str, int], dict[int, set[str]]]:
    """Unit -> layer, and layer -> the units and layers it may import, from the Markdown layer table.

    A row is ``| number | `unit`, ... | allowed |``; ``allowed`` holds layer numbers, ranges
    (``1–4``) and units (```database/```). A unit is a top-level module or subpackage of tagseg.
    """
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    layers: dict[str, int] = {}
    allowed: dict[int, set[str]] = {}
    rows = [line for line in section.splitlines() if re.match(r"\|\s*\d+\s*\|", line)]
    for row in rows:
        number, units, may_import = (cell.strip() for cell in row.strip().strip("|").split("|")[:3])
        for unit in re.findall(r"`([^`]+)`", units):
            layers[_unit_name(unit)] = int(number)
        allowed[int(number)] = {_unit_name(unit) for unit in re.findall(r"`([^`]+)`", may_import)}
        for start, end in re.findall(r"(?<![`\w])(\d+)(?:\s*[–-]\s*(\d+))?(?![`\w])", re.sub(r"`[^`]*`", "", may_import)):
            allowed[int(number)].update(str(n) for n in range(int(start), int(end or start) + 1))
    return layers, allowed


def _unit_name(written: str) -> str:
    """``config.py`` -> ``tagseg.config``, ``backbones/`` -> ``tagseg.backbones``, ``tagseg`` -> ``tagseg``."""
    name = written.removesuffix(".py").strip("/")
    return "tagseg" if name == "tagseg" else f"tagseg.{name}"


def unit_of(module: str) -> str:
    """The top-level module or subpackage a module belongs to."""
    return ".".join(module.split(".")[:2])


def layer_breaks(table: tuple[dict[str, int], dict[int, set[str]]]) -> list[str]:
    """Every import that the layer table does not allow, as ``importer -> imported``."""
    layers, allowed = table
    names = module_names()
    known = set(names)
    broken = []
    for name, path in sorted(names.items()):
        own = layers[unit_of(name)]
        for item in sorted(imports(name, path, known)):
            target = imported_module(item, known)
            target_unit = unit_of(target)
            if target_unit == unit_of(name) or (name, target) in KNOWN_EXCEPTIONS or (name, item) in KNOWN_EXCEPTIONS:
                continue
            if not ({target_unit, str(layers[target_unit])} & allowed[own]):
                broken.append(f"{name} -> {target} (layer {own} may not import layer {layers[target_unit]})")
            elif target == "tagseg.pipeline" and own != layers["tagseg.pipeline"] and item.rpartition(".")[2] not in PIPELINE_ENTRY_POINTS:
                broken.append(f"{name} -> {item} (outside its layer the pipeline is imported for {', '.join(sorted(PIPELINE_ENTRY_POINTS))} only)")
    return broken


def test_the_table_reader_reads_numbers_ranges_and_units() -> None:
    text = "## Layers\n\n| layer | modules | may import |\n|---|---|---|\n| 1 | `errors.py`, `tagseg` | 1 |\n" \
        "| 2 | `cli/` | 1, 3–4, `database/` |\n\n## Next\n| 9 | `nothing` | 9 |\n"
    assert layer_table(text) == (
        {"tagseg.errors": 1, "tagseg": 1, "tagseg.cli": 2},
        {1: {"1"}, 2: {"1", "3", "4", "tagseg.database"}},
    )


def test_the_checker_sees_a_lazy_import_that_breaks_a_layer(tmp_path: Path) -> None:
    source = tmp_path / "segments.py"
    source.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from tagseg.pipeline import TAG\n"
        "def later():\n    from tagseg.builder import build\n    from . import config\n"
    )
    assert imports("tagseg.segments", source, set()) == {"tagseg.builder.build", "tagseg.config"}


def test_every_module_is_in_the_layer_table() -> None:
    layers, _ = layer_table(ARCHITECTURE.read_text(encoding="utf-8"))
    units = {unit_of(name) for name in module_names()}
    assert units - set(layers) == set(), "modules missing from docs/architecture.md's layer table"
    assert set(layers) - units == set(), "the layer table names modules that do not exist"


def test_every_import_keeps_to_the_documented_layers() -> None:
    broken = layer_breaks(layer_table(ARCHITECTURE.read_text(encoding="utf-8")))
    assert broken == [], "imports that break docs/architecture.md's layers:\n" + "\n".join(broken)


def test_the_known_exceptions_are_still_needed() -> None:
    names = module_names()
    known = set(names)
    still = {(name, item) for name, path in names.items() for item in imports(name, path, known)}
    still |= {(name, imported_module(item, known)) for name, item in still}
    assert KNOWN_EXCEPTIONS - still == set(), "these exceptions are fixed: remove them from KNOWN_EXCEPTIONS"


def test_the_settings_and_the_package_import_no_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, tagseg, tagseg.config as c\n"
        "c.preset('toy', dense_method='naclip', method_settings={'gaussian_std': 3.0})\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr



def test_only_the_command_line_draws_progress() -> None:
    drawing = []
    for name, path in module_names().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(module.split(".")[0] in ("rich", "tqdm") for module in modules) and unit_of(name) != "tagseg.cli":
                drawing.append(name)
    assert drawing == [], "modules below the command line that import rich or tqdm (report to tagseg.progress instead)"
