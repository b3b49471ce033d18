"""run_recbole_kgin.py end to end, and its one-line errors."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, shared_dataset
from recbole_kgin.cli import main, split_overrides
from recbole_kgin.common.errors import UserInputError

SCRIPT = str(REPO_ROOT / "run_recbole_kgin.py")
QUIET = ["--show_progress=False", "--state=WARNING"]


def run_cli(*args, timeout=600):
    return subprocess.run(
        [sys.executable, SCRIPT, *args],
        capture_output=True,
        text=True,
        stdin=subprocess.PIPE,  # a prompt would block here until the timeout
        timeout=timeout,
    )


def printed_test_metrics(stdout: str) -> dict:
    line = next(line for line in stdout.splitlines() if line.startswith("test:"))
    return {name: float(value) for name, value in re.findall(r"([\w@]+)=([\d.]+)", line)}


@pytest.mark.slow
def test_default_run_trains_kgin_on_the_embedded_ml_100k():
    completed = run_cli("--epochs=1", *QUIET)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "KGIN on ml-100k" in completed.stdout
    metrics = printed_test_metrics(completed.stdout)
    assert set(metrics) >= {"recall@10", "recall@20", "ndcg@20", "mrr@10", "hit@20", "precision@20"}
    assert 0.0 < metrics["recall@20"] <= 1.0


@pytest.mark.slow
def test_kgin_on_shared_lastfm_for_two_epochs():
    data_path = shared_dataset("lastfm")
    completed = run_cli("--dataset", "lastfm", f"--data_path={data_path}", *QUIET, "--epochs=2")
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert 0.0 < printed_test_metrics(completed.stdout)["recall@20"] <= 1.0


def test_missing_dataset_fails_fast_with_one_line_and_no_prompt():
    completed = run_cli("--dataset", "nowhere", "--epochs=1", *QUIET, timeout=120)
    assert completed.returncode == 2
    assert completed.stderr.startswith("error: dataset 'nowhere' not found")
    assert completed.stderr.count("\n") == 1 and "Traceback" not in completed.stderr


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--model", "NoSuchModel"], "unknown model 'NoSuchModel'"),
        (["--learning_rate=-1"], "bad config value learning_rate=-1"),
        (["--ind=pearson"], "bad config value ind='pearson'"),
        (["epochs=1"], "unrecognised argument 'epochs=1'"),
        (["--epochs=1", "--epochs=2"], "--epochs given twice"),
        (["--config_files", "missing.yaml"], "config file 'missing.yaml' not found"),
    ],
)
def test_bad_input_is_one_line_and_exit_status_2(argv, fragment, capsys):
    assert main(argv + ["--show_progress=False"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fragment in err and err.count("\n") == 1


def test_overrides_are_typed_key_value_pairs():
    typed = split_overrides(
        ["--epochs=1", "--learning_rate=1e-3", "--topk=[10,20]", "--a=b=c", "--shuffle=false",
         "--reproducibility=True", "--dataset=ml-1m", "--gpu_id=None", "--eval_args={'mode': 'full'}"]
    )
    assert typed == {"epochs": 1, "learning_rate": 0.001, "topk": [10, 20], "a": "b=c", "shuffle": False,
                     "reproducibility": True, "dataset": "ml-1m", "gpu_id": None, "eval_args": {"mode": "full"}}
    assert [type(typed[k]) for k in ("epochs", "learning_rate", "shuffle")] == [int, float, bool]
    assert split_overrides(["--x=1", "--x=1.0"]) == {"x": 1}  # the same value twice is fine
    with pytest.raises(UserInputError):
        split_overrides(["--=3"])


def test_overrides_take_the_value_after_a_space_too():
    spaced = split_overrides(["--cpu_threads", "2", "--data_path", "./data", "--learning_rate", "1e-3",
                              "--topk", "[10,20]", "--shuffle", "false", "--lr_offset", "-1", "--epochs=3"])
    assert spaced == {"cpu_threads": 2, "data_path": "./data", "learning_rate": 0.001, "topk": [10, 20],
                      "shuffle": False, "lr_offset": -1, "epochs": 3}
    assert split_overrides(["--x", "1", "--x=1"]) == {"x": 1}
    with pytest.raises(UserInputError, match="--x given twice"):
        split_overrides(["--x", "1", "--x", "2"])


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--data_path", "--epochs=3"], "--data_path has no value: write --data_path=VALUE or --data_path VALUE"),
        (["--epochs=3", "--data_path"], "--data_path has no value"),
        (["--epochs", "3", "4"], "unrecognised argument '4'"),
        (["--"], "unrecognised argument '--'"),
    ],
)
def test_an_override_without_its_value_is_refused(extra, fragment):
    with pytest.raises(UserInputError, match=re.escape(fragment)):
        split_overrides(extra)


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--learning_rate", "-1"], "bad config value learning_rate=-1"),
        (["--cpu_threads", "--check"], "--cpu_threads has no value"),
        (["--cpu_threads", "two"], "bad config value cpu_threads='two'"),
    ],
)
def test_spaced_overrides_reach_the_config_checks(argv, fragment, capsys):
    assert main(argv + ["--show_progress", "False"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fragment in err and err.count("\n") == 1


def test_spaced_overrides_configure_a_check(tmp_path, capsys):
    assert main(["--check", "--cpu_threads", "2", "--dataset", "nowhere", "--data_path", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: dataset 'nowhere' not found") and str(tmp_path / "nowhere") in err


TYPED = ["--epochs=1", "--learning_rate=2e-2", "--reproducibility=true", "--topk=[5]",
         "--valid_metric=Recall@5", "--train_batch_size=64", "--show_progress=False", "--state=ERROR"]


def assert_typed(values, searched=False):
    assert values["epochs"] == 1 and type(values["epochs"]) is int
    assert type(values["learning_rate"]) is float and (searched or values["learning_rate"] == 0.02)
    assert values["reproducibility"] is True
    assert values["topk"] == [5] and values["train_batch_size"] == 64


@pytest.mark.slow
def test_every_action_takes_typed_overrides(toy_root, tmp_path, capsys):
    import glob

    import yaml

    from recbole_kgin.quick_start import load_checkpoint

    data = [f"--data_path={toy_root}", "--dataset", "toy"]
    assert main(data + TYPED) == 0  # a plain run
    checkpoint = glob.glob("saved/KGIN-*.pth")
    checkpoint = [path for path in checkpoint if not path.endswith(".last.pth")]
    assert_typed(load_checkpoint(checkpoint[0])["config"].final_config_dict)

    assert main(data + TYPED + ["--compare", "KGIN,BPR", "--output", str(tmp_path / "cmp")]) == 0
    for config_file in (tmp_path / "cmp" / "configs").iterdir():
        assert_typed(yaml.safe_load(config_file.read_text()))

    tune = ["--tune", "KGIN", "--num_samples", "1", "--output", str(tmp_path / "tune")]
    assert main(data + TYPED + tune) == 0, capsys.readouterr().err
    # the packaged KGIN space samples learning_rate; the other overrides stay fixed
    assert_typed(yaml.safe_load((tmp_path / "tune" / "best_KGIN_toy.yaml").read_text()), searched=True)

    assert main(data + TYPED + ["--check"]) == 0
    assert main(data + ["--epochs=one"]) == 2
    assert "bad config value epochs='one'" in capsys.readouterr().err
