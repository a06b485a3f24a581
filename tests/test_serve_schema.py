"""The HTTP API fuzzed against its own OpenAPI schema with schemathesis, on loopback, with a bounded budget."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_serve import served, toy_tag

from tagseg.serve import ServeSettings, create_app

pytestmark = pytest.mark.schemathesis

# Seconds of fuzzing: small in the default run; .ci/run gives its own step a larger budget.
BUDGET_S = int(os.environ.get("TAGSEG_SCHEMATHESIS_SECONDS", "45"))
TOKEN = "schema-test-token"


def test_every_operation_conforms_to_the_schema(tmp_path: Path) -> None:
    """No 5xx, no undocumented status or body, the schema's examples accepted, invalid data refused."""
    settings = ServeSettings(database_writes=True, token=TOKEN, request_timeout=30)
    with served(create_app(toy_tag(), settings)) as url:
        command = [
            str(Path(sys.executable).parent / "schemathesis"), "run", f"{url}/openapi.json",
            "--checks", "all", "--phases", "examples,coverage,fuzzing", "--max-examples", "40",
            "--max-time", str(BUDGET_S), "--max-response-time", "30", "--workers", "2", "--seed", "15",
            "--generation-database", "none",
            "-H", f"Authorization: Bearer {TOKEN}", "--no-color",
        ]  # fmt: skip
        run = subprocess.run(command, capture_output=True, text=True, timeout=BUDGET_S + 120, cwd=tmp_path)
    report = run.stdout + run.stderr
    generated = re.search(r"(\d+) generated", report)
    assert run.returncode == 0, report[-6000:]
    assert generated and int(generated.group(1)) >= 100, report[-2000:]
    print(f"schemathesis: {generated.group(1)} test cases, 0 failures")
