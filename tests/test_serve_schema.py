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


# What the schema cannot say: an image too small to segment, truncated or not an image is refused
# with 413/415/422; a URL the fetch policy refuses (another scheme, no host, a private address) is 400;
# the URL example's host cannot be reached from the test machine (502, no network);
# /predict without label_config needs a /setup first (422).
CONFIG = """
[[operations]]
include-path = "/v1/segment"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "413", "415", "422", "502"]
checks.not_a_server_error.expected-statuses = ["2xx", "4xx", "502"]

[[operations]]
include-path = "/predict"
checks.positive_data_acceptance.expected-statuses = ["2xx", "422"]
"""


def test_every_operation_conforms_to_the_schema(tmp_path: Path) -> None:
    """No 5xx, no undocumented status or body, the schema's examples accepted, invalid data refused."""
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    settings = ServeSettings(database_writes=True, token=TOKEN, request_timeout=30)
    with served(create_app(toy_tag(), settings)) as url:
        command = [
            str(Path(sys.executable).parent / "schemathesis"), "--config-file", str(config), "run", f"{url}/openapi.json",
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
