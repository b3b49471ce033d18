"""The model against a dense reference written from the equations (toy KG)."""

from __future__ import annotations

import itertools

import pytest
import torch
from recbole.data.interaction import Interaction

from conftest import TOY
from recbole_kgin.config import Config
from recbole_kgin.quick_start import build
from reference_kgin import ReferenceKGIN, is_close

SWITCHES = [
    dict(user_self_connection=s, intent_attention=a, independence_on=o)
    for s, a, o in itertools.product([True, False], ["latent", "intent"], ["logits", "intents"])
]


def toy_model(toy_root, **overrides):
    config = Config(
        "KGIN",
        "toy",
        config_dict={**TOY, "data_path": str(toy_root), "context_hops": 3, **overrides},
    )
    _, (train_data, _, _), model, _ = build(config, saved=False)
    return model.double(), train_data._dataset


def reference_for(model, dataset):
    config = model_config(model)
    params = {
        "user": model.user_embedding.detach().clone().requires_grad_(),
        "entity": model.entity_embedding.detach().clone().requires_grad_(),
        "relation": model.relation_embedding.detach().clone().requires_grad_(),
        "intent_logits": model.intent_logits.detach().clone().requires_grad_(),
        "intent_latent": model.intent_latent.detach().clone().requires_grad_(),
    }
    triples = list(zip(dataset.head_entities.tolist(), (dataset.relations - 1).tolist(), dataset.tail_entities.tolist()))
    inter = dataset.inter_matrix(form="coo")
    pairs = list(zip(inter.row.tolist(), inter.col.tolist()))
    keys = ["context_hops", "node_dropout_rate", "intent_attention", "user_self_connection",
            "independence_on", "ind", "temperature", "reg_weight", "sim_regularity"]
    return ReferenceKGIN(params, triples, pairs, model.n_items, {k: config[k] for k in keys})


@pytest.mark.parametrize("switches", SWITCHES, ids=lambda s: "-".join(str(v) for v in s.values()))
def test_propagation_and_scores_match_reference(toy_root, switches):
    model, dataset = toy_model(toy_root, **switches)
    reference = reference_for(model, dataset)
    model.eval()
    with torch.no_grad():
        users, items = model.forward()
    ref_users, ref_items = reference.propagate()
    assert is_close(users, ref_users.detach())
    assert is_close(items, ref_items.detach())

    batch = Interaction({"user_id": torch.arange(model.n_users)})
    scores = model.full_sort_predict(batch).view(model.n_users, model.n_items)
    assert is_close(scores, (ref_users @ ref_items.t()).detach())
    pairs = Interaction({"user_id": torch.tensor([1, 2, 3]), "item_id": torch.tensor([4, 5, 6])})
    expected = (ref_users[[1, 2, 3]] * ref_items[[4, 5, 6]]).sum(1).detach()
    assert is_close(model.predict(pairs), expected)


def model_config(model):
    return {
        "context_hops": model.context_hops,
        "node_dropout_rate": model.node_dropout_rate,
        "intent_attention": model.intent_attention,
        "user_self_connection": model.user_self_connection,
        "independence_on": model.independence_on,
        "ind": model.ind,
        "temperature": model.temperature,
        "reg_weight": model.reg_weight,
        "sim_regularity": model.sim_regularity,
    }


@pytest.mark.parametrize("relation_runs", ["looped", "vectorised"])
@pytest.mark.parametrize(
    "settings",
    [dict(ind=ind, **sw) for ind, sw in zip(["distance", "cosine", "mi", "distance"], SWITCHES[::2])],
    ids=lambda s: "-".join(str(v) for v in s.values()),
)
def test_loss_and_gradients_match_reference_under_node_dropout(toy_root, settings, relation_runs, monkeypatch):
    import recbole_kgin.model.graph as graph

    # the toy's relation runs are short (vectorised path); a threshold of 0 loops over them
    monkeypatch.setattr(graph, "RUN_LOOP_MIN_ROWS", 0 if relation_runs == "looped" else 10**9)
    model, dataset = toy_model(toy_root, mess_dropout_rate=0.0, node_dropout_rate=0.5, sim_regularity=0.1, **settings)
    assert model.kg.inner.by_run == (relation_runs == "looped")
    reference = reference_for(model, dataset)
    assert reference.triples == list(zip(model.kg.heads.tolist(), model.kg.relations.tolist(), model.kg.tails.tolist()))
    generator = torch.Generator().manual_seed(7)
    masks = {
        "kg": torch.rand(model.kg.n_edges, generator=generator) < 0.5,
        "inter": torch.rand(model.interactions.n_edges, generator=generator) < 0.5,
    }
    model.sample_masks = lambda: masks
    users = torch.tensor([0, 3, 3, 7, 11, 2])
    pos = torch.tensor([1, 2, 5, 9, 4, 12])
    neg = torch.tensor([3, 8, 8, 1, 12, 6])
    model.train()
    loss = sum(model.calculate_loss(Interaction({"user_id": users, "item_id": pos, "neg_item_id": neg})))
    loss.backward()

    pattern = model.interactions.pattern
    inter_pairs = list(zip(pattern.row.tolist(), pattern.col.tolist()))
    assert inter_pairs == reference.interactions
    kg_keep = dict(zip(reference.triples, masks["kg"].tolist()))
    inter_keep = dict(zip(reference.interactions, masks["inter"].tolist()))
    ref_loss = reference.loss(users, pos, neg, kg_keep, inter_keep)
    ref_loss.backward()
    assert is_close(loss.detach(), ref_loss.detach())
    grads = {
        "user": model.user_embedding.grad,
        "entity": model.entity_embedding.grad,
        "relation": model.relation_embedding.grad,
        "intent_logits": model.intent_logits.grad,
        "intent_latent": model.intent_latent.grad,
    }
    for name, grad in grads.items():
        ref_grad = reference.p[name].grad
        zeros = torch.zeros_like(reference.p[name])
        grad = zeros if grad is None else grad
        ref_grad = zeros if ref_grad is None else ref_grad
        assert is_close(grad, ref_grad), name
