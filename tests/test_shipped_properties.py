"""Tuned defaults shipped as ``properties/model/<Model>/<dataset>.yaml``: each names the
search that produced it, holds only values its model's search space can give, and is
what a run on that dataset uses unless told otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from recbole_kgin.config import PROPERTIES_DIR, Config
from recbole_kgin.experiments.search_space import load_space
from recbole_kgin.experiments.tuned_compare import TRAINING_KEYS
from toy_data import write_atomic

SHIPPED = sorted(PROPERTIES_DIR.glob("model/*/*.yaml"))
COMPARISONS = Path(__file__).resolve().parents[1] / "comparisons"  # the committed tuned comparisons


def _compared():
    """(model, dataset) of every model a committed tuned comparison finished."""
    pairs = []
    for table in sorted(COMPARISONS.glob("*/tuned.json")):
        models = json.loads(table.read_text())["models"]
        pairs += [(entry["model"], table.parent.name) for entry in models if entry["seeds"] and not entry["error"]]
    return pairs


@pytest.mark.parametrize("model, dataset", _compared())
def test_every_compared_model_ships_the_configuration_its_search_found(model, dataset):
    produced = COMPARISONS / dataset / "tuned" / model / f"{dataset}.yaml"
    shipped = PROPERTIES_DIR / "model" / model / f"{dataset}.yaml"
    assert shipped.is_file(), f"copy {produced} to {shipped}"
    assert shipped.read_text() == produced.read_text()


def _inside(value, spec) -> bool:
    if not isinstance(spec, dict):
        return value == spec
    sampler, arguments = next(iter(spec.items()))
    if sampler in ("choice", "grid"):
        return value in arguments
    low, high = arguments
    return low <= value < high if sampler == "randint" else low <= value <= high


@pytest.mark.parametrize("path", SHIPPED, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_a_shipped_file_names_its_search_and_stays_inside_its_space(path):
    model, dataset = path.parent.name, path.stem
    text = path.read_text(encoding="utf-8")
    assert text.startswith(f"# {model} on {dataset}: best of a Ray Tune search")
    command = next(line for line in text.splitlines() if line.startswith("# Command: "))
    trained = next(line for line in text.splitlines() if line.startswith("# Every model trained with: "))
    common = dict(item.split("=", 1) for item in trained.split(": ", 1)[1].split(", "))
    assert f"--dataset {dataset} " in command and model in command.split("--compare ")[1].split()[0].split(",")
    values = yaml.safe_load(text)
    space = load_space(model)
    assert set(space) <= set(values), "every searched key is pinned"
    for key, value in values.items():
        if key in space:
            assert _inside(value, space[key]), f"{key}: {value} is outside {space[key]}"
        else:
            assert key in TRAINING_KEYS and common.get(key) == str(value), f"{key} is neither searched nor set"


def _empty_dataset(root, dataset):
    """Header-only atomic files: enough for a Config to find the dataset."""
    folder = root / dataset
    write_atomic(folder / f"{dataset}.inter", ["user_id:token", "item_id:token"], [])
    write_atomic(folder / f"{dataset}.kg", ["head_id:token", "relation_id:token", "tail_id:token"], [])
    write_atomic(folder / f"{dataset}.link", ["item_id:token", "entity_id:token"], [])


@pytest.mark.parametrize("dataset", sorted({path.stem for path in SHIPPED if path.parent.name == "KGIN"}))
def test_a_run_on_the_dataset_takes_the_tuned_defaults_unless_told_otherwise(tmp_path, dataset):
    _empty_dataset(tmp_path, dataset)
    tuned = yaml.safe_load((PROPERTIES_DIR / "model" / "KGIN" / f"{dataset}.yaml").read_text())
    config = Config("KGIN", dataset, None, {"data_path": str(tmp_path)})
    assert {key: config[key] for key in tuned} == tuned
    assert Config("KGIN", dataset, None, {"data_path": str(tmp_path), "learning_rate": 0.5})["learning_rate"] == 0.5
    other = "untuned"  # a dataset no tuned file names
    assert not (PROPERTIES_DIR / "model" / "KGIN" / f"{other}.yaml").exists()
    _empty_dataset(tmp_path, other)
    assert Config("KGIN", other, None, {"data_path": str(tmp_path)})["learning_rate"] == 1e-4  # the authors' default
