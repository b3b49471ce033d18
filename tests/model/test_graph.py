"""recbole_kgin/model/graph.py against dense matrices: CSR patterns, the KG hop and the
interaction mean, with dropout masks, row subsets and gradients (float64, gradcheck)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import recbole_kgin.model.graph as graph
from recbole_kgin.model.graph import CSRPattern, InteractionGraph, KnowledgeGraph, unique_triples

N_ENTITIES, N_ITEMS, N_RELATIONS, D = 9, 4, 3, 5


def random_pattern(n_rows, n_cols, density, seed):
    rng = np.random.default_rng(seed)
    dense = rng.random((n_rows, n_cols)) < density
    dense[0, :] = False  # an empty row
    rows, cols = np.nonzero(dense)  # row-major: sorted by row
    return CSRPattern(torch.from_numpy(rows), torch.from_numpy(cols), (n_rows, n_cols)), rows, cols


def dense_of(pattern_rows, pattern_cols, values, shape):
    matrix = torch.zeros(shape, dtype=values.dtype)
    matrix[torch.as_tensor(pattern_rows), torch.as_tensor(pattern_cols)] = values
    return matrix


def test_csr_pattern_products_match_dense():
    pattern, rows, cols = random_pattern(6, 7, 0.4, seed=0)
    generator = torch.Generator().manual_seed(0)
    values = torch.rand(len(rows), dtype=torch.float64, generator=generator)
    dense = torch.randn(7, D, dtype=torch.float64, generator=generator)
    matrix = dense_of(rows, cols, values, (6, 7))
    assert pattern.nnz == len(rows)
    assert torch.allclose(pattern.product(values, dense), matrix @ dense)
    assert torch.allclose(pattern.product(None, dense), (matrix != 0).double() @ dense)
    upstream = torch.randn(6, D, dtype=torch.float64, generator=generator)
    assert torch.allclose(pattern.product_transposed(values, upstream), matrix.t() @ upstream)
    x = dense.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: pattern.matmul(values, t), (x,))


@pytest.mark.parametrize("subset", [False, True])
def test_select_keeps_the_masked_entries_in_order(subset):
    pattern, rows, cols = random_pattern(6, 7, 0.5, seed=1)
    generator = torch.Generator().manual_seed(1)
    keep = torch.rand(len(rows), generator=generator) < 0.6
    values = torch.rand(len(rows), dtype=torch.float64, generator=generator)
    kept_rows, kept_cols = torch.as_tensor(rows)[keep], torch.as_tensor(cols)[keep]
    row_map = n_rows = None
    wanted = torch.arange(6)
    if subset:
        wanted = torch.tensor([1, 3, 4])
        row_map = torch.full((6,), -1, dtype=torch.int64)
        row_map[wanted] = torch.arange(3)
        n_rows = 3
        in_subset = row_map[kept_rows] >= 0
        keep = keep & (row_map[torch.as_tensor(rows)] >= 0)
        kept_rows, kept_cols = kept_rows[in_subset], kept_cols[in_subset]
    selected, positions = pattern.select(keep, row_map, n_rows)
    assert torch.equal(positions, keep.nonzero().squeeze(1))
    assert selected.shape == (len(wanted), 7) and selected.nnz == int(keep.sum())
    matrix = dense_of(rows, cols, values * keep, (6, 7))[wanted]
    dense = torch.randn(7, D, dtype=torch.float64, generator=generator)
    assert torch.allclose(selected.product(values[positions], dense), matrix @ dense)
    upstream = torch.randn(len(wanted), D, dtype=torch.float64, generator=generator)
    assert torch.allclose(selected.product_transposed(values[positions], upstream), matrix.t() @ upstream)


def random_kg(seed):
    rng = np.random.default_rng(seed)
    triples = {(int(rng.integers(N_ENTITIES)), int(rng.integers(N_RELATIONS)), int(rng.integers(N_ENTITIES))) for _ in range(30)}
    triples = sorted(triples) + [sorted(triples)[0]]  # with a duplicate
    heads, relations, tails = (np.array(column) for column in zip(*triples))
    return KnowledgeGraph(heads, relations, tails, N_ENTITIES, N_ITEMS)


def dense_kg_hop(kg, keep, entity, relation):
    """Y[h] = mean over kept (h, r, t) of X[t] * R[r] (paper Eq. 11), one edge at a time."""
    out = torch.zeros_like(entity)
    for h in range(N_ENTITIES):
        messages = [entity[t] * relation[r] for e, (hh, r, t) in enumerate(zip(kg.heads.tolist(), kg.relations.tolist(), kg.tails.tolist()))
                    if hh == h and (keep is None or keep[e])]
        if messages:
            out[h] = torch.stack(messages).mean(0)
    return out


@pytest.mark.parametrize("runs", ["looped", "vectorised"])
@pytest.mark.parametrize("dropped", [False, True])
def test_kg_hop_matches_the_dense_mean_and_passes_gradcheck(runs, dropped, monkeypatch):
    monkeypatch.setattr(graph, "RUN_LOOP_MIN_ROWS", 0 if runs == "looped" else 10**9)
    kg = random_kg(seed=2)
    assert kg.n_edges == len(set(zip(kg.heads.tolist(), kg.relations.tolist(), kg.tails.tolist())))  # duplicate gone
    assert kg.inner.by_run == (runs == "looped")
    generator = torch.Generator().manual_seed(2)
    keep = torch.rand(kg.n_edges, generator=generator) < 0.6 if dropped else None
    entity = torch.randn(N_ENTITIES, D, dtype=torch.float64, generator=generator, requires_grad=True)
    relation = torch.randn(N_RELATIONS, D, dtype=torch.float64, generator=generator, requires_grad=True)
    prepared = kg.prepare(keep)
    expected = dense_kg_hop(kg, keep, entity, relation)
    inner, items = kg.aggregate(prepared, False, entity, relation)
    last, _ = kg.aggregate(prepared, True, entity, relation)
    assert inner.shape == (N_ENTITIES, D) and last.shape == (N_ITEMS, D)
    assert torch.allclose(inner, expected) and torch.allclose(last, expected[:N_ITEMS])
    assert torch.equal(items, entity[:N_ITEMS])
    upstream = torch.randn(N_ENTITIES, D, dtype=torch.float64, generator=generator)
    got = torch.autograd.grad((inner * upstream).sum() + (items * upstream[:N_ITEMS]).sum(), (entity, relation))
    want = torch.autograd.grad(
        (expected * upstream).sum() + (entity[:N_ITEMS] * upstream[:N_ITEMS]).sum(), (entity, relation)
    )
    assert all(torch.allclose(g, w) for g, w in zip(got, want))
    for is_last in (False, True):
        assert torch.autograd.gradcheck(lambda e, r: kg.aggregate(prepared, is_last, e, r), (entity, relation))


@pytest.mark.parametrize("users", [None, [0, 2, 5]])
@pytest.mark.parametrize("dropped", [False, True])
def test_interaction_mean_over_kept_items_divides_by_all_items(users, dropped):
    rng = np.random.default_rng(3)
    n_users, n_items = 6, 5
    pairs = [(u, i) for u in range(n_users) for i in range(n_items) if rng.random() < 0.5] + [(1, 0), (1, 0)]
    user_ids, item_ids = (np.array(column) for column in zip(*pairs))
    interactions = InteractionGraph(user_ids, item_ids, n_users, n_items)
    unique = sorted(set(pairs))
    assert interactions.n_edges == len(unique)
    generator = torch.Generator().manual_seed(3)
    keep = torch.rand(len(unique), generator=generator) < 0.5 if dropped else None
    items = torch.randn(n_items, D, dtype=torch.float64, generator=generator, requires_grad=True)
    wanted = torch.tensor(users) if users is not None else None
    means = InteractionGraph.aggregate(interactions.prepare(keep, wanted), items)
    degree = {u: sum(1 for uu, _ in unique if uu == u) for u in range(n_users)}
    expected = torch.zeros(n_users, D, dtype=torch.float64)
    for e, (u, i) in enumerate(unique):
        if keep is None or keep[e]:
            expected[u] = expected[u] + items[i] / degree[u]
    expected = expected if users is None else expected[users]
    assert torch.allclose(means, expected)
    upstream = torch.randn_like(expected)
    got = torch.autograd.grad((means * upstream).sum(), items)[0]
    assert torch.allclose(got, torch.autograd.grad((expected * upstream).sum(), items)[0])


@pytest.mark.parametrize(
    "n_entities, n_relations, dtype",
    [(40, 3, np.int64), (7, 1, np.int32), (2**22, 2**20, np.int64)],  # the last: int64 keys would overflow
)
def test_unique_triples_are_numpys_unique_rows(n_entities, n_relations, dtype):
    rng = np.random.default_rng(1)
    rows = np.stack([rng.integers(0, n_entities, 500), rng.integers(0, n_relations, 500), rng.integers(0, n_entities, 500)], 1)
    rows[0] = (n_entities - 1, n_relations - 1, n_entities - 1)  # the largest ids occur
    rows = np.concatenate([rows, rows[:100]]).astype(dtype)  # duplicates
    expected = np.unique(rows.astype(np.int64), axis=0)
    found = unique_triples(rows[:, 0], rows[:, 1], rows[:, 2], n_entities)
    assert found.dtype == np.int64 and found.shape == expected.shape and np.array_equal(found, expected)
    assert unique_triples(*(np.zeros(0, dtype=np.int64),) * 3, n_entities).shape == (0, 3)


def test_interaction_pairs_of_int32_ids_whose_keys_pass_int32_stay_exact():
    """RecBole's inter_matrix gives int32 rows and columns; user * n_items + item then
    exceeds int32 on large datasets (70,000 users x 40,000 items)."""
    n_users, n_items = 70_000, 40_000
    users = np.array([n_users - 1, 3, n_users - 1, 3], dtype=np.int32)
    items = np.array([n_items - 1, 7, n_items - 1, 0], dtype=np.int32)
    interactions = InteractionGraph(users, items, n_users, n_items)
    assert interactions.n_edges == 3
    assert interactions.pattern.col.tolist() == [0, 7, n_items - 1]
    assert interactions.full_values.dtype == torch.float32
    assert interactions.full_values.tolist() == [0.5, 0.5, 1.0]
