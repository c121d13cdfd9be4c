"""Shared fixtures: the data directory (SPURLAB_DATA, default ../shared/data) and quiet output."""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")
REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("SPURLAB_DATA", str(REPO.parent / "shared" / "data"))
os.environ.setdefault("SPURLAB_QUIET", "1")


@pytest.fixture(autouse=True, scope="session")
def _feature_cache(tmp_path_factory):
    """Every test run keeps its feature cache (spurlab.train.feature_cache) in a temporary folder."""
    os.environ.setdefault("SPURLAB_CACHE", str(tmp_path_factory.mktemp("feature-cache")))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ["SPURLAB_DATA"])
    if not (path / "MNIST").is_dir():
        pytest.fail(f"test data not found under {path}: set SPURLAB_DATA to the folder holding MNIST/ "
                    f"and FashionMNIST/ (../shared/data in CI)")
    return path


@pytest.fixture
def one_thread():
    """One torch and BLAS thread: tests of many small linear-algebra calls run faster and steadier."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(before)
