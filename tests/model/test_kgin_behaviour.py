"""KGIN's dropout in the model, determinism in evaluation, and learning on real data
(the dropout operators themselves: tests/model/test_dropout.py)."""

from __future__ import annotations

import math

import pytest
import torch
from recbole.data.interaction import Interaction

from conftest import FAST, TOY, shared_dataset
from recbole_kgin.config import Config
from recbole_kgin.quick_start import build, run_recbole_kgin


def toy(toy_root, **overrides):
    config = Config("KGIN", "toy", config_dict={**TOY, "data_path": str(toy_root), **overrides})
    _, loaders, model, trainer = build(config, saved=False)
    return model, loaders, trainer


def test_the_model_logs_its_graph_sizes_and_shape(toy_root):
    model, (train_data, _, _), _ = toy(toy_root, n_factors=3, context_hops=2, ind="cosine")
    dataset = train_data.dataset
    kg = dataset.kg_feat
    triples = set(zip(kg["head_id"].tolist(), kg["relation_id"].tolist(), kg["tail_id"].tolist()))  # duplicates once
    text = str(model)  # what RecBole's quick start logs
    assert text.startswith(
        f"KGIN(users={dataset.user_num}, entities={dataset.entity_num} (items={dataset.item_num}), "
        f"kg_relations={dataset.relation_num - 2}, kg_triples={len(triples)}, "
        f"interactions={len(dataset.inter_feat)}, intents=3, d=64, hops=2, ind=cosine, fused_kernel="
    )
    assert "Trainable parameters" in text


def test_full_sort_predict_is_deterministic_in_eval_mode(toy_root):
    model, _, _ = toy(toy_root, node_dropout_rate=0.5, mess_dropout_rate=0.3)
    model.eval()
    users = Interaction({"user_id": torch.arange(1, model.n_users)})
    first = model.full_sort_predict(users).clone()
    model._eval_cache = None  # recompute from scratch, not from the cache
    second = model.full_sort_predict(users)
    assert torch.equal(first, second)


def test_training_forward_samples_new_dropout_each_batch(toy_root):
    model, _, _ = toy(toy_root, node_dropout_rate=0.5, mess_dropout_rate=0.3)
    model.train()
    first, _ = model.forward()
    second, _ = model.forward()
    assert not torch.allclose(first, second)


def test_eval_after_training_step_sees_the_new_weights(toy_root):
    model, (train_data, _, _), trainer = toy(toy_root)
    model.eval()
    users = Interaction({"user_id": torch.arange(1, model.n_users)})
    before = model.full_sort_predict(users).clone()
    trainer._train_epoch(train_data, 0)
    model.eval()
    assert not torch.allclose(before, model.full_sort_predict(users))


def test_a_loss_computed_in_eval_mode_clears_the_score_cache(toy_root):
    """calculate_loss clears the evaluation cache itself: a step taken without
    switching modes (fine-tuning in eval mode) must not leave stale scores."""
    model, _, _ = toy(toy_root)
    model.eval()
    users = Interaction({"user_id": torch.arange(1, model.n_users)})
    before = model.full_sort_predict(users).clone()
    batch = Interaction({"user_id": torch.tensor([1, 2]), "item_id": torch.tensor([1, 2]), "neg_item_id": torch.tensor([3, 4])})
    sum(model.calculate_loss(batch)).backward()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter -= 0.5 * parameter.grad
    after = model.full_sort_predict(users)
    model._eval_cache = None
    assert not torch.allclose(before, after) and torch.equal(after, model.full_sort_predict(users))


def test_initialisation_follows_the_authors(toy_root):
    """Users and entities are drawn as one Xavier-uniform (U + N, d) table, as the
    authors draw ``all_embed``: U(-b, b) with b = sqrt(6 / (U + N + d))."""
    model, _, _ = toy(toy_root)
    bound = math.sqrt(6.0 / (model.n_users + model.n_entities + model.embedding_size))
    for table in (model.user_embedding, model.entity_embedding):
        values = table.detach()
        assert values.abs().max() <= bound
        assert values.max() > 0.9 * bound and values.min() < -0.9 * bound
        assert abs(values.mean()) < 0.1 * bound


def test_no_node_dropout_samples_no_masks(toy_root):
    model, _, _ = toy(toy_root, node_dropout_rate=0.0)
    model.sample_masks = lambda: pytest.fail("masks sampled at node_dropout_rate 0")
    model.train()
    model.forward()


def test_node_dropout_rate_is_the_share_dropped(toy_root):
    """The plugin's reading: rate 0.3 keeps 70% of KG edges and interactions (the
    authors' code and RecBole's KGIN would keep 30% of the KG edges)."""
    model, _, _ = toy(toy_root, node_dropout_rate=0.3)
    torch.manual_seed(1)
    kg = torch.stack([model.sample_masks()["kg"] for _ in range(2000)]).float().mean().item()
    inter = torch.stack([model.sample_masks()["inter"] for _ in range(2000)]).float().mean().item()
    n_kg = 2000 * model.kg.n_edges
    n_inter = 2000 * model.interactions.n_edges
    assert abs(kg - 0.7) < 5 * math.sqrt(0.21 / n_kg)
    assert abs(inter - 0.7) < 5 * math.sqrt(0.21 / n_inter)


@pytest.mark.parametrize("fused", [False, True])
def test_node_dropout_masks_come_from_the_generator_of_the_models_path(toy_root, fused):
    """With the fused kernels both masks take the kernels' lanes, else torch's."""
    from recbole_kgin.model.dropout import keep_mask

    model, _, _ = toy(toy_root, node_dropout_rate=0.3, fused_kernel=fused)
    if fused and not model.kg.fused:
        pytest.skip("the fused kernels could not be built here")
    torch.manual_seed(4)
    masks = model.sample_masks()
    torch.manual_seed(4)
    kg = keep_mask(model.kg.n_edges, 0.3, model.device, fused)
    inter = keep_mask(model.interactions.n_edges, 0.3, model.device, fused)
    assert torch.equal(masks["kg"], kg) and torch.equal(masks["inter"], inter)


@pytest.mark.parametrize("mess_dropout_rate,self_connection", [(0.3, True), (0.0, True), (0.5, False)])
def test_fused_user_side_equals_the_hop_by_hop_path(toy_root, mess_dropout_rate, self_connection):
    """The user side of all hops in one kernel pass gives the hop-by-hop path's losses,
    gradients and scores from the same seed (its dropout lanes are drawn in the same
    order)."""
    model, (train_data, _, _), _ = toy(toy_root, node_dropout_rate=0.4, mess_dropout_rate=mess_dropout_rate,
                                       user_self_connection=self_connection, context_hops=3, ind="distance")
    if not model.kg.fused:
        pytest.skip("the fused kernels could not be built here")
    assert model.fused_user_side
    from recbole.utils import KGDataLoaderState

    train_data.set_mode(KGDataLoaderState.RS)
    batch = next(iter(train_data))
    results = []
    for fused_users in (True, False):
        model.fused_user_side = fused_users
        model.train()
        model.zero_grad()
        torch.manual_seed(9)
        losses = model.calculate_loss(batch)
        next_draw = torch.rand(1)  # both paths take as many draws from the generator
        sum(losses).backward()
        grads = [parameter.grad.clone() for parameter in model.parameters()]
        model.eval()
        scores = model.full_sort_predict(Interaction({"user_id": torch.arange(1, model.n_users)}))
        results.append((torch.stack(losses).detach(), grads, scores.detach(), next_draw))
    (fused_losses, fused_grads, fused_scores, fused_next), (losses, grads, scores, next_draw) = results
    assert torch.equal(fused_next, next_draw)
    assert torch.allclose(fused_losses, losses, rtol=1e-5, atol=1e-7)
    for fused_grad, grad in zip(fused_grads, grads):
        assert torch.count_nonzero(grad) > 0
        assert torch.allclose(fused_grad, grad, rtol=1e-4, atol=1e-7)
    assert torch.allclose(fused_scores, scores, rtol=1e-5, atol=1e-6)


def test_fused_user_side_gives_the_same_sums_at_any_thread_count(toy_root):
    from recbole_kgin.model import fused

    model, _, _ = toy(toy_root, context_hops=2)
    if not model.kg.fused:
        pytest.skip("the fused kernels could not be built here")
    model.train()
    generator = torch.Generator().manual_seed(5)
    n_users, d = 3000, 64  # enough rows for several chunks
    user = torch.randn(n_users, d, generator=generator, requires_grad=True)
    items = [torch.randn(model.n_items, d, generator=generator, requires_grad=True) for _ in range(2)]
    rows = torch.randint(0, n_users, (20000,), generator=generator)
    cols = torch.randint(0, model.n_items, (20000,), generator=generator)
    from recbole_kgin.model.graph import InteractionGraph

    graph = InteractionGraph(rows.numpy(), cols.numpy(), n_users, model.n_items)
    lanes = [torch.randint(-32768, 32767, (n_users, d), dtype=torch.int16, generator=generator) for _ in range(2)]
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            out = fused.user_side(user, items, graph.pattern, graph.full_values, model.intent_latent,
                                  model.intent_embeddings(), lanes, -6554, 1e-12, True)
            grads = torch.autograd.grad(out.pow(2).sum(), [user, model.intent_latent, model.intent_logits, *items])
            results.append((out.detach(), *grads))
    finally:
        torch.set_num_threads(before)
    for single, many in zip(*results):
        assert torch.equal(single, many)  # bit for bit: chunks do not follow the thread count


@pytest.mark.parametrize("overrides", [dict(intent_attention="intent"), dict(fused_kernel=False)])
def test_the_fused_user_side_needs_latent_attention_and_the_kernels(toy_root, overrides):
    model, _, _ = toy(toy_root, **overrides)
    assert not model.fused_user_side
    latent, _, _ = toy(toy_root)
    assert latent.fused_user_side == latent.kg.fused


def test_no_dropout_in_eval_all_edges_are_used(toy_root):
    model, _, _ = toy(toy_root, node_dropout_rate=0.5, mess_dropout_rate=0.5)
    model.eval()
    with torch.no_grad():
        users, items = model.forward()
    model.node_dropout_rate = 0.0
    model.mess_dropout_rate = 0.0
    model.train()
    with torch.no_grad():
        users_no_dropout, items_no_dropout = model.forward()
    assert torch.allclose(users, users_no_dropout) and torch.allclose(items, items_no_dropout)


@pytest.mark.slow
def test_training_on_lastfm_lowers_the_loss_and_beats_a_random_scorer():
    data_path = shared_dataset("lastfm")
    settings = {**FAST, "data_path": str(data_path), "epochs": 4, "learning_rate": 1e-3, "stopping_step": 100}
    config = Config("KGIN", "lastfm", config_dict=settings)
    _, (train_data, _, test_data), _, trainer = build(config, saved=False)
    losses = [sum(trainer._train_epoch(train_data, epoch)) for epoch in range(4)]
    assert losses[-1] < losses[0]
    kgin = trainer.evaluate(test_data, load_best_model=False)
    random = run_recbole_kgin("Random", "lastfm", config_dict=settings, saved=False)["test_result"]
    assert kgin["recall@20"] > 2 * random["recall@20"]
    assert kgin["ndcg@20"] > 2 * random["ndcg@20"]


def test_recboles_kgin_without_torch_scatter_is_refused_in_one_line(toy_root, monkeypatch):
    import importlib.util

    from recbole_kgin.common.errors import UserInputError
    from recbole_kgin.model import RecBoleKGIN

    config = Config("RecBoleKGIN", "toy", config_dict={**TOY, "data_path": str(toy_root)})
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch_scatter" else find_spec(name, *a))
    from recbole.data import create_dataset

    with pytest.raises(UserInputError) as error:
        RecBoleKGIN(config, create_dataset(config))
    assert str(error.value) == (
        "model RecBoleKGIN (RecBole's built-in KGIN) needs torch-scatter: "
        "pip install --no-build-isolation torch-scatter, or use --model=KGIN"
    )
