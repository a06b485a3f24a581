"""Shared test set-up: no test may reach the network."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


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
def one_torch_thread():
    """One torch/OpenMP thread for a module: faiss k-means on tiny inputs busy-waits badly on shared CPUs otherwise."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
