"""Each fix in recbole_kgin.compat.fixes: RecBole fails without it and works with it."""

from __future__ import annotations

import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import recbole.trainer.trainer as recbole_trainer
from conftest import FAST, TOY
from recbole.data.dataset import KnowledgeBasedDataset
from recbole_kgin.compat import fixes as compat
from recbole_kgin.config import Config
from recbole_kgin.quick_start import build, run_recbole_kgin


def toy_settings(toy_root, **extra):
    return {**TOY, "data_path": str(toy_root), **extra}


def test_recbole_reads_plain_checkpoints_on_torch_2_6_and_later(toy_root, monkeypatch):
    config = Config("BPR", "toy", config_dict=toy_settings(toy_root))
    _, (train_data, valid_data, test_data), _, trainer = build(config)
    trainer.fit(train_data, valid_data, saved=True, show_progress=False)

    # torch's default (weights_only=True) rejects the enums in the checkpoint's config ...
    with pytest.raises(pickle.UnpicklingError):
        torch.load(trainer.saved_model_file)
    # ... so RecBole's trainer fails without the fix ...
    with monkeypatch.context() as unfixed:
        unfixed.setattr(recbole_trainer, "torch", torch)
        with pytest.raises(pickle.UnpicklingError):
            trainer.evaluate(test_data, load_best_model=True)
    # ... and works with it, for evaluation and for resuming.
    result = trainer.evaluate(test_data, load_best_model=True)
    assert 0.0 <= result["recall@5"] <= 1.0
    trainer.resume_checkpoint(trainer.saved_model_file)
    assert trainer.start_epoch == 1


def test_graph_models_build_their_adjacency_on_scipy_1_12_and_later(toy_root, monkeypatch):
    config = Config("LightGCN", "toy", config_dict=toy_settings(toy_root))
    with monkeypatch.context() as unfixed:
        unfixed.delattr(sp.dok_matrix, "_update")
        with pytest.raises(AttributeError, match="_update"):
            build(config, saved=False)
    _, _, model, _ = build(config, saved=False)
    adjacency = model.norm_adj_matrix.to_dense()
    n = model.n_users + model.n_items
    assert adjacency.shape == (n, n) and torch.allclose(adjacency, adjacency.t())


def test_kgat_builds_without_dgl(toy_root, monkeypatch):
    config = Config("KGAT", "toy", config_dict=toy_settings(toy_root))
    with monkeypatch.context() as unfixed:
        unfixed.setattr(KnowledgeBasedDataset, "ckg_graph", KnowledgeBasedDataset.ckg_graph.__wrapped__)
        with pytest.raises(ImportError, match="dgl"):
            build(config, saved=False)
    _, (train_data, _, _), model, _ = build(config, saved=False)

    # The same matrix as RecBole's DGL code: sum over relations of D_r^-1 A_r.
    ckg = train_data._dataset.ckg_graph(form="coo", value_field="relation_id")
    n = model.n_users + model.n_entities
    expected = np.zeros((n, n))
    for relation in range(1, model.n_relations):
        block = np.zeros((n, n))
        for h, t, r in zip(ckg.row, ckg.col, ckg.data):
            if r == relation:
                block[h, t] += 1.0
        sums = block.sum(1, keepdims=True)
        expected += np.divide(block, sums, out=np.zeros_like(block), where=sums > 0)
    assert np.allclose(model.A_in.to_dense().numpy(), expected, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["KGAT", "KGCN", "CKE"])
def test_recbole_kg_baselines_train_one_epoch_through_our_entry_point(model):
    result = run_recbole_kgin(model, "ml-100k", config_dict=dict(FAST), saved=True)
    assert result["test_result"]["recall@20"] > 0.0
    assert result["best_valid_score"] > 0.0


@pytest.mark.slow
def test_recbole_builtin_kgin_runs_when_torch_scatter_is_installed():
    pytest.importorskip("torch_scatter", reason="RecBoleKGIN needs torch-scatter (optional extra)")
    result = run_recbole_kgin("RecBoleKGIN", "ml-100k", config_dict=dict(FAST), saved=True)
    assert result["test_result"]["recall@20"] > 0.0


def test_metrics_work_without_building_a_config_on_numpy_1_24_and_later(monkeypatch):
    from recbole.evaluator.metrics import MRR

    from recbole_kgin.compat import fixes as compat

    hits = np.array([[0, 1, 0], [0, 0, 0]])
    with monkeypatch.context() as unfixed:
        unfixed.delattr(np, "float")  # as numpy >= 1.24 ships
        with pytest.raises(AttributeError, match="float"):
            MRR.metric_info(None, hits)
        compat.apply()
        assert np.allclose(MRR.metric_info(None, hits), [[0, 0.5, 0.5], [0, 0, 0]])


def _anomaly_mode_after(code: str) -> str:
    """Run ``code`` in a fresh interpreter (no module imported yet); print the mode."""
    script = f"import torch\n{code}\nprint(torch.is_anomaly_enabled())"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[-1]


@pytest.mark.slow
def test_looking_up_a_recbole_model_leaves_autograd_anomaly_detection_off():
    assert _anomaly_mode_after("import recbole.model.sequential_recommender") == "True"  # RecBole's SINE
    fixed = "import recbole_kgin\nfrom recbole_kgin.utils import get_model\nget_model('KGCN')"
    assert _anomaly_mode_after(fixed) == "False"


@pytest.mark.slow
def test_kgat_adjacency_builds_without_a_torch_warning():
    # torch warns once per process, so a fresh interpreter; every warning is an error there
    script = (
        "import types, warnings, torch\n"
        "from recbole_kgin.compat import fixes as compat\n"
        "warnings.simplefilter('error')\n"
        "edges = types.SimpleNamespace(all_hs=torch.tensor([0, 0, 1]), all_ts=torch.tensor([1, 2, 2]),\n"
        "    all_rs=torch.tensor([1, 1, 2]), n_relations=3, matrix_size=(3, 3), device='cpu')\n"
        "print(compat._kgat_init_graph(edges).to_dense().tolist())"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[[0.0, 0.5, 0.5], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]"


@pytest.mark.parametrize("category, message, module", compat.KNOWN_WARNINGS)
def test_known_third_party_warnings_are_silenced_at_their_source_only(category, message, module):
    text = message.replace("\\", "")  # the pattern's literal text
    source = module.replace("\\", "")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        compat.apply()
        warnings.warn_explicit(text + " (from RecBole)", category, "x.py", 1, module=source)
        warnings.warn_explicit(text + " (from us)", category, "y.py", 1, module="recbole_kgin.data.validate")
        warnings.warn_explicit("another warning", category, "x.py", 2, module=source)
    assert [str(w.message) for w in seen] == [text + " (from us)", "another warning"]


def test_a_folder_another_worker_creates_meanwhile_is_no_error(tmp_path, monkeypatch):
    import importlib
    import importlib.util
    import os

    import recbole.utils.utils as recbole_utils

    spec = importlib.util.spec_from_file_location("recbole_utils_as_shipped", recbole_utils.__file__)
    as_shipped = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(as_shipped)  # RecBole's own ensure_dir, untouched by compat
    folder = tmp_path / "log" / "KGIN"
    folder.mkdir(parents=True)
    with monkeypatch.context() as race:
        race.setattr(os.path, "exists", lambda path: False)  # checked before the other worker created it
        with pytest.raises(FileExistsError):
            as_shipped.ensure_dir(str(folder))
        for name in compat.ENSURE_DIR_MODULES:
            importlib.import_module(name).ensure_dir(str(folder))
    new = tmp_path / "saved" / "nested"
    recbole_trainer.ensure_dir(str(new))
    assert new.is_dir()


def test_the_kg_samplers_used_ids_are_built_on_first_read_only(toy_root, monkeypatch):
    import recbole.sampler.sampler as recbole_sampler

    builds = []
    original = recbole_sampler.KGSampler.get_used_ids
    monkeypatch.setattr(recbole_sampler.KGSampler, "get_used_ids", lambda self: builds.append(1) or original(self))
    config = Config("KGIN", "toy", config_dict=toy_settings(toy_root))
    _, (train_data, _, _), _, trainer = build(config, saved=False)
    kg_sampler = train_data.kg_dataloader._sampler
    assert isinstance(kg_sampler, recbole_sampler.KGSampler)
    trainer.fit(train_data, show_progress=False, saved=False)  # KGIN never draws KG negatives ...
    assert not builds  # ... so the sets were never built
    # On first read: RecBole's sets, one per entity, of each head's tails, built once.
    used = kg_sampler.used_ids
    expected = [set() for _ in range(kg_sampler.entity_num)]
    for head, tail in zip(kg_sampler.hid_list, kg_sampler.tid_list):
        expected[head].add(tail)
    assert list(used) == expected and kg_sampler.used_ids is used and len(builds) == 1
    drawn = kg_sampler.sample_by_entity_ids(kg_sampler.hid_list[:20], 1)
    assert all(tail not in used[head] for head, tail in zip(kg_sampler.hid_list[:20], drawn))


def test_kgat_draws_kg_negatives_with_the_sets_built_on_demand(toy_root):
    config = Config("KGAT", "toy", config_dict=toy_settings(toy_root, epochs=1))
    _, (train_data, valid_data, _), _, trainer = build(config, saved=False)
    trainer.fit(train_data, valid_data, show_progress=False, saved=False)
    assert len(train_data.kg_dataloader._sampler.__dict__["_used_ids"]) == train_data.kg_dataloader._sampler.entity_num
