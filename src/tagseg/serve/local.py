"""``tagseg serve`` as a child process on a free loopback port, for tests, benchmarks and soak runs."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

START_SECONDS = 180


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def local_server(*arguments: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """Run ``tagseg serve ARGUMENTS`` on 127.0.0.1 until ``/health`` answers; yields the process and
    its base URL, and kills the process on exit if it still runs."""
    port = free_port()
    command = [sys.executable, "-c", "from tagseg.cli import main; main()", "serve", *arguments]
    log = tempfile.TemporaryFile()  # a file, not a pipe: a full pipe nobody reads would block the server
    process = subprocess.Popen([*command, "--host", "127.0.0.1", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(START_SECONDS * 10):
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"tagseg serve exited: {log.read().decode(errors='replace')}")
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                threading.Event().wait(0.1)
        else:
            raise RuntimeError(f"tagseg serve did not answer within {START_SECONDS} s")
        yield process, url
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(30)
        log.close()
