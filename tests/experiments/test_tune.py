"""Ray Tune search: spaces, pruning on validation, failures, the best config."""

from __future__ import annotations

import logging

import pytest
import yaml

from conftest import TOY
from toy_data import write_colors
from recbole_kgin.common.errors import UserInputError
from recbole_kgin.experiments.search_space import load_space, to_ray
from recbole_kgin.experiments.tune import run_tune


def space_file(tmp_path, text, name="space.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("learning_rate: {normal: [0, 1]}", "key 'learning_rate': unknown sampler"),
        ("learning_rate: {loguniform: [0, 0.1]}", "key 'learning_rate': loguniform needs low > 0"),
        ("learning_rate: {uniform: [0.1, 0.01]}", "key 'learning_rate': uniform needs low < high"),
        ("context_hops: {randint: [1.5, 3]}", "key 'context_hops': randint needs integers"),
        ("ind: {choice: []}", "key 'ind': choice needs a non-empty list"),
        ("ind: {choice: distance}", "key 'ind': choice needs a non-empty list"),
        ("learning_rate: {uniform: [0.1, 0.2], choice: [1]}", "key 'learning_rate': unknown sampler"),
        ("- 1\n- 2", "expected 'key: sampler' lines"),
        ("a: [1\n", "line 2: not valid YAML"),
    ],
)
def test_invalid_spaces_are_one_line_errors_naming_the_key(tmp_path, text, fragment):
    with pytest.raises(UserInputError) as error:
        load_space(space_file(tmp_path, text))
    assert fragment in str(error.value) and "\n" not in str(error.value)


COMPARED = ["KGIN", "KGAT", "KGCN", "CKE", "BPR", "LightGCN", "KGNNLS", "MCCLK", "RecBoleKGIN"]


@pytest.mark.parametrize("name", COMPARED)
def test_shipped_spaces_load_and_name_the_models_own_keys(tmp_path, name):
    from conftest import REPO_ROOT
    from recbole_kgin.config import Config

    space = load_space(str(REPO_ROOT / "tuning" / f"{name}.yaml"))
    assert "learning_rate" in space and to_ray(space)
    known = Config(name, "ml-100k", None, {"state": "WARNING"}).final_config_dict
    assert set(space) <= set(known), f"{name}: {set(space) - set(known)} is no config key of the model"


def test_shipped_kgin_space_searches_every_switch(tmp_path):
    from conftest import REPO_ROOT

    kgin = load_space(str(REPO_ROOT / "tuning" / "KGIN.yaml"))
    assert {"node_dropout_rate", "mess_dropout_rate", "context_hops", "n_factors", "ind", "sim_regularity", "reg_weight"} <= set(kgin)


def test_unknown_or_missing_search_algorithms_are_one_line_errors(tmp_path, toy_root):
    import importlib.util

    path = space_file(tmp_path, "learning_rate: {choice: [0.01]}")
    settings = {**TOY, "data_path": str(toy_root)}
    with pytest.raises(UserInputError, match="--search bayes: choose one of random, optuna, hyperopt"):
        run_tune(path, "BPR", "toy", None, settings, search="bayes")
    grid = space_file(tmp_path, "learning_rate: {grid: [0.01, 0.1]}", "grid.yaml")
    with pytest.raises(UserInputError, match="cannot expand 'grid' entries"):
        run_tune(grid, "BPR", "toy", None, settings, search="optuna")
    if importlib.util.find_spec("optuna") is None:
        with pytest.raises(UserInputError, match="--search optuna needs the package: pip install optuna"):
            run_tune(path, "BPR", "toy", None, settings, search="optuna")


def test_address_goes_to_ray(tmp_path, toy_root, monkeypatch):
    import ray

    seen = {}

    class Attached(Exception):
        pass

    def fake_init(**kwargs):
        seen.update(kwargs)
        raise Attached

    monkeypatch.setattr(ray, "init", fake_init)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    path = space_file(tmp_path, "learning_rate: {choice: [0.01]}")
    with pytest.raises(Attached):
        run_tune(path, "BPR", "toy", None, {**TOY, "data_path": str(toy_root)}, address="ray://head:10001")
    assert seen["address"] == "ray://head:10001"
    with pytest.raises(Attached):  # no address: a Ray of our own, never the last `ray start` cluster
        run_tune(path, "BPR", "toy", None, {**TOY, "data_path": str(toy_root)})
    assert seen["address"] == "local"


@pytest.mark.slow
def test_tiny_search_prunes_survives_failures_and_reproduces_the_best(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    write_colors(tmp_path / "data" / "colors")
    space = space_file(
        tmp_path,
        "learning_rate: {grid: [0.02, 1.0e-6]}\n"
        "node_dropout_rate: {grid: [0.1, 1.5]}\n"  # 1.5 is not a rate: those trials fail
        "n_factors: {choice: [2, 4]}\n",
    )
    settings = {**TOY, "data_path": str(tmp_path / "data"), "epochs": 6, "stopping_step": 100, "train_batch_size": 128}
    outcome = run_tune(space, "KGIN", "colors", None, settings, num_samples=3, output=str(tmp_path / "out"))
    trials = outcome["trials"]
    # n_factors' two values fit in 3 samples: each runs once (no repeat), crossed with the 4 grid points
    assert len(trials) == 8
    assert sorted(str(sorted(t.params.items())) for t in trials) == sorted(
        str(sorted({"learning_rate": lr, "node_dropout_rate": rate, "n_factors": n}.items()))
        for lr in (0.02, 1e-6) for rate in (0.1, 1.5) for n in (2, 4)
    )
    statuses = [t.status for t in trials]
    failed = [s for s in statuses if s.startswith("failed")]
    assert len(failed) == 4 and all(s.startswith("failed: recbole_kgin.common.errors.UserInputError: bad config value node_dropout_rate=1.5") for s in failed)
    assert any(s == "stopped by ASHA" for s in statuses)
    assert any(s == "completed" for s in statuses)
    assert outcome["best_params"]["learning_rate"] == 0.02

    best_file = outcome["best_config_file"]
    values = yaml.safe_load(open(best_file))
    assert values["learning_rate"] == 0.02 and values["node_dropout_rate"] == 0.1
    # no folder of this machine in the file; the retraining still found the data, outside RecBole's default place
    assert "data_path" not in values and str(tmp_path / "data") not in open(best_file).read()
    assert "--config_files" in open(best_file).read() and "--data_path=DIR" in open(best_file).read()
    assert outcome["retrained_valid_score"] == pytest.approx(outcome["best_valid_score"], abs=1e-12)
    assert 0.0 <= outcome["test_result"]["recall@5"] <= 1.0
    assert all(t.seconds > 0 for t in trials if not t.status.startswith("failed"))
    # the reports tag the node id (see tag_node_ids); the rows give it bare
    assert all(len(t.node) == 56 and not t.node.startswith("node-") for t in trials if not t.status.startswith("failed"))
    table = (tmp_path / "out" / "trials.md").read_text().splitlines()
    assert len(table) == 2 + 8  # header, separator, one row per trial
    assert not [r for r in caplog.records if "is illegal" in r.getMessage()]  # no renaming notice per metric and epoch


def test_a_trials_final_run_counts_each_epochs_latest_report():
    import pandas as pd

    from recbole_kgin.experiments.tune import final_run

    def frame(epochs):
        return pd.DataFrame({"epoch": epochs, "valid_score": [0.01 * i for i in range(len(epochs))]})

    plain = frame([1, 2, 3, 4])
    assert final_run(plain).equals(plain)
    # killed after epoch 5, resumed from the checkpoint of epoch 3
    resumed = final_run(frame([1, 2, 3, 4, 5, 4, 5, 6]))
    assert list(resumed["epoch"]) == [1, 2, 3, 4, 5, 6]
    assert list(resumed["valid_score"]) == pytest.approx([0.0, 0.01, 0.02, 0.05, 0.06, 0.07])  # the later reports
    # killed after epoch 3, restarted from scratch, stopped at 2
    assert list(final_run(frame([1, 2, 3, 1, 2]))["valid_score"]) == pytest.approx([0.03, 0.04])
    assert final_run(None) is None
    assert final_run(pd.DataFrame({"valid_score": [0.1]}))["valid_score"].tolist() == [0.1]  # no epoch column


def test_a_finished_trial_restarted_from_scratch_keeps_its_finished_run():
    """Ray resumed from a record written while the trial still ran, restarted it from
    epoch 1 and stopped it early: the run that finished is the trial's record."""
    import pandas as pd

    from recbole_kgin.experiments.tune import final_run

    epochs = [1, 2, 3, 2, 3, 4, 1, 2]  # a run resumed at epoch 2, stopped by RecBole at 4; then a restart
    frame = pd.DataFrame({"epoch": epochs, "valid_score": [0.1, 0.2, 0.3, 0.25, 0.35, 0.3, 0.05, 0.1],
                          "stopped_by_recbole": [False] * 5 + [True] + [False] * 2})  # fmt: skip
    kept = final_run(frame)
    assert list(kept["epoch"]) == [1, 2, 3, 4] and list(kept["valid_score"]) == pytest.approx([0.1, 0.25, 0.35, 0.3])
    # at the epoch cap a run is finished too; without a finished run the last one stands
    capped = frame.assign(stopped_by_recbole=False)
    assert list(final_run(capped, max_epochs=4)["epoch"]) == [1, 2, 3, 4]
    assert list(final_run(capped)["epoch"]) == [1, 2]
    assert list(final_run(capped, max_epochs=10)["epoch"]) == [1, 2]


def test_trial_rows_read_every_report_of_a_trial_restored_in_a_new_process(tmp_path):
    """Ray's progress.csv of a trial restored by a new process whose first report carried a
    checkpoint: the header has the columns of the first process's reports, the later rows
    one more. pandas cannot read it (Ray's metrics_dataframe is then None); the rows come
    from result.json, whose last line may have been cut short by the kill."""
    import json
    from types import SimpleNamespace

    import pandas as pd

    from recbole_kgin.experiments.tune import _trial_rows

    folder = tmp_path / "trial"
    folder.mkdir()
    reports = [{"valid_score": 0.1 * epoch, "epoch": epoch, "stopped_by_recbole": False, "node": "n", "threads": 1}
               for epoch in (1, 2, 3, 2, 3, 4)]  # killed after epoch 3, resumed from epoch 1's checkpoint  # fmt: skip
    reports[3]["valid_score"] = 0.15
    for report in reports[3:]:
        report["should_checkpoint"] = True
    columns = list(reports[0])
    lines = [",".join(columns)] + [",".join(str(value) for value in report.values()) for report in reports]
    (folder / "progress.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(pd.errors.ParserError):
        pd.read_csv(folder / "progress.csv")
    (folder / "result.json").write_text("".join(json.dumps(r) + "\n" for r in reports) + '{"valid_score": 0.9, "ep')
    restored = SimpleNamespace(path=str(folder), metrics_dataframe=None, error=None, config={"learning_rate": 0.01})
    (row,) = _trial_rows([restored], max_epochs=4, bigger=True)
    assert row.epochs_run == 4 and row.best_valid_score == pytest.approx(0.4) and row.status == "completed"
    assert row.params == {"learning_rate": 0.01} and row.node == "n" and row.threads == 1
    (row,) = _trial_rows([restored], max_epochs=5, bigger=False)
    assert row.best_valid_score == pytest.approx(0.1) and row.status == "stopped by ASHA"
    # without result.json (not synced to this node), Ray's own frame
    elsewhere = SimpleNamespace(path=str(tmp_path / "gone"), metrics_dataframe=pd.DataFrame(reports[:2]), error=None, config={})
    (row,) = _trial_rows([elsewhere], max_epochs=4, bigger=True)
    assert row.epochs_run == 2 and row.best_valid_score == pytest.approx(0.2)


def test_trial_rows_follow_the_order_ray_created_the_trials_in(tmp_path):
    from types import SimpleNamespace

    import pandas as pd

    from recbole_kgin.experiments.tune import _trial_rows

    def trial(counter, rate):
        frame = pd.DataFrame([{"valid_score": rate, "stopped_by_recbole": True}])
        path = tmp_path / f"_trainable_a5b11_{counter:05d}_{counter}_planned=x"
        return SimpleNamespace(path=str(path), metrics_dataframe=frame, error=None, config={"learning_rate": rate})

    listed = [trial(11, 0.3), trial(2, 0.1), trial(10, 0.2)]  # as a resumed search lists them
    rows = _trial_rows(listed, max_epochs=5, bigger=True)
    assert [(row.trial, row.params["learning_rate"]) for row in rows] == [("trial 0", 0.1), ("trial 1", 0.2), ("trial 2", 0.3)]


# Loaded into every Python process of the killed search (its Ray workers included) through
# PYTHONPATH: RecBole's Trainer stops for good at epoch BLOCK_AT, after it marked the
# moment, so the test kills the search mid-trial however fast the machine trains.
BLOCKING_SITECUSTOMIZE = """
import importlib.abc, importlib.util, os, pathlib, sys, time

BLOCK_AT = int(os.environ["RECBOLE_KGIN_TEST_BLOCK_AT"])
MARKER = pathlib.Path(os.environ["RECBOLE_KGIN_TEST_BLOCKED"])


def _blocking(original):
    def _train_epoch(self, train_data, epoch_idx, *args, **kwargs):
        if epoch_idx >= BLOCK_AT:
            MARKER.touch()
            while True:
                time.sleep(1)
        return original(self, train_data, epoch_idx, *args, **kwargs)
    return _train_epoch


class _PatchTrainer(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "recbole.trainer.trainer":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            module.Trainer._train_epoch = _blocking(module.Trainer._train_epoch)
        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _PatchTrainer())
"""


def _held_search(tmp_path, toy_root, block_at: int, prefix: str = ""):
    """(output folder, environment, code, (space, settings, arguments)) of a one-trial BPR search on the toy data whose
    trial is held at epoch ``block_at`` (0-based) until killed, the marker file
    ``tmp_path / "blocked"`` written once it is; ``prefix``: code run first."""
    import os

    space = space_file(tmp_path, "learning_rate: {grid: [0.01]}\n")
    output = tmp_path / "out"
    settings = {**TOY, "data_path": str(toy_root), "epochs": 12, "stopping_step": 1000}
    arguments = dict(num_samples=1, scheduler="fifo", output=str(output), checkpoint_seconds=0.0, retrain=False)
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(BLOCKING_SITECUSTOMIZE)
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])),
                   "RECBOLE_KGIN_TEST_BLOCK_AT": str(block_at), "RECBOLE_KGIN_TEST_BLOCKED": str(tmp_path / "blocked")}  # fmt: skip
    environment.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
    code = prefix + (f"from recbole_kgin.experiments.tune import run_tune\n"
                     f"run_tune({space!r}, 'BPR', 'toy', None, {settings!r}, resume=True, **{arguments!r})")  # fmt: skip
    return output, environment, code, (space, settings, arguments)


@pytest.mark.slow
def test_a_search_interrupted_by_ctrl_c_records_nothing_as_finished(tmp_path, toy_root):
    """Ctrl-C (SIGINT) mid-trial ends the search process without writing its records:
    Ray's own handler would end the trial and return as if the search had finished,
    recording the unfinished trial's reports as its result."""
    import os
    import signal
    import subprocess
    import sys
    import time

    # Ctrl-C as at a terminal: a process started in the background inherits SIGINT ignored
    output, environment, code, _ = _held_search(
        tmp_path, toy_root, 3, "import signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"
    )
    blocked = tmp_path / "blocked"
    search = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, start_new_session=True, env=environment,
                              stdout=subprocess.DEVNULL, stderr=open(tmp_path / "search.log", "w"))  # fmt: skip
    deadline = time.monotonic() + 600
    try:
        while not blocked.exists():
            assert search.poll() is None, "the search ended: " + (tmp_path / "search.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the trial was not held within 600 s"
            time.sleep(0.2)
        search.send_signal(signal.SIGINT)
        returncode = search.wait(timeout=120)
    finally:
        if search.poll() is None:
            os.killpg(search.pid, signal.SIGKILL)
            search.wait()
    assert returncode != 0
    assert not (output / "trials.md").exists() and not (output / "trials.csv").exists()


@pytest.mark.slow
@pytest.mark.parametrize("checkpoints_kept", [True, False])
def test_a_search_killed_mid_trial_resumes_the_trial_from_its_checkpoint(tmp_path, toy_root, checkpoints_kept):
    """As when its machine goes away: the search's process group is killed mid-trial (its
    trial held at epoch 6 until then); run again with resume, the trial continues from its
    checkpoint and any repeated epochs score exactly as before the kill. Where the
    checkpoints are gone (Ray's records copied to a fresh machine without them) the trial
    starts again instead of failing."""
    import csv
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import time

    epochs, block_at = 12, 5  # 0-based: epochs 1-5 are reported before the trial stops
    output, environment, code, (space, settings, arguments) = _held_search(tmp_path, toy_root, block_at)
    blocked = tmp_path / "blocked"
    search = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, start_new_session=True, env=environment,
                              stdout=subprocess.DEVNULL, stderr=open(tmp_path / "search.log", "w"))  # fmt: skip
    experiment = output / "ray" / "BPR-toy"
    deadline = time.monotonic() + 600
    try:
        while True:  # until the trial is held and Ray's record of the experiment names its checkpoint
            assert search.poll() is None, "the search ended: " + (tmp_path / "search.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the trial was not held with a checkpoint within 600 s"
            checkpoints = sorted(experiment.glob("*/checkpoint_*"))
            states = sorted(experiment.glob("experiment_state-*.json"))
            if blocked.exists() and checkpoints and states and states[-1].stat().st_mtime > checkpoints[-1].stat().st_mtime:
                break
            time.sleep(0.2)
    finally:
        os.killpg(search.pid, signal.SIGKILL)
        search.wait()

    if not checkpoints_kept:
        for checkpoint in experiment.glob("*/checkpoint_*"):
            shutil.rmtree(checkpoint)
    # the resumed process checkpoints at every report, its first included: Ray's progress.csv
    # then gets rows with a column its header lacks (should_checkpoint), as on ml-1m
    outcome = run_tune(space, "BPR", "toy", None, settings, resume=True, **arguments)
    (trial,) = outcome["trials"]
    assert trial.status == "completed" and trial.epochs_run == epochs
    (progress,) = experiment.glob("*/progress.csv")
    reports = [(int(row["epoch"]), float(row["valid_score"])) for row in csv.DictReader(open(progress))]
    reported = [epoch for epoch, _ in reports]
    assert set(reported) == set(range(1, epochs + 1))
    assert reported[:block_at] == list(range(1, block_at + 1))  # before the kill
    # resumed after its last checkpoint (epoch 5: nothing repeated); without checkpoints, restarted
    assert reported[block_at] == (block_at + 1 if checkpoints_kept else 1)
    repeated = {epoch for epoch in reported if reported.count(epoch) > 1}
    assert len(repeated) == (0 if checkpoints_kept else block_at)
    for epoch in repeated:  # reported before the kill and again after the restart: the same training
        assert len({score for e, score in reports if e == epoch}) == 1
    assert not list(experiment.glob("*/checkpoint_*"))  # deleted once the trial ended


def test_a_local_ray_offers_trials_only_the_cpus_the_search_may_use(tmp_path, toy_root, monkeypatch):
    """Pinned to one core (taskset), a search runs one 1-CPU trial at a time: two trials
    sharing the core would each report twice their compute time."""
    import os

    import ray

    from recbole_kgin.experiments import tune

    seen = {}

    def init(**kwargs):
        seen.update(kwargs)
        raise RuntimeError("stop here")

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {1})
    path = space_file(tmp_path, "learning_rate: {choice: [0.01]}")
    with pytest.raises(RuntimeError, match="stop here"):
        run_tune(path, "BPR", "toy", None, {**TOY, "data_path": str(toy_root)}, output=str(tmp_path / "o"))
    assert seen["num_cpus"] == 1 and tune.usable_cpus() == 1
    seen.clear()
    with pytest.raises(RuntimeError, match="stop here"):
        run_tune(path, "BPR", "toy", None, {**TOY, "data_path": str(toy_root)}, output=str(tmp_path / "o"),
                 address="10.0.0.1:6379")
    assert "num_cpus" not in seen  # a cluster's CPUs are its own


@pytest.mark.slow
def test_ray_records_of_another_search_are_kept_aside_never_resumed(tmp_path, toy_root, caplog):
    """A search resumes from the Ray records in its output folder only if they are of the
    same search: after the space changed, restoring them would report the old space's
    trials as the new search's result."""
    settings = {**TOY, "data_path": str(toy_root), "epochs": 2}
    arguments = dict(num_samples=1, scheduler="fifo", output=str(tmp_path / "out"), retrain=False, resume=True)
    first = run_tune(space_file(tmp_path, "learning_rate: {grid: [0.01]}\n"), "BPR", "toy", None, settings, **arguments)
    assert [t.params["learning_rate"] for t in first["trials"]] == [0.01]
    changed = space_file(tmp_path, "learning_rate: {grid: [0.02]}\n", "changed.yaml")
    with caplog.at_level(logging.WARNING):
        second = run_tune(changed, "BPR", "toy", None, settings, **arguments)
    assert [t.params["learning_rate"] for t in second["trials"]] == [0.02]
    (kept,) = (tmp_path / "out" / "ray").glob("BPR-toy.other-search-*")
    assert list(kept.glob("experiment_state-*.json"))  # the old records, whole
    assert any("holds Ray's records of another search" in r.getMessage() for r in caplog.records)
    # the same search again resumes its records: nothing trains
    third = run_tune(changed, "BPR", "toy", None, settings, **arguments)
    assert [(t.params, t.epochs_run) for t in third["trials"]] == [(t.params, t.epochs_run) for t in second["trials"]]
    assert len(list((tmp_path / "out" / "ray").glob("BPR-toy.other-search-*"))) == 1


def test_node_ids_in_ray_reports_are_tagged_so_that_a_restore_cannot_crash_pandas(tmp_path):
    """pandas 2.3 reads the id 9e2915614309aa6... as a float with a huge exponent and
    crashes the process; Ray reads progress.csv with pandas when a search resumes."""
    import subprocess
    import sys

    from recbole_kgin.experiments.tune import NODE_TAG, tag_node_ids

    node = "9e2915614309aa6dce9b949be13f3cd8c12f83bf0f899927f6614315"
    trial = tmp_path / "BPR-toy" / "_trainable_1"
    trial.mkdir(parents=True)
    rows = ["valid_score,epoch,node,threads", f"0.1,1,{node},1", f"0.2,2,{NODE_TAG}{node},1"]
    (trial / "progress.csv").write_text("\r\n".join(rows) + "\r\n")
    assert tag_node_ids(tmp_path / "BPR-toy") == 1
    text = (trial / "progress.csv").read_bytes().decode()
    assert text == "\r\n".join(["valid_score,epoch,node,threads", f"0.1,1,{NODE_TAG}{node},1",
                                f"0.2,2,{NODE_TAG}{node},1"]) + "\r\n"  # fmt: skip
    assert tag_node_ids(tmp_path / "BPR-toy") == 0  # tagged once
    read = subprocess.run([sys.executable, "-c", "import pandas, sys; print(list(pandas.read_csv(sys.argv[1])['node']))",
                           str(trial / "progress.csv")], capture_output=True, text=True)  # fmt: skip
    assert read.returncode == 0 and read.stdout.strip() == str([NODE_TAG + node] * 2)
