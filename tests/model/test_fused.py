"""The fused KG kernel against the torch path and dense arithmetic."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from recbole_kgin.model.fused import kernel
from recbole_kgin.model.graph import KnowledgeGraph

needs_kernel = pytest.mark.skipif(kernel() is None, reason="the fused kernels could not be built here")


def random_kg(seed: int, n_entities: int = 40, n_items: int = 9, n_relations: int = 5, n_triples: int = 300):
    rng = np.random.default_rng(seed)
    heads = rng.integers(0, n_entities, n_triples)
    tails = rng.integers(0, n_entities, n_triples)
    heads[:5] = 0  # a head with several edges of one relation
    relations = rng.integers(0, n_relations, n_triples)
    relations[:5] = 2
    return (heads, relations, tails, n_entities, n_items), n_relations


def dense_hop(kg: KnowledgeGraph, keep, entity, relation, rows):
    """Y[h] = sum over kept edges w R[r] X[t], w = 1/|kept N_h|, by dense loops."""
    keep = torch.ones(kg.n_edges, dtype=torch.bool) if keep is None else keep
    out = torch.zeros(rows, entity.shape[1], dtype=entity.dtype)
    heads, relations, tails = kg.heads.tolist(), kg.relations.tolist(), kg.tails.tolist()
    degree = np.zeros(kg.n_entities)
    for e, h in enumerate(heads):
        degree[h] += float(keep[e])
    for e, (h, r, t) in enumerate(zip(heads, relations, tails)):
        if keep[e] and h < rows:
            out[h] += relation[r] * entity[t] / degree[h]
    return out


@needs_kernel
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("drop", [False, True])
@pytest.mark.parametrize("last", [False, True])
def test_fused_hop_equals_the_torch_path_and_dense_sums(seed, drop, last):
    args, n_relations = random_kg(seed)
    fused, plain = KnowledgeGraph(*args, fused=True), KnowledgeGraph(*args, fused=False)
    keep = torch.from_numpy(np.random.default_rng(seed + 7).random(fused.n_edges) < 0.6) if drop else None
    entity = torch.randn(args[3], 8, dtype=torch.float64, requires_grad=True)
    relation = torch.randn(n_relations, 8, dtype=torch.float64, requires_grad=True)
    outputs, grads = [], []
    for kg in (fused, plain):
        out, items = kg.aggregate(kg.prepare(keep), last, entity, relation)
        weights, item_weights = torch.randn_like(out), torch.randn_like(items)
        loss = (out * weights).sum() + (items * item_weights).sum()
        grads.append(torch.autograd.grad(loss, (entity, relation)) + (weights, item_weights))
        outputs.append((out, items))
    rows = args[4] if last else args[3]
    torch.testing.assert_close(outputs[0][0], dense_hop(fused, keep, entity.detach(), relation.detach(), rows))
    torch.testing.assert_close(outputs[0], outputs[1])
    assert torch.equal(outputs[0][1], entity[: args[4]])
    # gradients against the torch path with the same upstream gradients (items' included)
    out, items = fused.aggregate(fused.prepare(keep), last, entity, relation)
    loss = (out * grads[1][2]).sum() + (items * grads[1][3]).sum()
    g_fused = torch.autograd.grad(loss, (entity, relation))
    torch.testing.assert_close(g_fused[0], grads[1][0])
    torch.testing.assert_close(g_fused[1], grads[1][1])


@needs_kernel
@pytest.mark.parametrize("last", [False, True])
def test_fused_hop_gradcheck(last):
    args, n_relations = random_kg(3, n_entities=12, n_items=4, n_relations=3, n_triples=40)
    kg = KnowledgeGraph(*args, fused=True)
    keep = torch.from_numpy(np.random.default_rng(1).random(kg.n_edges) < 0.7)
    weights = kg.prepare(keep)
    entity = torch.randn(args[3], 3, dtype=torch.float64, requires_grad=True)
    relation = torch.randn(n_relations, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda e, r: kg.aggregate(weights, last, e, r), (entity, relation))


@needs_kernel
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_fused_hop_gives_the_same_sums_at_any_thread_count(threads):
    args, n_relations = random_kg(4, n_entities=3000, n_items=500, n_relations=6, n_triples=60000)
    kg = KnowledgeGraph(*args, fused=True)
    entity = torch.randn(args[3], 16, requires_grad=True)
    relation = torch.randn(n_relations, 16, requires_grad=True)
    before = torch.get_num_threads()
    results = []
    try:
        for count in (1, threads):
            torch.set_num_threads(count)
            out, _ = kg.aggregate(kg.prepare(None), False, entity, relation)
            results.append((out,) + torch.autograd.grad(out.pow(2).sum(), (entity, relation)))
    finally:
        torch.set_num_threads(before)
    for single, many in zip(*results):
        assert torch.equal(single, many)  # bit for bit: chunks do not follow the thread count


def test_ninja_of_the_environment_is_put_on_path_once(monkeypatch):
    """torch runs ``ninja`` from PATH; a Python run without an activated environment
    must still find the pip package's binary."""
    import ninja

    from recbole_kgin.model import kernel_build

    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    kernel_build._put_ninja_on_path()
    assert os.environ["PATH"].split(os.pathsep) == [ninja.BIN_DIR, "/usr/bin", "/bin"]
    kernel_build._put_ninja_on_path()
    assert os.environ["PATH"].split(os.pathsep) == [ninja.BIN_DIR, "/usr/bin", "/bin"]
    monkeypatch.delenv("PATH")
    kernel_build._put_ninja_on_path()
    assert os.environ["PATH"] == ninja.BIN_DIR  # no empty entry (the working folder)


def test_fused_hop_refuses_edges_out_of_head_order():
    from recbole_kgin.model.fused import FusedHop

    heads, relations, tails = np.array([1, 0]), np.array([0, 0]), np.array([1, 0])
    with pytest.raises(ValueError, match="sorted by head"):
        FusedHop(heads, relations, tails, 2, 1)


@needs_kernel
def test_fused_hop_gives_rows_without_edges_zeros():
    """Entities after the last head (no outgoing edge) still get their (zero) row."""
    heads, relations, tails = np.array([0, 0, 1]), np.array([0, 1, 0]), np.array([3, 4, 2])
    kg = KnowledgeGraph(heads, relations, tails, 6, 2, fused=True)
    entity = torch.randn(6, 4, dtype=torch.float64)
    relation = torch.randn(2, 4, dtype=torch.float64)
    out, items = kg.aggregate(kg.prepare(None), False, entity, relation)
    assert torch.equal(items, entity[:2])
    assert out.shape == (6, 4) and torch.equal(out[2:], torch.zeros(4, 4, dtype=torch.float64))
    torch.testing.assert_close(out[0], (relation[0] * entity[3] + relation[1] * entity[4]) / 2)


@needs_kernel
@pytest.mark.parametrize("shape,scale", [((4, 120), 1.0), ((3, 7), 0.1), ((2, 64), 10.0), ((5, 3), 1.0)])
def test_fused_distance_loss_equals_the_torch_path_with_its_gradient(shape, scale):
    from recbole_kgin.model.independence import distance_loss, independence_loss

    torch.manual_seed(sum(shape))
    vectors = (torch.randn(*shape, dtype=torch.float64) * scale).requires_grad_()
    vectors.data[0, 1] = vectors.data[0, 0]  # a zero distance off the diagonal
    reference = distance_loss(vectors)
    (reference_grad,) = torch.autograd.grad(reference, vectors)
    fused = independence_loss(vectors, "distance", 0.2, fused=True)
    (fused_grad,) = torch.autograd.grad(3.0 * fused, vectors)
    assert fused.dtype == vectors.dtype
    assert torch.allclose(fused, reference, rtol=1e-10, atol=1e-12)
    assert torch.allclose(fused_grad, 3.0 * reference_grad, rtol=1e-8, atol=1e-10)


@needs_kernel
def test_fused_distance_loss_gradcheck_and_float32():
    from recbole_kgin.model.fused import distance_loss
    from recbole_kgin.model.independence import distance_loss as torch_distance_loss

    torch.manual_seed(3)
    vectors = torch.randn(3, 9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(distance_loss, (vectors,))
    single = vectors.detach().float().requires_grad_()
    loss = distance_loss(single)
    (grad,) = torch.autograd.grad(loss, single)
    assert loss.dtype == grad.dtype == torch.float32
    assert torch.allclose(grad.double(), torch.autograd.grad(torch_distance_loss(vectors), vectors)[0], atol=1e-5)


def test_independence_loss_takes_the_kernel_on_cpu_only_where_asked(monkeypatch):
    from recbole_kgin.model import fused
    from recbole_kgin.model.independence import independence_loss

    calls = []
    monkeypatch.setattr(fused, "distance_loss", lambda vectors: calls.append(vectors) or vectors.sum())
    vectors = torch.randn(3, 5)
    independence_loss(vectors, "distance", 0.2)
    independence_loss(vectors, "distance", 0.2, fused=False)
    independence_loss(vectors, "cosine", 0.2, fused=True)
    assert calls == []
    independence_loss(vectors, "distance", 0.2, fused=True)
    assert len(calls) == 1 and calls[0] is vectors


def reference_user_side(user, items, pattern_rows, values, latent, intents, keeps, self_connection):
    """The user side of all hops by plain tensor operations (dense mean matrix)."""
    total, previous = user, user
    for hop, item_table in enumerate(items):
        mean = pattern_rows @ item_table
        beta = torch.softmax(previous @ latent.t(), dim=1)
        mixed = beta @ intents + (1.0 if self_connection else 0.0)
        z = mean * mixed * keeps[hop]
        previous = z / torch.linalg.vector_norm(z, dim=1, keepdim=True).clamp_min(1e-12)
        total = total + previous
    return total


@needs_kernel
@pytest.mark.parametrize("d,factors,hops,dropout,self_connection", [
    (20, 3, 2, True, True), (5, 1, 1, False, False), (64, 4, 3, True, False), (20, 3, 1, False, True),
])
def test_fused_user_side_equals_dense_operations_and_gradcheck(d, factors, hops, dropout, self_connection):
    from recbole_kgin.model.fused import user_side
    from recbole_kgin.model.graph import InteractionGraph

    generator = torch.Generator().manual_seed(d + factors + hops)
    n_users, n_items = 9, 7
    rows = torch.randint(0, n_users, (40,), generator=generator)
    cols = torch.randint(0, n_items, (40,), generator=generator)
    graph = InteractionGraph(rows.numpy(), cols.numpy(), n_users, n_items)
    keep = torch.rand(graph.n_edges, generator=generator) > 0.3
    present = sorted(set(graph.pattern.row.tolist()))
    keep[graph.pattern.row == present[0]] = False  # a batch user with no kept item
    batch_users = torch.tensor(present[:6])
    pattern, values = graph.prepare(keep, batch_users)
    dense = torch.zeros(len(batch_users), n_items, dtype=torch.float64)
    for row in range(len(batch_users)):
        for k in range(int(pattern.crow[row]), int(pattern.crow[row + 1])):
            dense[row, int(pattern.col[k])] += float(values[k])
    double = dict(generator=generator, dtype=torch.float64, requires_grad=True)
    user = torch.randn(len(batch_users), d, **double)
    latent, intents = torch.randn(factors, d, **double), torch.randn(factors, d, **double)
    items = [torch.randn(n_items, d, **double) for _ in range(hops)]
    lanes, keeps, threshold = [], [torch.ones(len(batch_users), d, dtype=torch.float64)] * hops, 0
    if dropout:
        lanes = [torch.randint(-32768, 32767, (len(batch_users), d), generator=generator, dtype=torch.int16)
                 for _ in range(hops)]
        threshold = -16384
        keeps = [(lane >= threshold).double() for lane in lanes]
    fused = user_side(user, items, pattern, values, latent, intents, lanes, threshold, 1e-12, self_connection)
    expected = reference_user_side(user, items, dense, values, latent, intents, keeps, self_connection)
    assert torch.allclose(fused, expected, atol=1e-12)

    def through_kernel(user, latent, intents, *items):
        return user_side(user, list(items), pattern, values, latent, intents, lanes, threshold, 1e-12, self_connection)

    assert torch.autograd.gradcheck(through_kernel, (user, latent, intents, *items))
    empty = user_side(user[:0], items, graph.prepare(keep, batch_users[:0])[0], values[:0], latent, intents,
                      [lane[:0] for lane in lanes], threshold, 1e-12, self_connection)
    assert empty.shape == (0, d)


@needs_kernel
def test_fused_user_side_takes_non_contiguous_tables():
    from recbole_kgin.model.fused import user_side
    from recbole_kgin.model.graph import InteractionGraph

    graph = InteractionGraph(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2]), 3, 3)
    wide = torch.randn(8, 4, requires_grad=True)
    latent, intents = wide[::4], wide[1::4]  # (2, 4) views with a row stride of 16
    assert not latent.is_contiguous() and not intents.is_contiguous()
    out = user_side(torch.randn(3, 4), [torch.randn(3, 4)], graph.pattern, graph.full_values, latent, intents,
                    [], 0, 1e-12, True)
    out.sum().backward()
    assert wide.grad is not None and torch.count_nonzero(wide.grad) > 0


@pytest.mark.parametrize("capability,suffix,flags", [
    ("AVX512", "_avx512", ["-mavx512f", "-mavx2", "-mfma"]),
    ("AVX2", "_avx2", ["-mavx2", "-mfma"]),
    ("DEFAULT", "", []),
])
def test_kernels_build_for_the_widest_vector_instructions_torch_reports(monkeypatch, tmp_path, capability, suffix,
                                                                         flags):
    import torch.utils.cpp_extension

    from recbole_kgin.model import kernel_build

    calls = []
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(torch.utils.cpp_extension, "load", lambda **kwargs: calls.append(kwargs) or "built")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(kernel_build, "_module", None)
    monkeypatch.setattr(kernel_build, "_failure", None)
    assert kernel_build.kernel() == "built"
    (call,) = calls
    assert call["name"] == kernel_build.EXTENSION_NAME + suffix
    for flag in flags:
        assert flag in call["extra_cflags"]
    if not flags:
        assert not any(flag.startswith("-mavx") or flag == "-mfma" for flag in call["extra_cflags"])
    others = {kernel_build._build_directory(other) for other in ("AVX512", "AVX2", "")}
    assert len(others) == 3 and call["build_directory"] == str(kernel_build._build_directory(capability if flags else ""))
