"""KGCN's item-major full ranking (recbole_kgin.compat.kgcn_ranking) scores as RecBole's pairwise path does."""

from __future__ import annotations

import pytest
import torch
from recbole.data.interaction import Interaction
from recbole.model.knowledge_aware_recommender.kgcn import KGCN

from conftest import TOY
from recbole_kgin.compat import kgcn_ranking
from recbole_kgin.config import Config
from recbole_kgin.quick_start import build


def toy_kgcn(toy_root, model_name="KGCN", **settings):
    config = Config(model_name, "toy", config_dict={**TOY, "data_path": str(toy_root), **settings})
    model = build(config, saved=False)[2]
    for parameter in model.parameters():  # away from the initialisation, so that every term counts
        torch.nn.init.normal_(parameter, std=0.5)
    return model


def pairwise_scores(model, users: torch.Tensor) -> torch.Tensor:
    """RecBole's own path: KGCN.forward on every (user, item) pair, [B * I]."""
    items = torch.arange(model.n_items)
    pairs = Interaction({model.USER_ID: users.repeat_interleave(model.n_items), model.ITEM_ID: items.repeat(len(users))})
    return model.predict(pairs)


def ranked(model, users: torch.Tensor) -> torch.Tensor:
    return model.full_sort_predict(Interaction({model.USER_ID: users}))


USERS = torch.tensor([1, 5, 9])


def test_recbole_kgcn_and_kgnnls_rank_with_the_item_major_scores():
    from recbole.model.knowledge_aware_recommender.kgnnls import KGNNLS

    assert KGCN.full_sort_predict is kgcn_ranking.full_sort_predict
    assert KGNNLS.full_sort_predict is kgcn_ranking.full_sort_predict


@pytest.mark.parametrize("aggregator", ["sum", "neighbor", "concat"])
@pytest.mark.parametrize("n_iter, neighbor_sample_size", [(1, 4), (2, 3)])
def test_kgnnls_scores_equal_recboles_pairwise_scores(toy_root, aggregator, n_iter, neighbor_sample_size):
    model = toy_kgcn(toy_root, "KGNNLS", aggregator=aggregator, n_iter=n_iter, neighbor_sample_size=neighbor_sample_size)
    model.eval()
    with torch.no_grad():
        expected = pairwise_scores(model, USERS)
        scores = ranked(model, USERS)
    assert scores.shape == (len(USERS) * model.n_items,)
    assert expected.abs().max() > 1.0
    assert torch.allclose(scores, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("aggregator", ["sum", "neighbor", "concat"])
@pytest.mark.parametrize("n_iter, neighbor_sample_size", [(1, 4), (2, 2), (2, 3), (3, 2)])
def test_scores_equal_recboles_pairwise_scores(toy_root, aggregator, n_iter, neighbor_sample_size):
    model = toy_kgcn(toy_root, aggregator=aggregator, n_iter=n_iter, neighbor_sample_size=neighbor_sample_size)
    model.eval()
    with torch.no_grad():
        expected = pairwise_scores(model, USERS)
        scores = ranked(model, USERS)
    assert scores.shape == (len(USERS) * model.n_items,)
    assert expected.abs().max() > 1.0  # scores far from zero: a wrong term shows
    assert torch.allclose(scores, expected, rtol=1e-5, atol=1e-5)


def test_scores_follow_a_training_step_and_a_new_adjacency(toy_root):
    model = toy_kgcn(toy_root, aggregator="concat", n_iter=2, neighbor_sample_size=3)
    optimizer = torch.optim.SGD(model.parameters(), lr=5.0)
    with torch.no_grad():
        before = ranked(model, USERS)  # computes and keeps the item trees
    optimizer.zero_grad()
    batch = Interaction({model.USER_ID: USERS, model.ITEM_ID: torch.tensor([2, 3, 4]), model.NEG_ITEM_ID: torch.tensor([5, 6, 7])})
    model.calculate_loss(batch).backward()
    optimizer.step()  # moves the entity embeddings and the first layer in place
    with torch.no_grad():
        after_step = ranked(model, USERS)
        assert not torch.allclose(after_step, before, atol=1e-3)
        assert torch.allclose(after_step, pairwise_scores(model, USERS), rtol=1e-5, atol=1e-5)
        # a checkpoint load replaces the sampled adjacency (KGCN.other_parameter_name)
        model.load_other_parameter({"adj_entity": model.adj_entity.roll(1, dims=0), "adj_relation": model.adj_relation.roll(2, dims=0)})
        after_load = ranked(model, USERS)
        assert not torch.allclose(after_load, after_step, atol=1e-3)
        assert torch.allclose(after_load, pairwise_scores(model, USERS), rtol=1e-5, atol=1e-5)


def test_scores_under_autograd_keep_no_graph_between_calls(toy_root):
    model = toy_kgcn(toy_root, aggregator="sum", n_iter=2, neighbor_sample_size=2)
    for _ in range(2):  # a graph kept from the first call would fail the second backward
        ranked(model, USERS).sum().backward()
    assert model.entity_embedding.weight.grad.abs().sum() > 0


def test_an_unknown_aggregator_is_named(toy_root):
    model = toy_kgcn(toy_root)
    model.aggregator_class = "max"
    with pytest.raises(ValueError, match="unknown aggregator 'max'"):
        ranked(model, USERS)


def test_the_benchmark_prints_both_paths_and_their_agreement(toy_root, capsys):
    from recbole_kgin.bench.kgcn_ranking import main

    main(["--dataset", "toy", "--data_path", str(toy_root), "--users", "3", "--shapes", "concat,2,2;sum,1,3"])
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert [row[:3] for row in rows] == [["concat", "2", "2"], ["sum", "1", "3"]]
    for row in rows:
        assert float(row[3]) > 0 and float(row[4]) > 0 and row[5].endswith("x")
        assert float(row[6]) < 1e-5  # the two paths agree
