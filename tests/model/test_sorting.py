import numpy as np
import pytest
import torch

from recbole_kgin.model.sorting import sorted_unique, stable_order


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_stable_order_is_numpys_stable_argsort(dtype):
    keys = np.random.default_rng(0).integers(0, 50, 5000).astype(dtype)  # many ties
    order = stable_order(torch.from_numpy(keys))
    assert order.dtype == torch.int64
    np.testing.assert_array_equal(order.numpy(), np.argsort(keys, kind="stable"))


def test_sorted_unique_is_numpys_unique():
    keys = np.random.default_rng(1).integers(-(2**40), 2**40, 3000)
    keys = np.concatenate([keys, keys[:500]])
    np.testing.assert_array_equal(sorted_unique(keys), np.unique(keys))
    np.testing.assert_array_equal(sorted_unique(keys.astype(np.int32)), np.unique(keys.astype(np.int32)))
    assert sorted_unique(np.zeros(0, dtype=np.int64)).shape == (0,)
