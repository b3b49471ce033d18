"""The startup cache (recbole_kgin/data/startup_cache.py): a second run on the same data
reads its dataset and loaders back and trains exactly as the first; a changed file or
data setting is rebuilt; an entry that fails its HMAC is never unpickled; a cache
folder or key that others may touch is not used."""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import recbole_kgin.quick_start as quick_start
from conftest import TOY
from recbole.utils import init_seed

from recbole_kgin.config import Config
from recbole_kgin.data import startup_cache
from recbole_kgin.quick_start import prepare_data, run_recbole_kgin

SETTINGS = {**TOY, "epochs": 2}


@pytest.fixture
def builds(monkeypatch):
    """Counts RecBole dataset builds (a cache hit builds none)."""
    counted = []
    original = quick_start.create_dataset

    def counting(config):
        counted.append(config["dataset"])
        return original(config)

    monkeypatch.setattr(quick_start, "create_dataset", counting)
    return counted


def cache_folder() -> Path:
    return Path(os.environ["RECBOLE_KGIN_CACHE_DIR"]) / "startup"


def settings(toy_root, **extra):
    return {**SETTINGS, "data_path": str(toy_root), **extra}


def prepared(toy_root, model="KGIN", **extra):
    """``prepare_data`` as every run calls it: seeded with the config's seed first."""
    config = Config(model, "toy", config_dict=settings(toy_root, **extra))
    init_seed(config["seed"], config["reproducibility"])
    return prepare_data(config)


def test_a_second_run_reads_the_data_back_and_trains_exactly_as_without_the_cache(toy_root, builds):
    uncached = run_recbole_kgin("KGIN", "toy", config_dict=settings(toy_root, startup_cache=False))
    assert builds == ["toy"] and not cache_folder().exists()
    first = run_recbole_kgin("KGIN", "toy", config_dict=settings(toy_root))
    second = run_recbole_kgin("KGIN", "toy", config_dict=settings(toy_root))
    assert builds == ["toy", "toy"]  # the second run built nothing
    assert len(list(cache_folder().glob("*.entry"))) == 1
    for run in (first, second):
        assert run["test_result"] == uncached["test_result"] and run["train_loss"] == uncached["train_loss"]


def test_a_read_back_leaves_the_random_generators_as_a_build_does(toy_root):
    config = Config("BPR", "toy", config_dict=settings(toy_root))  # a general loader: iterable as it is
    for run in range(2):  # build and keep, then read back
        torch.manual_seed(5), np.random.seed(5)
        _, (train_data, _, _) = prepare_data(config)
        after = (torch.get_rng_state(), np.random.get_state()[1].copy())
        batches = [batch["item_id"].tolist() for batch in train_data]
        if run == 0:
            built_after, built_batches = after, batches
    assert torch.equal(after[0], built_after[0]) and np.array_equal(after[1], built_after[1])
    assert batches == built_batches


@pytest.mark.parametrize(
    "change, rebuilt",
    [
        ({"kg_reverse_r": False}, True),  # a data setting
        ({"seed": 7}, True),  # the split's shuffle
        ({"split_seed": 3}, True),
        ({"train_batch_size": 64}, True),  # read by RecBole's loaders
        ({"learning_rate": 0.5}, False),  # training only
        ({"n_factors": 2, "context_hops": 1}, False),  # the model's hyper-parameters
        ({"epochs": 1, "topk": [5, 10]}, False),
    ],
)
def test_a_changed_data_setting_is_rebuilt_and_nothing_else_is(toy_root, builds, change, rebuilt):
    prepared(toy_root)
    prepared(toy_root, **change)
    assert len(builds) == (2 if rebuilt else 1)


@pytest.mark.parametrize("suffix", ["inter", "kg", "link"])
def test_a_changed_file_is_rebuilt(toy_root, builds, suffix):
    prepared(toy_root)
    path = toy_root / "toy" / f"toy.{suffix}"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n")  # one row fewer
    prepared(toy_root)
    assert len(builds) == 2


class _Planted:
    """Unpickling this makes a folder: what an attacker's pickle would do."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_an_entry_that_fails_its_hmac_is_never_unpickled_and_is_rebuilt(toy_root, builds, tmp_path, caplog):
    prepared(toy_root)
    (entry,) = cache_folder().glob("*.entry")
    marker = tmp_path / "planted-code-ran"
    entry.write_bytes(b"\0" * 32 + pickle.dumps(_Planted(str(marker))))
    with caplog.at_level(logging.WARNING):
        dataset, _ = prepared(toy_root)
    assert not marker.exists()
    assert "fails its HMAC check" in caplog.text
    assert len(builds) == 2 and dataset.inter_num > 0
    config = Config("KGIN", "toy", config_dict=settings(toy_root))
    init_seed(config["seed"], config["reproducibility"])
    assert startup_cache.load(config) is not None  # kept anew


def test_an_entry_signed_with_another_key_is_refused(toy_root, builds, tmp_path):
    prepared(toy_root)
    (entry,) = cache_folder().glob("*.entry")
    marker = tmp_path / "planted-code-ran"
    payload = pickle.dumps(_Planted(str(marker)))
    entry.write_bytes(startup_cache._sign(os.urandom(startup_cache.KEY_BYTES), payload) + payload)
    prepared(toy_root)
    assert not marker.exists() and len(builds) == 2


@pytest.mark.parametrize("what, mode", [("folder", 0o755), ("folder", 0o770), ("key", 0o644)])
def test_a_cache_others_may_touch_is_not_used(toy_root, builds, caplog, what, mode):
    prepared(toy_root)
    target = cache_folder() if what == "folder" else cache_folder() / "hmac.key"
    os.chmod(target, mode)
    with caplog.at_level(logging.WARNING):
        prepared(toy_root)
    assert len(builds) == 2  # not read
    assert "alone" in caplog.text


def test_only_the_most_recent_entries_are_kept(toy_root, monkeypatch):
    monkeypatch.setattr(startup_cache, "MAX_ENTRIES", 2)
    for seed in range(3):
        prepared(toy_root, seed=seed)
    assert len(list(cache_folder().glob("*.entry"))) == 2


def test_the_keys_it_ignores_are_never_read_by_recboles_data_code():
    read = startup_cache.recbole_data_keys()
    assert {"train_batch_size", "seed", "kg_reverse_r", "train_neg_sample_args", "eval_args"} <= read
    assert not startup_cache.NOT_DATA_KEYS & read


def test_object_arrays_of_tensors_come_back_equal():
    items = np.empty(4, dtype=object)
    items[:] = [None, torch.tensor([3, 1]), torch.tensor([], dtype=torch.int64), torch.tensor([7])]
    back = pickle.loads(startup_cache._pickled(items))
    assert back[0] is None and [piece.tolist() for piece in back[1:]] == [[3, 1], [], [7]]
    used = np.empty(3, dtype=object)
    used[:] = [{np.int64(4), np.int64(9)}, set(), {1}]
    assert list(pickle.loads(startup_cache._pickled(used))) == [{4, 9}, set(), {1}]
    strings = np.array([{"a"}, {"b"}], dtype=object)
    assert list(pickle.loads(startup_cache._pickled(strings))) == [{"a"}, {"b"}]
    mixed = np.array([1.5, 2.5])
    assert np.array_equal(pickle.loads(startup_cache._pickled(mixed)), mixed)
    generator = torch.Generator().manual_seed(3)
    again = pickle.loads(startup_cache._pickled(generator))
    assert torch.equal(again.get_state(), generator.get_state())


def test_files_changed_while_they_are_read_are_not_kept(toy_root, builds, monkeypatch, caplog):
    original = quick_start.create_dataset

    def build_then_change(config):  # another process rewrites the file during the build
        dataset = original(config)
        path = toy_root / "toy" / "toy.inter"
        path.write_text(path.read_text() + path.read_text().splitlines()[1] + "\n")
        return dataset

    monkeypatch.setattr(quick_start, "create_dataset", build_then_change)
    with caplog.at_level(logging.WARNING):
        prepared(toy_root)
    assert "changed while they were read" in caplog.text
    assert not list(cache_folder().glob("*" + startup_cache.SUFFIX))
