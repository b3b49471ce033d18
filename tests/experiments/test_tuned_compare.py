"""The tuned comparison: search per model, seeds, table, significance, curves, resume."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from conftest import TOY
from recbole_kgin.experiments import compare, tuned_compare
from recbole_kgin.common.errors import UserInputError
from recbole_kgin.experiments.tuned_compare import run_tuned_comparison
from recbole_kgin.experiments.tuned_records import Budget, ModelSummary

SPACES = {
    "KGIN": "learning_rate: {choice: [0.01, 0.005]}\n",
    "BPR": "learning_rate: {choice: [0.01, 0.002]}\n",
}


@pytest.fixture
def spaces(tmp_path, monkeypatch):
    for model, text in SPACES.items():
        (tmp_path / f"{model}.yaml").write_text(text)
    monkeypatch.setattr(tuned_compare, "resolve_space", lambda name: tmp_path / f"{name}.yaml")


def test_budget_and_protocol_settings_are_checked_before_anything_runs(spaces, toy_root, tmp_path):
    settings = {**{k: v for k, v in TOY.items() if k not in ("epochs", "seed")}, "data_path": str(toy_root)}
    with pytest.raises(UserInputError, match="must be >= 1"):
        run_tuned_comparison(["KGIN"], "toy", Budget(0, 3, 2, 4), None, settings, str(tmp_path / "o"))
    with pytest.raises(UserInputError, match="sets seed, split_seed and epochs itself"):
        run_tuned_comparison(["KGIN"], "toy", Budget(1, 3, 2, 4), None, {**settings, "seed": 3}, str(tmp_path / "o"))
    with pytest.raises(UserInputError, match="--split_seeds must be >= 0"):
        run_tuned_comparison(["KGIN"], "toy", Budget(1, 3, 2, 4, split_seeds=-1), None, settings, str(tmp_path / "o"))
    with pytest.raises(UserInputError, match="--scheduler hyperband: a tuned comparison takes fifo or asha"):
        run_tuned_comparison(["KGIN"], "toy", Budget(1, 3, 2, 4, scheduler="hyperband"), None, settings, str(tmp_path / "o"))
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_tiny_tuned_comparison_tables_tests_plots_and_redoes_nothing(spaces, toy_root, tmp_path, monkeypatch):
    output = tmp_path / "out"
    settings = {**{k: v for k, v in TOY.items() if k not in ("epochs", "seed")}, "data_path": str(toy_root), "stopping_step": 2}
    budget = Budget(trials=2, tune_epochs=3, seeds=2, max_epochs=4, split_seeds=1)
    outcome = run_tuned_comparison(["KGIN", "BPR"], "toy", budget, None, settings, str(output), command="cmd")
    kgin, bpr = outcome["summaries"]
    assert outcome["metrics"] == ["recall@5", "ndcg@5"]
    assert outcome["settings"]["train_batch_size"] == 2048 and outcome["settings"]["embedding_size"] == 64
    for summary in (kgin, bpr):
        assert summary.seeds == 2 and summary.runs == 4 and not summary.error
        assert set(summary.mean) == set(summary.std) == {"recall@5", "ndcg@5"}
        assert summary.params["learning_rate"] in (0.01, 0.005, 0.002)
        assert 1 <= summary.best_epoch + 1 <= 4 and summary.seconds_per_epoch > 0 and summary.minutes_to_converge > 0
        # the 2-value space is a grid of 2 trials; each trial stopped early or at the cap of 3
        assert (summary.trials, summary.plan) == (2, "grid") and 2 <= summary.trial_epochs <= 6
        assert summary.search_hours > 0 and summary.run_hours > 0 and 1 <= summary.best_trial_epochs <= 3
        assert summary.best_trial_capped == (summary.best_trial_epochs == 3)
    trials = (output / "search" / "KGIN" / "trials.csv").read_text().splitlines()
    assert len(trials) == 3 and {line.split(",")[1] for line in trials[1:]} == {"0.01", "0.005"}  # each value once
    # KGIN and the best other model (BPR) ran their 2 seeds on one more split: 4 runs each
    run_files = sorted((output / "runs").glob("*.json"))
    assert len([f for f in run_files if f.name.endswith(".users.json")]) == 8 and len(run_files) == 16
    capped = 0
    for path in run_files:
        if path.name.endswith(".users.json"):
            continue
        run = json.loads(path.read_text())
        users = json.loads(path.with_name(path.stem + ".users.json").read_text())
        assert len(run["valid_curve"]) == run["epochs_run"] and run["valid_metric"] == "recall@5"
        seconds = [entry[2] for entry in run["valid_curve"]]
        assert seconds == sorted(seconds) and seconds[0] > 0
        mean = sum(users["recall@5"].values()) / len(users["recall@5"])
        assert mean == pytest.approx(run["test_result"]["recall@5"], abs=1e-4)
        capped += run["epochs_run"] >= 4
    assert kgin.capped_runs + bpr.capped_runs == capped
    runs = (output / "runs.csv").read_text().splitlines()
    assert runs[0].startswith("model,split_seed,seed,status") and len(runs) == 1 + 8
    assert {tuple(line.split(",")[:3]) for line in runs[1:]} == {
        (model, split, seed) for model in ("KGIN", "BPR") for split in ("2020", "2021") for seed in ("1", "2")
    }
    test = outcome["significance"]
    assert test["model"] == "KGIN" and test["best_other"] == "BPR"
    assert [(t["against"], t["metric"], t["scope"]) for t in test["comparisons"]] == [
        ("BPR", "recall@5", "split 2020"), ("BPR", "ndcg@5", "split 2020"),
        ("BPR", "recall@5", "every split"), ("BPR", "ndcg@5", "every split"),
    ]  # fmt: skip
    assert test["family"] == 4  # 2 on the search's split, 2 over the splits
    for t in test["comparisons"][:2]:  # the search's split: its 2 seeds paired, the run is the unit
        assert (t["pairs"], t["splits"], t["unit"], t["units"]) == (2, 1, "run", 2)
    for t in test["comparisons"][2:]:  # 2 seeds on 2 splits: the split is the unit
        assert (t["pairs"], t["splits"], t["unit"], t["units"]) == (4, 2, "split", 2)
    for t in test["comparisons"]:
        for low, high in (("ci_low", "ci_high"), ("boot_low", "boot_high")):
            assert t[low] is None or t[low] <= t["difference"] <= t[high]
        assert t["p_value"] is None or 0 <= t["p_value"] <= t["p_holm"] <= 1
    table = (output / "tuned.md").read_text()
    assert table.startswith("Protocol, the same for every model: training batch 2048, embedding size 64; search of 2 trials")
    assert "KGIN and BPR also ran the same seeds on 1 more split(s)." in table
    assert ("| model | recall@5 | ndcg@5 | best epoch | train s/epoch | trials | trials capped | trial-epochs "
            "| search h (sum) | best trial: epochs | runs | runs capped | run h (sum) |") in table
    assert "trials capped: trials that ran to the 3-epoch cap without early stopping" in table
    assert kgin.capped_trials == sum(line.split(",")[-4] == "completed" for line in trials[1:])
    assert "±" in table and ("| vs | metric | over | KGIN | other | difference [t-test 95% CI] | "
                             "bootstrap 95% (runs, users) | relative | p | p (Holm) |") in table
    assert "| BPR | recall@5 | 2 seeds, split 2020 |" in table and "| BPR | ndcg@5 | 2 splits (4 runs) |" in table
    assert "| KGIN | 2020 | 2 |" in table and "| BPR | 2021 | 2 |" in table  # splits
    assert table.count("| KGIN | 2021 | ") == 2 + 1  # every run: seeds 1 and 2, and the split row
    for name in ("curves.png", "comparison.png"):
        assert (output / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    document = json.loads((output / "tuned.json").read_text())
    assert document["budget"]["seeds"] == 2 and len(document["runs"]) == 8
    shipped = (output / "tuned" / "KGIN" / "toy.yaml").read_text()
    assert shipped.startswith("# KGIN on toy: best of a Ray Tune search") and "# Command: cmd" in shipped
    assert "2 trials (grid)" in shipped
    # the seed runs' patience, batch and embedding size too
    assert yaml.safe_load(shipped) == {**kgin.params, "stopping_step": 2, "train_batch_size": 2048, "embedding_size": 64}
    assert (output / "search" / "BPR" / "trials.md").is_file()

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished search or seed run ran again")

    monkeypatch.setattr(compare, "train_and_test", must_not_run)
    monkeypatch.setattr("recbole_kgin.experiments.tune.run_tune", must_not_run)
    again = run_tuned_comparison(["KGIN", "BPR"], "toy", budget, None, settings, str(output), command="cmd")
    assert [s.mean for s in again["summaries"]] == [kgin.mean, bpr.mean]
    assert (output / "tuned.md").read_text() == table


def test_cli_reaches_the_tuned_comparison_and_reports_bad_budgets_in_one_line(spaces, toy_root, tmp_path, capsys):
    from recbole_kgin.cli import main

    argv = ["--dataset", "toy", "--compare", "KGIN,BPR", "--tune_trials", "2", "--seeds", "0",
            f"--data_path={toy_root}", "--output", str(tmp_path / "o")]  # fmt: skip
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --tune_trials, --seeds, --tune_epochs and --max_epochs must be >= 1"
    )
    assert main(argv[:5] + ["1", "--claim_timeout", "0", *argv[6:]]) == 2
    assert capsys.readouterr().err == "error: --claim_timeout 0: give seconds > 0\n"


def test_split_seed_fixes_the_split_while_seed_varies_the_rest(toy_root):
    from recbole_kgin.config import Config
    from recbole_kgin.quick_start import build

    def test_pairs(**seeds):
        settings = {**{k: v for k, v in TOY.items() if k != "seed"}, "data_path": str(toy_root), **seeds}
        config = Config("BPR", "toy", None, settings)
        from recbole.utils import init_seed

        init_seed(config["seed"], config["reproducibility"])
        _, (_, _, test), model, _ = build(config, saved=False)
        inter = test._dataset.inter_feat
        pairs = sorted(zip(inter["user_id"].tolist(), inter["item_id"].tolist()))
        return pairs, model.user_embedding.weight.detach().clone()

    fixed_1, weights_1 = test_pairs(seed=1, split_seed=7)
    fixed_2, weights_2 = test_pairs(seed=2, split_seed=7)
    assert fixed_1 == fixed_2 and not torch.equal(weights_1, weights_2)  # one split, two initialisations
    assert test_pairs(seed=1)[0] != test_pairs(seed=2)[0]  # without it the seed moves the split (RecBole)


def test_cli_prints_the_table_and_the_outputs_of_a_finished_comparison(toy_root, tmp_path, capsys, monkeypatch):
    from recbole_kgin.cli import main

    row = ModelSummary(
        "KGIN", {"learning_rate": 0.01}, 0.5, 2, {"recall@5": 0.25, "ndcg@5": 0.125}, {"recall@5": 0.01, "ndcg@5": 0.02},
        3.5, 0.2, 1.5, 1,
    )  # fmt: skip
    seen = {}

    def finished(models, dataset, budget, *args, claim_timeout):
        seen.update(models=models, budget=budget, command=args[-1], claim_timeout=claim_timeout)
        return {"summaries": [row], "significance": None, "output": str(tmp_path), "metrics": ["recall@5", "ndcg@5"],
                "settings": {"train_batch_size": 2048, "embedding_size": 64}}  # fmt: skip

    monkeypatch.setattr(tuned_compare, "run_tuned_comparison", finished)
    argv = ["--dataset", "toy", "--compare", "KGIN", "--tune_trials", "2", "--seeds", "2", "--tune_epochs", "3",
            f"--data_path={toy_root}"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| KGIN | 0.2500 ± 0.0100 | 0.1250 ± 0.0200 | 3.5 | 0.20 | 0 () |  | 0 | 0.00 | 0 | 0 | 1 | 0.00 |" in out
    assert f"outputs: {tmp_path}" in out
    assert seen["models"] == ["KGIN"] and (seen["budget"].trials, seen["budget"].seeds, seen["budget"].tune_epochs) == (2, 2, 3)
    assert (seen["budget"].scheduler, seen["budget"].split_seeds, seen["budget"].max_epochs) == ("fifo", 2, 500)
    assert "--compare KGIN --tune_trials 2" in seen["command"] and seen["claim_timeout"] == 24 * 3600


def test_a_killed_comparison_leaves_the_table_of_the_models_finished_so_far(toy_root, tmp_path, monkeypatch):
    output = tmp_path / "out"
    settings = {**{k: v for k, v in TOY.items() if k not in ("epochs", "seed")}, "data_path": str(toy_root), "stopping_step": 2}

    def searched(model, *args, **kwargs):  # a finished search, without Ray; KGAT's is killed
        if model == "KGAT":
            raise KeyboardInterrupt
        return {"key": "k", "model": model, "space": f"{model}.yaml", "params": {"learning_rate": 0.01},
                "best_valid_score": 0.5, "valid_metric": "recall@5", "trials": 2, "tune_epochs": 3, "plan": "grid",
                "scheduler": "fifo"}  # fmt: skip

    monkeypatch.setattr(tuned_compare, "search_model", searched)
    with pytest.raises(KeyboardInterrupt):
        run_tuned_comparison(["KGIN", "BPR", "KGAT"], "toy", Budget(2, 2, 3, 4), None, settings, str(output))
    table = (output / "tuned.md").read_text()
    results = table.split("\n\n")[1]  # after the protocol line
    rows = [line.split(" | ")[:2] for line in results.splitlines() if line.startswith("| ") and "---" not in line]
    assert [row[0] for row in rows] == ["| model", "| KGIN", "| BPR", "| KGAT"]
    assert "±" in rows[1][1] and "±" in rows[2][1] and rows[3][1] == "not run yet"
    assert "KGIN against each other model finished so far: t-test" in table and "Runs pair by (split, seed)" in table
    document = json.loads((output / "tuned.json").read_text())
    assert document["pending"] == ["KGAT"] and [m["model"] for m in document["models"]] == ["KGIN", "BPR"]
    assert [t["against"] for t in document["significance"]["comparisons"]] == ["BPR", "BPR"]
    assert (output / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_processes_sharing_a_folder_skip_what_another_holds_then_wait_for_it(toy_root, tmp_path, monkeypatch):
    import fcntl
    import logging

    monkeypatch.setattr(logging.root, "handlers", [])  # a fresh process: RecBole's logger not set up yet

    output = tmp_path / "out"
    toy = {k: v for k, v in TOY.items() if k not in ("epochs", "seed")}
    settings = {**toy, "data_path": str(toy_root), "stopping_step": 2, "state": "INFO"}  # INFO: the claims' lines

    def searched(model, *args, **kwargs):
        return {"key": "k", "model": model, "space": f"{model}.yaml", "params": {"learning_rate": 0.01},
                "best_valid_score": 0.5, "valid_metric": "recall@5", "trials": 2, "tune_epochs": 3, "plan": "grid",
                "scheduler": "fifo"}  # fmt: skip

    (output / "claims").mkdir(parents=True)
    other_process = open(output / "claims" / "KGIN-seed1.lock", "a")  # another process trains KGIN's seed 1
    fcntl.flock(other_process, fcntl.LOCK_EX)
    trained, tables = [], []

    def run_and_record(model, dataset, config_file_list, config_dict, *args, **kwargs):
        if (model, config_dict["seed"]) == ("KGIN", 1):  # only once the other process let go (it was killed)
            tables.append(json.loads((output / "tuned.json").read_text()))
        if (model, config_dict["seed"]) == ("BPR", 2):
            other_process.close()
        row, users = original(model, dataset, config_file_list, config_dict, *args, **kwargs)
        trained.append((model, config_dict["seed"], row.status))
        return row, users

    original = tuned_compare.run_one
    monkeypatch.setattr(tuned_compare, "search_model", searched)
    monkeypatch.setattr(tuned_compare, "run_one", run_and_record)
    outcome = run_tuned_comparison(["KGIN", "BPR"], "toy", Budget(2, 2, 2, 3), None, settings, str(output))
    # KGIN's seed 2 trains first; at the end seed 1 is waited for, trained here, and seed 2 read back
    assert trained == [("KGIN", 2, "ok"), ("BPR", 1, "ok"), ("BPR", 2, "ok"), ("KGIN", 1, "ok"), ("KGIN", 2, "cached")]
    assert tables[0]["pending"] == ["KGIN"] and [m["model"] for m in tables[0]["models"]] == ["BPR"]
    assert [(s.model, s.seeds) for s in outcome["summaries"]] == [("KGIN", 2), ("BPR", 2)]
    assert outcome["significance"]["model"] == "KGIN"
    assert json.loads((output / "tuned.json").read_text())["pending"] == []
    log = "".join(path.read_text() for path in (tmp_path / "log").rglob("*.log"))
    assert "KGIN-seed1: another process is on it; coming back to it at the end" in log


def test_a_search_record_without_the_capped_count_reads_it_from_its_trials(tmp_path, monkeypatch):
    space = tmp_path / "BPR.yaml"
    space.write_text("learning_rate: {choice: [0.01, 0.02, 0.03]}\n")
    monkeypatch.setattr(tuned_compare, "resolve_space", lambda name: space)
    budget = Budget(3, 3, 1, 4)
    folder = tmp_path / "search"
    folder.mkdir()
    key = tuned_compare._search_key(space, "BPR", "toy", budget, {})
    (folder / "search.json").write_text(json.dumps({"key": key, "trials": 3}))
    (folder / "trials.csv").write_text(
        "trial,learning_rate,best_valid_score,epochs_run,status,seconds,node,threads\n"
        "trial 0,0.01,0.3,3,completed,1.0,n,1\n"
        "trial 1,0.02,0.2,2,stopped by RecBole (no improvement),1.0,n,1\n"
        "trial 2,0.03,0.1,3,completed,1.0,n,1\n"
    )
    assert tuned_compare.search_model("BPR", "toy", None, {}, budget, folder, force=False)["capped_trials"] == 2
    (folder / "trials.csv").unlink()
    assert tuned_compare.search_model("BPR", "toy", None, {}, budget, folder, force=False)["capped_trials"] is None
