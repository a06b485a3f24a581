"""A real ``tagseg serve --preset toy`` process on loopback, stopped by SIGTERM and killed by SIGKILL."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from tagseg import toy
from tagseg.database import PersistentTextDatabase
from tagseg.database.store import LOCK, MANIFEST
from tagseg.files import exclusive_lock
from tagseg.serve.local import local_server

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX signals; /proc/locks")


def waits_for_a_lock(pid: int) -> bool:
    """Whether process ``pid`` is blocked waiting for a file lock (Linux lists waiters with ``->``)."""
    return any("->" in line and line.split()[5] == str(pid) for line in Path("/proc/locks").read_text().splitlines())


def toy_database(path: Path) -> Path:
    encoder = toy.ToyTextEncoder()
    PersistentTextDatabase.create(path, model_id=encoder.model_id, dim=encoder.dim).add_texts(toy.toy_captions(), encoder)
    return path


def serve(database: Path) -> Any:
    """``tagseg serve --preset toy`` with writes to ``database``."""
    return local_server("--preset", "toy", "--database", str(database), "--database-writes")


def test_sigterm_finishes_requests_in_flight_and_answers_new_ones_503(tmp_path: Path) -> None:
    database = toy_database(tmp_path / "db")
    with serve(database) as (process, url):
        answers: list[httpx.Response] = []
        with exclusive_lock(database / LOCK):  # the server's write now waits for this lock: it stays in flight
            writer = threading.Thread(target=lambda: answers.append(httpx.post(f"{url}/v1/database/add", json={"texts": ["a red zebra crossing"]}, timeout=60)))
            writer.start()
            for _ in range(600):
                if waits_for_a_lock(process.pid):
                    break
                threading.Event().wait(0.05)
            assert waits_for_a_lock(process.pid), "the write did not reach the database"
            process.send_signal(signal.SIGTERM)
            refused = None
            for _ in range(600):  # the signal is handled within a tick of the server's loop
                refused = httpx.get(f"{url}/v1/info", timeout=10)
                if refused.status_code == 503:
                    break
                threading.Event().wait(0.05)
            assert refused is not None and refused.status_code == 503, refused.text if refused else None
            assert refused.json()["error"]["code"] == "shutting_down"
            assert int(refused.headers["retry-after"]) >= 1
            assert process.poll() is None, "the server must wait for the write in flight"
        writer.join(60)
        assert [a.status_code for a in answers] == [200]
        assert answers[0].json()["added"] == 1
        assert process.wait(60) in (0, -signal.SIGTERM)
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{url}/health", timeout=2)
    assert PersistentTextDatabase.open(database, verify=True).contains("a red zebra crossing")


def test_sigkill_during_writes_loses_no_acknowledged_text_and_leaves_no_partial_file(tmp_path: Path) -> None:
    database = toy_database(tmp_path / "db")
    acknowledged: list[str] = []
    with serve(database) as (process, url):
        stop = threading.Event()

        def write() -> None:
            with httpx.Client(base_url=url, timeout=30) as http:
                for batch in range(1000):
                    texts = [f"caption {batch}-{i} of a red zebra" for i in range(200)]
                    try:
                        answer = http.post("/v1/database/add", json={"texts": texts})
                    except httpx.TransportError:
                        return
                    assert answer.status_code == 200, answer.text
                    acknowledged.extend(texts)
                    if batch == 5:
                        stop.set()

        writer = threading.Thread(target=write)
        writer.start()
        assert stop.wait(120)
        os.kill(process.pid, signal.SIGKILL)  # in the middle of a later batch's write, or between two
        writer.join(60)
        assert process.wait(30) == -signal.SIGKILL
    assert len(acknowledged) >= 6 * 200
    reopened = PersistentTextDatabase.open(database, verify=True)  # every file the manifest names is whole
    assert all(reopened.contains(text) for text in acknowledged)
    named = {MANIFEST, LOCK} | {name for shard in reopened.manifest["shards"] for name in shard["files"]}
    if reopened.manifest["removed"]:
        named.add(reopened.manifest["removed"]["file"])
    assert {f.name for f in database.iterdir()} == named, "opening removed what the killed write left"

