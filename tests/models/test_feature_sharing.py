"""Kernels with the query's repeated spurious columns multiplied once equal the plain computation."""
import numpy as np
import pytest
import torch

import spurlab.models.features as features
from spurlab.data.synthetic import gaussian_core_spurious, spurious_query
from spurlab.models.features import NTKFeatures, RandomFeatures, shared_input_columns


@pytest.mark.parametrize("query", ["fresh", "zero"])
@pytest.mark.parametrize("model", ["rf", "ntk"])
def test_shared_columns_give_the_same_kernels(monkeypatch, query, model):
    train = gaussian_core_spurious(60, 40, 0.5, seed=0)
    z_query = spurious_query(train, query, 2)
    test = gaussian_core_spurious(30, 40, 0.5, seed=1, u=train.u)
    fmap = (RandomFeatures(700, "phi2", seed=3, device="cpu", block_size=256) if model == "rf"
            else NTKFeatures(20, "h0+h1", seed=3, device="cpu"))
    fmap.fit(train.z)
    parts = [torch.as_tensor(a, dtype=torch.float64) for a in (train.z, z_query, test.z)]
    sharing = shared_input_columns(parts)
    assert sharing is not None and int(sharing.same.sum()) == 20
    assert int(sharing.zero.sum()) == (20 if query == "zero" else 0)
    fast = fmap.gram_tensors(train.z, z_query, test.z)
    monkeypatch.setattr(features, "shared_input_columns", lambda parts, min_share=0.125: None)
    plain = fmap.gram_tensors(train.z, z_query, test.z)
    for a, b in zip(fast, plain):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-13)


def test_no_sharing_without_repeated_columns():
    rng = np.random.default_rng(0)
    parts = [torch.as_tensor(rng.normal(size=(10, 8))) for _ in range(2)]
    assert shared_input_columns(parts) is None
