"""``python -m recbole_kgin.bench.comparison_cost``: measured epochs times the epochs a
finished comparison trained."""

import json

import pytest

from conftest import TOY
from recbole_kgin.bench.comparison_cost import epochs_trained, estimate, main


def write_comparison(folder, models):
    runs = [{"model": model, "split_seed": split, "seed": seed, "epochs_run": epochs}
            for model, epochs in models.items() for split in (2020, 2021) for seed in (1, 2)]  # fmt: skip
    summaries = [{"model": model, "trial_epochs": 100 * (index + 1), "error": ""} for index, model in enumerate(models)]
    summaries.append({"model": "CKE", "trial_epochs": 0, "error": "failed"})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tuned.json").write_text(json.dumps({"models": summaries, "runs": runs}))


def test_epochs_come_from_the_search_split_of_finished_models(tmp_path):
    write_comparison(tmp_path, {"KGIN": 30, "BPR": 50})
    assert epochs_trained(tmp_path) == {
        "KGIN": {"trial epochs": 100, "run epochs": 60, "epochs per run": 30},  # split 2021's runs left out
        "BPR": {"trial epochs": 200, "run epochs": 100, "epochs per run": 50},
    }


def test_hours_follow_from_seconds_and_epochs_and_two_models_run_more_splits():
    spent = {"KGIN": {"trial epochs": 1000, "run epochs": 300, "epochs per run": 60},
             "BPR": {"trial epochs": 3000, "run epochs": 500, "epochs per run": 100}}  # fmt: skip
    measured = {"KGIN": {"load s": 5, "train s": 8.0, "valid s": 1.0}, "BPR": {"load s": 5, "train s": 0.5, "valid s": 0.5},
                "KGAT": {"load s": 9, "train s": 30.0, "valid s": 6.0}}  # fmt: skip
    rows = {row["model"]: row for row in estimate(measured, spent, split_seeds=2, seeds=5)}
    assert rows["KGIN"]["search h"] == pytest.approx(1000 * 9 / 3600) and rows["KGIN"]["runs h"] == pytest.approx(300 * 9 / 3600)
    assert rows["KGIN"]["splits h"] == pytest.approx(2 * 5 * 60 * 9 / 3600)
    # KGAT has no finished comparison: the median of the others' epochs, said so
    assert rows["KGAT"]["epochs from"] == "median of the others" and rows["KGAT"]["trial epochs"] == 2000
    assert rows["KGAT"]["splits h"] == pytest.approx(2 * 5 * 80 * 36 / 3600)  # the most expensive other model
    assert rows["BPR"]["splits h"] == 0.0 and rows["BPR"]["epochs from"] == "measured comparison"
    for row in rows.values():
        assert row["total h"] == pytest.approx(row["search h"] + row["runs h"] + row["splits h"])


@pytest.mark.slow
def test_prints_a_measured_row_per_model(toy_root, tmp_path, capsys):
    import yaml

    (tmp_path / "toy.yaml").write_text(yaml.safe_dump({k: v for k, v in TOY.items() if k != "epochs"}))
    write_comparison(tmp_path / "like", {"KGIN": 3, "BPR": 4})
    output = tmp_path / "cost.jsonl"
    main(["--dataset", "toy", "--data_path", str(toy_root), "--models", "KGIN,BPR", "--epochs_like",
          str(tmp_path / "like"), "--output", str(output), "--config_files", str(tmp_path / "toy.yaml")])  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("# python -m recbole_kgin.bench.comparison_cost --dataset toy") and lines[1].startswith("# measured ")
    assert lines[2].startswith("toy: one epoch and one validation per model at one thread")
    assert lines[5].startswith("| KGIN |") and lines[6].startswith("| BPR |") and lines[7].startswith("| all |")
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [row["model"] for row in rows] == ["KGIN", "BPR"]
    assert all(row["train s"] > 0 and row["valid s"] > 0 and row["load s"] > 0 for row in rows)
