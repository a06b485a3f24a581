"""Shared test set-up: no test may reach the network."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the hub client otherwise fetches an agent registry once per process (even for cache-only loads)
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"


import pytest  # noqa: E402  (after the environment above is set)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory):
    """A tiny random-weight CLIP saved with ``save_pretrained`` (loaded back through tagseg's loader)."""
    from tagseg.testing import save_random_clip

    return save_random_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def dinov2_dir(tmp_path_factory: pytest.TempPathFactory):
    """A tiny random-weight DINOv2 saved with ``save_pretrained``."""
    from tagseg.testing import save_random_dinov2

    return save_random_dinov2(tmp_path_factory.mktemp("dinov2"))


@pytest.fixture(scope="module")
def registers_dir(tmp_path_factory: pytest.TempPathFactory):
    """A tiny random-weight DINOv2 with registers (``Dinov2WithRegistersModel``) saved with ``save_pretrained``."""
    from tagseg.testing import save_random_dinov2

    return save_random_dinov2(tmp_path_factory.mktemp("dinov2-registers"), registers=True)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch/OpenMP thread for a module: faiss k-means on tiny inputs busy-waits badly on shared CPUs otherwise."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[tuple[object, float | None]]:
    """Every connection a socket of this process tries during the test: ``(address, timeout)``.

    What a user waits for when a server cannot be reached is the number of tries and each one's
    timeout; tests assert those instead of the wall clock.
    """
    import socket

    tried: list[tuple[object, float | None]] = []
    connect = socket.socket.connect

    def recording(sock: socket.socket, address: object) -> None:
        tried.append((address, sock.gettimeout()))
        return connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", recording)
    return tried
