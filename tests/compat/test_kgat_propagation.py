"""RecBole's KGAT through the CSR propagation (recbole_kgin.compat.kgat_propagation) computes what
RecBole's own COO path computes: losses, gradients and scores."""

from __future__ import annotations

import pytest
import torch
from recbole.model.knowledge_aware_recommender.kgat import Aggregator
from recbole.utils import KGDataLoaderState

from conftest import TOY
from recbole_kgin.compat import kgat_propagation
from recbole_kgin.config import Config
from recbole_kgin.quick_start import build


def kgat(toy_root, aggregator):
    settings = {**TOY, "data_path": str(toy_root), "aggregator_type": aggregator, "mess_dropout": 0.3,
                "layers": [8, 8], "train_batch_size": 16}  # fmt: skip
    _, (train, _, _), model, _ = build(Config("KGAT", "toy", None, settings), saved=False)
    train.set_mode(KGDataLoaderState.RS)
    torch.manual_seed(1)
    for parameter in model.parameters():  # away from the initialisation
        torch.nn.init.normal_(parameter, std=0.3)
    return model, next(iter(train))


def loss_and_gradients(model, batch, forward):
    Aggregator.forward = forward
    try:
        torch.manual_seed(7)  # the same message-dropout masks on both paths
        model.zero_grad()
        loss = model.calculate_loss(batch)
        loss.backward()
        return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    finally:
        Aggregator.forward = kgat_propagation.aggregator_forward


def test_importing_the_package_routes_kgat_through_the_csr_path():
    assert Aggregator.forward is kgat_propagation.aggregator_forward
    assert kgat_propagation.RECBOLE_AGGREGATOR_FORWARD is not kgat_propagation.aggregator_forward


@pytest.mark.parametrize("aggregator", ["bi", "gcn", "graphsage"])
def test_loss_gradients_and_scores_match_recboles_path_before_and_after_the_attention_update(toy_root, aggregator):
    model, batch = kgat(toy_root, aggregator)
    model.train()
    for update in (False, True):
        if update:
            with torch.no_grad():
                model.update_attentive_A()  # a new A_in: its own CSR pair, never the old one's
        expected_loss, expected = loss_and_gradients(model, batch, kgat_propagation.RECBOLE_AGGREGATOR_FORWARD)
        loss, gradients = loss_and_gradients(model, batch, kgat_propagation.aggregator_forward)
        assert loss == pytest.approx(expected_loss.item(), abs=1e-6)
        assert gradients.keys() == expected.keys() and "user_embedding.weight" in gradients
        for name in expected:
            assert torch.allclose(gradients[name], expected[name], atol=1e-6), name
    model.eval()
    users = {model.USER_ID: torch.arange(1, 5)}
    from recbole.data.interaction import Interaction

    with torch.no_grad():
        Aggregator.forward = kgat_propagation.RECBOLE_AGGREGATOR_FORWARD
        model.restore_user_e = model.restore_entity_e = None
        expected_scores = model.full_sort_predict(Interaction(users))
        Aggregator.forward = kgat_propagation.aggregator_forward
        model.restore_user_e = model.restore_entity_e = None
        scores = model.full_sort_predict(Interaction(users))
    assert torch.allclose(scores, expected_scores, atol=1e-6)


def test_the_csr_pair_is_built_once_per_matrix_and_follows_a_new_one():
    torch.manual_seed(0)
    indices = torch.randint(0, 6, (2, 15))
    first = torch.sparse_coo_tensor(indices, torch.rand(15), (6, 6), check_invariants=False)
    dense = torch.randn(6, 3, requires_grad=True)
    out = kgat_propagation.propagate(first, dense)
    assert torch.allclose(out, torch.sparse.mm(first, dense.detach()), atol=1e-6)
    pair = kgat_propagation.csr_pair(first)
    assert kgat_propagation.csr_pair(first) is pair and pair[0].layout == torch.sparse_csr
    out.sum().backward()
    assert torch.allclose(dense.grad, first.to_dense().t() @ torch.ones(6, 3), atol=1e-6)  # A^T @ 1
    second = torch.sparse_coo_tensor(indices, torch.rand(15), (6, 6), check_invariants=False)
    assert torch.allclose(kgat_propagation.propagate(second, dense), torch.sparse.mm(second, dense.detach()), atol=1e-6)


def test_a_matrix_that_needs_gradients_keeps_torchs_path():
    values = torch.rand(4, requires_grad=True)
    matrix = torch.sparse_coo_tensor(torch.tensor([[0, 1, 2, 2], [1, 0, 2, 0]]), values, (3, 3), check_invariants=False)
    kgat_propagation.propagate(matrix, torch.randn(3, 2)).sum().backward()
    assert values.grad is not None


def test_every_model_keeps_freed_memory_on_cpu(toy_root, caplog, monkeypatch):
    calls = []
    monkeypatch.setattr("recbole_kgin.quick_start.keep_freed_memory_for_reuse", lambda: calls.append(1) or True)
    build(Config("BPR", "toy", None, {**TOY, "data_path": str(toy_root)}), saved=False)
    assert calls == [1]
    build(Config("BPR", "toy", None, {**TOY, "data_path": str(toy_root), "cpu_malloc_tuning": False}), saved=False)
    assert calls == [1]
