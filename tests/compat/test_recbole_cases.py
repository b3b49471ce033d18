"""RecBole 1.2.1's own knowledge-aware model tests, run through this plugin as a client.

RecBole's tests/model/test_model_auto.py (class TestKnowledgeRecommender) trains each
model for one epoch on its test data with tests/model/test_model.yaml. The same cases
run here through :func:`recbole_kgin.quick_start.run_recbole_kgin` and the CLI, on
RecBole's test data rebuilt from the recbole wheel (:mod:`recbole_test_data`), with
RecBole's settings below (those of test_model.yaml that are not RecBole's defaults).

Our KGIN runs with RecBole's KGIN settings (recbole/properties/model/KGIN.yaml, v1.2.1)
and with each of its settings and switches varied, as a RecBole user would; and under
the evaluation settings that crash or hang RecBole 1.2.1 alone (they pass here, or stop
before training with one line where no answer exists).
"""

from __future__ import annotations

import importlib.util
import math

import pytest
import yaml

from recbole_kgin.cli import main
from recbole_kgin.common.errors import UserInputError
from recbole_kgin.quick_start import run_recbole_kgin
from recbole_test_data import write_recbole_test_dataset

pytestmark = pytest.mark.slow

# tests/model/test_model.yaml at RecBole v1.2.1, less the keys equal to RecBole's defaults.
RECBOLE_TEST_SETTINGS = {
    "epochs": 1,
    "state": "ERROR",
    "seq_len": None,
    "load_col": {
        "inter": ["user_id", "item_id", "rating", "timestamp"],
        "user": ["user_id", "age", "gender", "occupation"],
        "item": ["item_id", "movie_title", "release_year", "class"],
        "link": ["item_id", "entity_id"],
        "kg": ["head_id", "relation_id", "tail_id"],
    },
    "unload_col": None,
    "normalize_all": True,
    "show_progress": False,
}
# recbole/properties/model/KGIN.yaml at v1.2.1 (our keys are RecBole's names).
RECBOLE_KGIN_SETTINGS = {
    "embedding_size": 64,
    "reg_weight": 1e-5,
    "node_dropout_rate": 0.5,
    "mess_dropout_rate": 0.0,
    "sim_regularity": 1e-4,
    "context_hops": 2,
    "n_factors": 4,
    "ind": "cosine",
    "temperature": 0.2,
}
# TestKnowledgeRecommender's cases for the models the plugin compares against.
RECBOLE_CASES = {
    "test_cke": {"model": "CKE"},
    "test_kgat": {"model": "KGAT"},
    "test_kgat_with_gcn": {"model": "KGAT", "aggregator_type": "gcn"},
    "test_kgat_with_graphsage": {"model": "KGAT", "aggregator_type": "graphsage"},
    "test_kgcn": {"model": "KGCN"},
    "test_kgcn_with_neighbor": {"model": "KGCN", "aggregator": "neighbor"},
    "test_kgcn_with_concat": {"model": "KGCN", "aggregator": "concat"},
    "test_kgin": {"model": "KGIN"},
}
KGIN_VARIATIONS = {
    "recbole-settings": {},
    "ind-distance": {"ind": "distance"},
    "ind-mi": {"ind": "mi"},
    "one-hop": {"context_hops": 1},
    "three-hops": {"context_hops": 3},
    "one-intent": {"n_factors": 1},
    "eight-intents": {"n_factors": 8},
    "no-node-dropout": {"node_dropout_rate": 0.0},
    "node-dropout-0.9": {"node_dropout_rate": 0.9},
    "message-dropout": {"mess_dropout_rate": 0.1},
    "no-independence": {"sim_regularity": 0.0},
    "paper-user-update": {"user_self_connection": False},
    "paper-intent-attention": {"intent_attention": "intent"},
    "independence-on-intents": {"independence_on": "intents"},
    "no-inverse-relations": {"kg_reverse_r": False},
    "uni100-evaluation": {"eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "mode": "uni100"}},
    "topk-5-10": {"topk": [5, 10], "valid_metric": "NDCG@10"},
    "data-metrics": {"metrics": ["Recall", "NDCG", "ItemCoverage", "AveragePopularity", "GiniIndex",
                                 "TailPercentage", "ShannonEntropy"]},
}
DATA_METRICS = ["itemcoverage", "averagepopularity", "giniindex", "tailpercentage", "shannonentropy"]


@pytest.fixture(scope="module")
def recbole_data(tmp_path_factory):
    return write_recbole_test_dataset(tmp_path_factory.mktemp("recbole_test_data"))


def run_case(data_root, settings):
    settings = {**RECBOLE_TEST_SETTINGS, **settings, "data_path": str(data_root)}
    model = settings.pop("model", "KGIN")
    return run_recbole_kgin(model, "test", config_dict=settings, saved=False)


def assert_sane(result):
    test = result["test_result"]
    assert test and all(math.isfinite(v) for v in test.values())
    assert all(0.0 <= v <= 1.0 for k, v in test.items() if k.split("@")[0] in ("recall", "ndcg", "hit", "precision"))
    return test


@pytest.mark.parametrize("case", list(RECBOLE_CASES), ids=list(RECBOLE_CASES))
def test_recbole_knowledge_cases(recbole_data, case):
    settings = dict(RECBOLE_CASES[case])
    if settings["model"] == "KGIN":
        settings.update(RECBOLE_KGIN_SETTINGS)
    assert_sane(run_case(recbole_data, settings))


@pytest.mark.skipif(importlib.util.find_spec("torch_scatter") is None, reason="RecBole's KGIN needs torch-scatter")
def test_recbole_kgin_case_with_recboles_own_model(recbole_data):
    assert_sane(run_case(recbole_data, {"model": "RecBoleKGIN"}))


@pytest.mark.parametrize("variation", list(KGIN_VARIATIONS), ids=list(KGIN_VARIATIONS))
def test_kgin_under_recbole_settings_and_their_variations(recbole_data, variation):
    test = assert_sane(run_case(recbole_data, {**RECBOLE_KGIN_SETTINGS, **KGIN_VARIATIONS[variation]}))
    if variation == "data-metrics":
        for name in DATA_METRICS:
            assert f"{name}@20" in test
        assert 0.0 < test["itemcoverage@10"] <= test["itemcoverage@20"] <= 1.0
        assert 0.0 <= test["giniindex@20"] <= 1.0 and test["averagepopularity@10"] > 0
    if variation == "topk-5-10":
        assert set(k.split("@")[1] for k in test) == {"5", "10"}


def test_recbole_data_metrics_for_a_general_model_too(recbole_data):
    metrics = {"metrics": ["Recall", "ItemCoverage", "GiniIndex"], "valid_metric": "Recall@10", "model": "BPR"}
    test = assert_sane(run_case(recbole_data, metrics))
    assert 0.0 < test["itemcoverage@10"] <= 1.0


def test_valid_metric_outside_topk_is_refused_before_training(recbole_data, capsys):
    with pytest.raises(UserInputError) as error:
        run_case(recbole_data, {"topk": [5, 10]})
    message = str(error.value)
    assert message.startswith("valid_metric Recall@20 is not computed by metrics") and "topk [5, 10]" in message
    assert "add 20 to topk" in message and "\n" not in message
    argv = ["--dataset", "test", f"--data_path={recbole_data}", "--topk=[5,10]", "--state=ERROR"]
    for action in ([], ["--compare", "KGIN,BPR"], ["--tune", "KGIN", "--num_samples", "1"], ["--check"]):
        assert main(argv + action) == 2, action
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "valid_metric Recall@20 is not computed" in err, (action, err)


def test_popularity_sampling_with_no_negative_left_stops_with_one_line(recbole_data, tmp_path, capsys):
    """User 1 of RecBole's test data has interacted with every item that occurs in the
    interactions: RecBole's pop100 evaluation looped forever on it."""
    pop100 = {"eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "mode": "pop100"}}
    with pytest.raises(UserInputError, match=r"negative sampling \(popularity, phase test\): 1 user\(s\), e.g. user 1,"):
        run_case(recbole_data, pop100)
    settings = tmp_path / "recbole_test_model.yaml"
    settings.write_text(yaml.safe_dump(RECBOLE_TEST_SETTINGS))
    code = main(["--dataset", "test", f"--data_path={recbole_data}", "--config_files", str(settings),
                 "--eval_args={'split': {'RS': [0.8, 0.1, 0.1]}, 'order': 'RO', 'mode': 'pop100'}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "no negative exists" in err
