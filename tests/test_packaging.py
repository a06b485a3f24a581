"""The web service is an extra: the library and the CLI work without it, and `tagseg serve` says how to get it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from PIL import Image

from tagseg.toy import toy_scene

BLOCK_SERVE = "import sys\nfor name in ('fastapi', 'uvicorn', 'multipart'):\n    sys.modules[name] = None\n"
"""Makes the serve extra's packages unimportable in a fresh interpreter (as if not installed); httpx stays,
as spaCy (through weasel), a core dependency, imports it too."""


def run_without_serve(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_SERVE + textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_everything_but_the_service_imports_and_segments_without_the_serve_extra(tmp_path: Path) -> None:
    Image.fromarray(toy_scene(0, size=(96, 128))[0]).save(tmp_path / "scene.png")
    done = run_without_serve(
        """
        import importlib, pkgutil, tagseg
        for module in pkgutil.walk_packages(tagseg.__path__, "tagseg."):
            if not module.name.startswith("tagseg.serve"):
                importlib.import_module(module.name)
        from tagseg.cli import main
        sys.argv = ["tagseg", "segment", "scene.png", "--preset", "toy", "--image-size", "96", "--out", "out"]
        main()
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "scene.json").is_file() and (tmp_path / "out" / "results.coco.json").is_file()


def test_serve_without_the_extra_names_it_and_exits_1(tmp_path: Path) -> None:
    done = run_without_serve(
        """
        from tagseg.cli import main
        sys.argv = ["tagseg", "serve", "--preset", "toy"]
        main()
        """,
        tmp_path,
    )
    assert done.returncode == 1
    assert "fastapi, uvicorn, python-multipart" in done.stderr and "pip install -e '.[serve]'" in done.stderr
    assert "Traceback" not in done.stderr
    imported = run_without_serve("import tagseg.serve\n", tmp_path)
    assert "MissingDependencyError" in imported.stderr and "'.[serve]'" in imported.stderr


def test_the_version_is_the_installed_distributions_which_is_pyprojects() -> None:
    import tomllib
    from importlib.metadata import version

    import tagseg

    declared = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    assert tagseg.__version__ == version("tagseg") == declared
