"""The comparison command: outputs, resume, failures."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from conftest import TOY, die_after_validation
from recbole_kgin.cli import main
from recbole_kgin.data.checksum import file_sha256
from recbole_kgin.experiments.compare import run_comparison


@pytest.fixture
def settings(toy_root):
    return {**TOY, "data_path": str(toy_root), "epochs": 2}


def test_two_models_produce_every_output(settings, tmp_path, capsys):
    output = tmp_path / "cmp"
    rows = run_comparison(["KGIN", "BPR"], "toy", None, settings, str(output))
    assert [row.status for row in rows] == ["ok", "ok"]
    for row in rows:
        assert set(row.test_result) >= {"recall@5", "ndcg@5", "mrr@5", "hit@5", "precision@5"}
        assert row.best_epoch in (0, 1) and row.epochs_run == 2 and row.parameters > 0
        assert row.train_seconds_per_epoch > 0
    for name in ["results.md", "results.csv", "results.json", "comparison.png"]:
        assert (output / name).stat().st_size > 0
    assert (output / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(output / "results.csv") as handle:
        records = list(csv.DictReader(handle))
    assert [r["model"] for r in records] == ["KGIN", "BPR"] and float(records[0]["recall@5"]) >= 0
    assert json.loads((output / "results.json").read_text())[1]["model"] == "BPR"
    configs = sorted(p.name for p in (output / "configs").iterdir())
    assert len(configs) == 2
    kgin_config = yaml.safe_load((output / "configs" / f"KGIN-{rows[0].config_hash}.yaml").read_text())
    assert kgin_config["context_hops"] == 3 and kgin_config["seed"] == 2020 and kgin_config["model"] == "KGIN"
    # the record names its data by checksums, never by this machine's folder
    assert "data_path" not in kgin_config and str(settings["data_path"]) not in (output / "configs" / configs[0]).read_text()
    toy_files = {p.name: p for p in (Path(settings["data_path"]) / "toy").iterdir()}
    assert kgin_config["data_checksums"] == {name: file_sha256(path) for name, path in toy_files.items()}
    assert {"toy.inter", "toy.kg", "toy.link"} <= set(kgin_config["data_checksums"])


def test_rerun_skips_finished_models_and_force_recomputes(settings, tmp_path):
    output = str(tmp_path / "cmp")
    first = run_comparison(["BPR"], "toy", None, settings, output)
    again = run_comparison(["BPR"], "toy", None, settings, output)
    assert again[0].status == "cached" and again[0].test_result == first[0].test_result
    changed = run_comparison(["BPR"], "toy", None, {**settings, "learning_rate": 0.01}, output)
    assert changed[0].status == "ok" and changed[0].config_hash != first[0].config_hash
    forced = run_comparison(["BPR"], "toy", None, settings, output, force=True)
    assert forced[0].status == "ok" and forced[0].test_result == first[0].test_result


def test_a_failing_model_is_reported_and_the_others_still_run(settings, tmp_path, capsys):
    output = tmp_path / "cmp"
    argv = ["--dataset", "toy", "--compare", "NoSuchModel,BPR,KGIN", "--output", str(output)]
    argv += [f"--{key}={value}" for key, value in settings.items()]
    argv += ["--reg_weight=-1"]  # rejected for KGIN only (BPR has its own checks)
    assert main(argv) == 1
    table = capsys.readouterr().out
    assert "| NoSuchModel | failed: unknown model 'NoSuchModel'" in table
    assert "| BPR | ok |" in table
    assert "| KGIN | failed: bad config value reg_weight=-1" in table
    rows = json.loads((output / "results.json").read_text())
    assert [r["status"] for r in rows] == ["failed", "ok", "failed"]


def test_a_crash_inside_training_is_caught(settings, tmp_path, monkeypatch):
    import recbole_kgin.experiments.compare as compare

    original = compare.train_and_test

    def crash_for_kgin(config, per_user_ks=(), checkpoint=None):
        if config["model"] == "KGIN":
            raise RuntimeError("out of memory")
        return original(config, per_user_ks, checkpoint)

    monkeypatch.setattr(compare, "train_and_test", crash_for_kgin)
    rows = run_comparison(["KGIN", "BPR"], "toy", None, settings, str(tmp_path / "cmp"))
    assert rows[0].status == "failed" and rows[0].error == "RuntimeError: out of memory"
    assert rows[1].status == "ok"


def test_models_without_kg_see_the_kg_linked_items_only(toy_root, tmp_path):
    link = toy_root / "toy" / "toy.link"
    link.write_text("\n".join(line for line in link.read_text().splitlines() if not line.startswith("i3\t")) + "\n")
    settings = {**TOY, "data_path": str(toy_root), "epochs": 1}
    rows = run_comparison(["BPR", "KGIN"], "toy", None, settings, str(tmp_path / "cmp"))
    bpr_config = yaml.safe_load((tmp_path / "cmp" / "configs" / f"BPR-{rows[0].config_hash}.yaml").read_text())
    assert bpr_config["kg_items_only"] is True
    n_users, n_linked_items = 21, 12  # 20 users + [PAD]; 11 linked items + [PAD]
    assert rows[0].parameters == (n_users + n_linked_items) * 64
    alone = run_comparison(["BPR"], "toy", None, settings, str(tmp_path / "alone"))
    assert alone[0].parameters == (n_users + 13) * 64  # on its own, BPR keeps every item


def _record_trained_epochs(monkeypatch):
    import recbole_kgin.runtime.resumable as resumable

    trained = []
    train_epoch = resumable.ResumableTrainer._train_epoch

    def recording(self, train_data, epoch_idx, *args, **kwargs):
        trained.append(epoch_idx)
        return train_epoch(self, train_data, epoch_idx, *args, **kwargs)

    monkeypatch.setattr(resumable.ResumableTrainer, "_train_epoch", recording)
    return trained


@pytest.mark.parametrize("model", ["KGIN", "KGAT"])
def test_a_killed_run_continues_from_its_last_validation(settings, tmp_path, monkeypatch, model):
    settings = {**settings, "epochs": 5, "stopping_step": 100}
    (reference,) = run_comparison([model], "toy", None, settings, str(tmp_path / "a"))
    output = tmp_path / "b"
    with monkeypatch.context() as dying:
        die_after_validation(dying, 2)
        with pytest.raises(KeyboardInterrupt):
            run_comparison([model], "toy", None, settings, str(output))
    assert not list((output / "runs").glob("*.json"))
    (last,) = (output / "checkpoints").glob("*.last.pth")
    trained = _record_trained_epochs(monkeypatch)
    (row,) = run_comparison([model], "toy", None, settings, str(output))
    assert trained == [3, 4]  # epochs 0-2 came from the checkpoint
    assert row.status == "ok" and row.config_hash == reference.config_hash
    assert row.test_result == reference.test_result and row.best_valid_score == reference.best_valid_score
    assert row.best_epoch == reference.best_epoch and row.epochs_run == 5
    assert [entry[:2] for entry in row.valid_curve] == [entry[:2] for entry in reference.valid_curve]
    seconds = [entry[2] for entry in row.valid_curve]
    assert seconds == sorted(seconds) and seconds[0] > 0 and len(set(seconds)) == 5
    assert not last.exists() and (output / "checkpoints" / f"{model}-{row.config_hash}.pth").is_file()


def test_force_trains_a_killed_run_from_the_first_epoch(settings, tmp_path, monkeypatch):
    settings = {**settings, "epochs": 4, "stopping_step": 100}
    output = str(tmp_path / "cmp")
    with monkeypatch.context() as dying:
        die_after_validation(dying, 1)
        with pytest.raises(KeyboardInterrupt):
            run_comparison(["BPR"], "toy", None, settings, output)
    trained = _record_trained_epochs(monkeypatch)
    (row,) = run_comparison(["BPR"], "toy", None, settings, output, force=True)
    assert trained == [0, 1, 2, 3] and row.epochs_run == 4 and len(row.valid_curve) == 4


@pytest.mark.parametrize(
    "key, value",
    [("cpu_threads", 1), ("fused_kernel", False), ("startup_cache", False), ("cpu_malloc_tuning", False)],
)
def test_speed_keys_leave_a_runs_cache_key_as_it_was(settings, key, value):
    from recbole_kgin.config import Config
    from recbole_kgin.experiments.compare import config_hash

    plain = config_hash(Config("KGIN", "toy", config_dict=settings))
    assert config_hash(Config("KGIN", "toy", config_dict={**settings, key: value})) == plain
    assert config_hash(Config("KGIN", "toy", config_dict={**settings, "learning_rate": 0.0123})) != plain
