"""The model against a dense reference written from the equations (toy KG).

The reference reads the toy's atomic files itself (tests/reference_kgin.py); the model
runs through RecBole's pipeline. Parameters are handed over and compared row by row
through the files' tokens: the model's tables must hold exactly the rows the files
imply (users and entities plus RecBole's [PAD] row, 2R relations), in RecBole's id
order. Every combination of the three switches is compared under training, with node
dropout at rates other than 0.5 and message dropout on (the same fixed masks on both
sides), on the loss and on every parameter's gradient, through both relation-product
paths; and in evaluation on the propagated vectors and the scores.
"""

from __future__ import annotations

import itertools
from typing import Dict, List

import pytest
import torch
from recbole.data.interaction import Interaction
from recbole.utils import init_seed

import recbole_kgin.model.dropout as dropout
import recbole_kgin.model.graph as graph_module
from conftest import TOY
from recbole_kgin.config import Config
from recbole_kgin.model import KGIN
from recbole_kgin.model.fused import kernel
from recbole_kgin.quick_start import prepare_data
from reference_kgin import ReferenceGraph, ReferenceKGIN, is_close
from toy_data import write_toy_split

NAME = "toysplit"
SWITCHES = [
    dict(user_self_connection=s, intent_attention=a, independence_on=o)
    for s, a, o in itertools.product([True, False], ["latent", "intent"], ["logits", "intents"])
]
INDEPENDENCE = ["distance", "cosine", "mi"]
CONFIG_KEYS = ["context_hops", "node_dropout_rate", "mess_dropout_rate", "intent_attention", "user_self_connection",
               "independence_on", "ind", "temperature", "reg_weight", "sim_regularity"]
PARAMETERS = ["user", "entity", "relation", "intent_logits", "intent_latent"]


@pytest.fixture(scope="module")
def toy_split(tmp_path_factory):
    """(data root, RecBole's training dataset, the reference's reading of the files)."""
    root = tmp_path_factory.mktemp("reference")
    write_toy_split(root / NAME)
    dataset, (train_data, _, _) = prepare_data(toy_config(root))
    return root, train_data._dataset, ReferenceGraph(root / NAME, NAME, "train")


def toy_config(root, **overrides) -> Config:
    settings = {**TOY, "data_path": str(root), "benchmark_filename": ["train", "valid", "test"], "context_hops": 3}
    return Config("KGIN", NAME, config_dict={**settings, **overrides})


class Aligned:
    """The model and the reference on one toy graph, their rows matched by token."""

    def __init__(self, toy_split, **overrides) -> None:
        root, dataset, graph = toy_split
        config = toy_config(root, **overrides)
        init_seed(config["seed"], config["reproducibility"])
        self.model = KGIN(config, dataset).double()
        self.dataset, self.graph = dataset, graph
        ids = dataset.field2token_id
        self.user_rows = [ids["user_id"][token] for token in graph.users]
        self.entity_rows = [ids["entity_id"][token] for token in graph.entities]
        self.item_rows = [ids["item_id"][token] for token in graph.items]
        # the model's relation table: RecBole's relation ids without [PAD] (id 0)
        self.relation_rows = [ids["relation_id"][token] - 1 for token in graph.relations]
        m = self.model
        assert m.user_embedding.shape[0] == len(graph.users) + 1  # + RecBole's [PAD] row
        assert m.entity_embedding.shape[0] == len(graph.entities) + 1
        assert m.relation_embedding.shape[0] == len(graph.relations) == m.intent_logits.shape[1]
        assert sorted(self.relation_rows) == list(range(len(graph.relations)))
        params = {
            "user": m.user_embedding[self.user_rows],
            "entity": m.entity_embedding[self.entity_rows],
            "relation": m.relation_embedding[self.relation_rows],
            "intent_logits": m.intent_logits[:, self.relation_rows],
            "intent_latent": m.intent_latent,
        }
        params = {name: value.detach().clone().requires_grad_() for name, value in params.items()}
        self.reference = ReferenceKGIN(params, graph, {key: config[key] for key in CONFIG_KEYS})

    def tokens(self, field: str, ids: torch.Tensor) -> List[str]:
        return [str(self.dataset.field2id_token[field][i]) for i in ids.tolist()]

    def model_gradients_in_reference_order(self) -> Dict[str, torch.Tensor]:
        m = self.model

        def grad(parameter, rows=None, columns=None):
            g = torch.zeros_like(parameter) if parameter.grad is None else parameter.grad
            if rows is not None:
                pad = [r for r in range(g.shape[0]) if r not in rows]
                assert torch.count_nonzero(g[pad]) == 0  # RecBole's [PAD] rows get nothing
                return g[rows]
            return g[:, columns] if columns is not None else g

        return {
            "user": grad(m.user_embedding, self.user_rows),
            "entity": grad(m.entity_embedding, self.entity_rows),
            "relation": grad(m.relation_embedding)[self.relation_rows],
            "intent_logits": grad(m.intent_logits, columns=self.relation_rows),
            "intent_latent": grad(m.intent_latent),
        }


@pytest.mark.parametrize("switches", SWITCHES, ids=lambda s: "-".join(str(v) for v in s.values()))
def test_propagation_and_scores_match_reference(toy_split, switches):
    aligned = Aligned(toy_split, **switches)
    model, reference = aligned.model, aligned.reference
    model.eval()
    with torch.no_grad():
        users, items = model.forward()
    ref_users, ref_items = reference.propagate()
    assert is_close(users[aligned.user_rows], ref_users.detach())
    assert is_close(items[aligned.item_rows], ref_items.detach())

    batch = Interaction({"user_id": torch.tensor(aligned.user_rows)})
    scores = model.full_sort_predict(batch).view(len(aligned.user_rows), model.n_items)[:, aligned.item_rows]
    assert is_close(scores, (ref_users @ ref_items.t()).detach())
    pairs = Interaction({"user_id": torch.tensor(aligned.user_rows[1:4]), "item_id": torch.tensor(aligned.item_rows[4:7])})
    expected = (ref_users[1:4] * ref_items[4:7]).sum(1).detach()
    assert is_close(model.predict(pairs), expected)


class FixedMessageMasks:
    """Stands in for :func:`random_lanes` inside message dropout: hands out lanes
    (kept: 32767, dropped: -32768) cut from fixed per-row masks (entity rows, user
    rows) in the model's call order: per hop, the entities' output (items only at the
    last hop), then the batch's users."""

    def __init__(self, aligned: Aligned, hops: int, rate: float, batch_users: torch.Tensor, seed: int = 11) -> None:
        generator = torch.Generator().manual_seed(seed)
        m, d = aligned.model, aligned.model.embedding_size
        self.entity = [torch.rand(m.n_entities, d, generator=generator) >= rate for _ in range(hops)]
        self.user = [torch.rand(m.n_users, d, generator=generator) >= rate for _ in range(hops)]
        self.batch_users, self.n_items, self.hops = batch_users, m.n_items, hops
        self.calls: List[tuple] = []

    def __call__(self, shape, device, fused=False):
        hop, is_user = divmod(len(self.calls), 2)
        self.calls.append(tuple(shape))
        if is_user:
            mask = self.user[hop][self.batch_users]
        else:
            mask = self.entity[hop][: self.n_items if hop == self.hops - 1 else self.entity[hop].shape[0]]
        return torch.where(mask, 32767, -32768).to(torch.int16)

    def for_reference(self, aligned: Aligned) -> List[tuple]:
        g = aligned.graph
        return [
            (
                {token: self.entity[hop][row] for token, row in zip(g.entities, aligned.entity_rows)},
                {token: self.user[hop][row] for token, row in zip(g.users, aligned.user_rows)},
            )
            for hop in range(self.hops)
        ]


TRAINING_CASES = [
    dict(ind=INDEPENDENCE[index % 3], node_dropout_rate=rate, relation_runs=runs, **switches)
    for index, (switches, rate, runs) in enumerate(
        (sw, rate, ("looped", "vectorised", "fused")[(i // 2) % 3])
        for i, (sw, rate) in enumerate(itertools.product(SWITCHES, [0.2, 0.7]))
    )
]


@pytest.mark.parametrize("mess_dropout_rate", [0.3])
@pytest.mark.parametrize("case", TRAINING_CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_loss_and_gradients_match_reference_under_dropout(toy_split, case, mess_dropout_rate, monkeypatch):
    case = dict(case)
    path = case.pop("relation_runs")
    if path == "fused" and kernel() is None:
        pytest.skip("the fused kernels could not be built here")
    # torch path: the toy's relation runs are short (vectorised); a threshold of 0 loops over them
    monkeypatch.setattr(graph_module, "RUN_LOOP_MIN_ROWS", 0 if path == "looped" else 10**9)
    check_training_step(toy_split, monkeypatch, mess_dropout_rate=mess_dropout_rate, sim_regularity=0.1,
                        fused_kernel=path == "fused", **case)


def test_loss_and_gradients_match_reference_without_dropout(toy_split, monkeypatch):
    check_training_step(toy_split, monkeypatch, node_dropout_rate=0.0, mess_dropout_rate=0.0, sim_regularity=0.1,
                        ind="distance", context_hops=2)


def check_training_step(toy_split, monkeypatch, **overrides):
    aligned = Aligned(toy_split, **overrides)
    model, reference, graph = aligned.model, aligned.reference, aligned.graph
    rate, mess_rate = overrides["node_dropout_rate"], overrides["mess_dropout_rate"]
    assert model.kg.fused == (overrides.get("fused_kernel", True) and kernel() is not None)
    if not model.kg.fused:
        assert model.kg.inner.by_run == (graph_module.RUN_LOOP_MIN_ROWS == 0)

    generator = torch.Generator().manual_seed(7)
    kg_keep = {triple: bool(torch.rand(1, generator=generator) >= rate) for triple in graph.triples}
    inter_keep = {pair: bool(torch.rand(1, generator=generator) >= rate) for pair in graph.interactions}
    kg = model.kg
    model_triples = zip(aligned.tokens("entity_id", kg.heads), aligned.tokens("relation_id", kg.relations + 1),
                        aligned.tokens("entity_id", kg.tails))
    pattern = model.interactions.pattern
    model_pairs = zip(aligned.tokens("user_id", pattern.row), aligned.tokens("item_id", pattern.col))
    masks = {"kg": torch.tensor([kg_keep[t] for t in model_triples]), "inter": torch.tensor([inter_keep[p] for p in model_pairs])}
    assert masks["kg"].numel() == len(graph.triples) and masks["inter"].numel() == len(graph.interactions)
    model.sample_masks = lambda: masks

    user_tokens = [graph.users[i] for i in (0, 3, 3, 7, 11, 2)]
    pos_tokens = [graph.items[i] for i in (1, 2, 5, 9, 4, 11)]
    neg_tokens = [graph.items[i] for i in (3, 8, 8, 1, 11, 6)]
    ids = aligned.dataset.field2token_id
    users = torch.tensor([ids["user_id"][t] for t in user_tokens])
    pos = torch.tensor([ids["item_id"][t] for t in pos_tokens])
    neg = torch.tensor([ids["item_id"][t] for t in neg_tokens])
    message_masks = FixedMessageMasks(aligned, model.context_hops, mess_rate, torch.unique(users))
    if mess_rate > 0:
        monkeypatch.setattr(dropout, "random_lanes", message_masks)

    model.train()
    loss = sum(model.calculate_loss(Interaction({"user_id": users, "item_id": pos, "neg_item_id": neg})))
    loss.backward()
    if mess_rate > 0:
        assert len(message_masks.calls) == 2 * model.context_hops
    ref_loss = reference.loss(user_tokens, pos_tokens, neg_tokens,
                              kg_keep if rate > 0 else None, inter_keep if rate > 0 else None,
                              message_masks.for_reference(aligned) if mess_rate > 0 else None)
    ref_loss.backward()
    assert is_close(loss.detach(), ref_loss.detach())
    gradients = aligned.model_gradients_in_reference_order()
    for name in PARAMETERS:
        ref_grad = reference.p[name].grad
        ref_grad = torch.zeros_like(reference.p[name]) if ref_grad is None else ref_grad
        assert is_close(gradients[name], ref_grad), name
        assert torch.count_nonzero(ref_grad) > 0 or name == "intent_latent", name  # the check is not vacuous
