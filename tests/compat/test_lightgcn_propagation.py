"""RecBole's LightGCN through the CSR propagation (recbole_kgin.compat.lightgcn_propagation)
computes what RecBole's own COO path computes: losses, gradients and scores."""

from __future__ import annotations

import pytest
import torch
from recbole.data.interaction import Interaction
from recbole.model.general_recommender.lightgcn import LightGCN

from conftest import TOY
from recbole_kgin.compat import lightgcn_propagation
from recbole_kgin.config import Config
from recbole_kgin.quick_start import build


def lightgcn(toy_root, layers):
    settings = {**TOY, "data_path": str(toy_root), "n_layers": layers, "train_batch_size": 16}
    _, (train, _, _), model, _ = build(Config("LightGCN", "toy", None, settings), saved=False)
    torch.manual_seed(1)
    for parameter in model.parameters():  # away from the initialisation
        torch.nn.init.normal_(parameter, std=0.3)
    return model, next(iter(train))


def loss_and_gradients(model, batch, forward):
    LightGCN.forward = forward
    try:
        model.zero_grad()
        loss = model.calculate_loss(batch)
        loss.backward()
        return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    finally:
        LightGCN.forward = lightgcn_propagation.lightgcn_forward


def test_importing_the_package_routes_lightgcn_through_the_csr_path():
    assert LightGCN.forward is lightgcn_propagation.lightgcn_forward
    assert lightgcn_propagation.RECBOLE_LIGHTGCN_FORWARD is not lightgcn_propagation.lightgcn_forward


@pytest.mark.parametrize("layers", [1, 3])
def test_loss_gradients_and_scores_match_recboles_path(toy_root, layers):
    model, batch = lightgcn(toy_root, layers)
    model.train()
    expected_loss, expected = loss_and_gradients(model, batch, lightgcn_propagation.RECBOLE_LIGHTGCN_FORWARD)
    loss, gradients = loss_and_gradients(model, batch, lightgcn_propagation.lightgcn_forward)
    assert loss == pytest.approx(expected_loss.item(), abs=1e-6)
    assert set(gradients) == set(expected) == {"user_embedding.weight", "item_embedding.weight"}
    for name in expected:
        assert torch.allclose(gradients[name], expected[name], atol=1e-6), name
        assert expected[name].abs().sum() > 0  # the gradients compared are not all zero
    model.eval()
    users = Interaction({model.USER_ID: torch.arange(1, 5)})
    with torch.no_grad():
        LightGCN.forward = lightgcn_propagation.RECBOLE_LIGHTGCN_FORWARD
        model.restore_user_e = model.restore_item_e = None
        expected_scores = model.full_sort_predict(users)
        LightGCN.forward = lightgcn_propagation.lightgcn_forward
        model.restore_user_e = model.restore_item_e = None
        scores = model.full_sort_predict(users)
    assert torch.allclose(scores, expected_scores, atol=1e-6)
    # one CSR copy of the adjacency, made once and kept
    from recbole_kgin.compat.sparse_product import csr_pair

    assert csr_pair(model.norm_adj_matrix) is csr_pair(model.norm_adj_matrix)


def test_the_benchmark_times_both_paths_and_finds_them_equal(toy_root, capsys):
    from recbole_kgin.bench.lightgcn import main

    threads = torch.get_num_threads()
    try:
        lines = main(["--dataset", "toy", "--data_path", str(toy_root), "--batches", "1", "--rounds", "1"])
    finally:
        torch.set_num_threads(threads)
    assert capsys.readouterr().out.splitlines()[-3:] == lines[-3:]
    assert lines[0].startswith("# python -m recbole_kgin.bench.lightgcn --dataset toy") and lines[1].startswith("# measured ")
    assert lines[2].startswith("LightGCN on toy: ") and "2 layers, batch 2048, 1 thread(s)" in lines[2]
    assert lines[3].startswith("RecBole (COO): ") and "speed-up" in lines[3]
    assert float(lines[4].rsplit(": ", 1)[1]) < 1e-5
    assert LightGCN.forward is lightgcn_propagation.lightgcn_forward  # put back
