"""Run a snippet in a child Python whose string hashing differs from this process's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any


def json_under_other_hash_seed(program: str, argument: Any) -> Any:
    """The JSON that ``program`` prints, given ``json.dumps(argument)`` as ``sys.argv[1]``, under another PYTHONHASHSEED."""
    other_seed = "2" if os.environ.get("PYTHONHASHSEED") == "1" else "1"
    child = subprocess.run(
        [sys.executable, "-c", program, json.dumps(argument)],
        env={**os.environ, "PYTHONHASHSEED": other_seed},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(child.stdout)
