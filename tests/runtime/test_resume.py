"""Kill and resume, two-run equality, and the stop on a NaN/inf loss."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import FAST, REPO_ROOT, TOY, die_after_validation
from recbole_kgin.quick_start import load_checkpoint
from recbole_kgin.cli import main
from recbole_kgin.model import KGIN
from recbole_kgin.quick_start import resume_recbole_kgin, run_recbole_kgin
from recbole_kgin.runtime.resumable import TrainingDiverged


def same_result(a, b):
    assert a["best_valid_score"] == b["best_valid_score"]
    assert dict(a["best_valid_result"]) == dict(b["best_valid_result"])
    assert dict(a["test_result"]) == dict(b["test_result"])


@pytest.mark.parametrize("model", ["KGIN", "BPR", "KGAT", "KGCN", "CKE"])
def test_same_seed_and_config_give_identical_metrics(toy_root, model):
    settings = {**TOY, "data_path": str(toy_root), "epochs": 3}
    same_result(run_recbole_kgin(model, "toy", config_dict=settings), run_recbole_kgin(model, "toy", config_dict=settings))


def test_resume_after_a_crash_ends_like_the_uninterrupted_run(toy_root, tmp_path, monkeypatch):
    settings = {**TOY, "data_path": str(toy_root), "epochs": 6, "stopping_step": 100}
    reference = run_recbole_kgin("KGIN", "toy", config_dict={**settings, "checkpoint_dir": str(tmp_path / "a")})

    with monkeypatch.context() as crashing:
        die_after_validation(crashing, 2)  # the process dies right after epoch 2's checkpoint
        with pytest.raises(KeyboardInterrupt):
            run_recbole_kgin("KGIN", "toy", config_dict={**settings, "checkpoint_dir": str(tmp_path / "b")})
    (last,) = glob.glob(str(tmp_path / "b" / "*.last.pth"))
    torch.manual_seed(12345)  # the process that resumes starts from other random states
    same_result(resume_recbole_kgin(last), reference)


@pytest.mark.slow
def test_resume_after_sigkill_ends_like_the_uninterrupted_run(tmp_path):
    settings = {**FAST, "epochs": 5, "stopping_step": 100}
    reference = run_recbole_kgin("KGIN", "ml-100k", config_dict={**settings, "checkpoint_dir": str(tmp_path / "a")})
    argv = [sys.executable, str(REPO_ROOT / "run_recbole_kgin.py"), f"--checkpoint_dir={tmp_path / 'b'}"]
    argv += [f"--{key}={value}" for key, value in settings.items()]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, last = time.time() + 300, None
    while time.time() < deadline and process.poll() is None:
        found = glob.glob(str(tmp_path / "b" / "*.last.pth"))
        if found and load_checkpoint(found[0])["epoch"] >= 1:
            last = found[0]
            break
        time.sleep(0.2)
    assert last is not None and process.poll() is None, "the run ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not glob.glob(str(tmp_path / "b" / ".*.tmp"))  # no half-written checkpoint
    resumed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "run_recbole_kgin.py"), "--resume", last],
        capture_output=True, text=True, timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    test_line = next(line for line in resumed.stdout.splitlines() if line.startswith("test:"))
    expected = "  ".join(f"{k}={v:.4f}" for k, v in reference["test_result"].items())
    assert test_line == f"test:       {expected}"


def test_nan_loss_stops_with_a_clear_message_and_keeps_checkpoints(toy_root, tmp_path, monkeypatch):
    calls = {"n": 0}
    original = KGIN.calculate_loss

    def diverging(self, interaction):
        calls["n"] += 1
        bpr, l2, independence = original(self, interaction)
        if calls["n"] > 4:  # well into the second epoch
            bpr = bpr * float("nan")
        return bpr, l2, independence

    monkeypatch.setattr(KGIN, "calculate_loss", diverging)
    settings = {**TOY, "data_path": str(toy_root), "epochs": 5, "train_batch_size": 32, "checkpoint_dir": str(tmp_path / "s")}
    with pytest.raises(TrainingDiverged) as error:
        run_recbole_kgin("KGIN", "toy", config_dict=settings)
    message = str(error.value)
    assert "training loss became nan at epoch 1 batch 1" in message and "lower learning_rate" in message
    (best,) = glob.glob(str(tmp_path / "s" / "KGIN-*[0-9].pth"))
    (last,) = glob.glob(str(tmp_path / "s" / "*.last.pth"))
    assert best in message and last in message
    assert load_checkpoint(last)["epoch"] == 0


def test_infinite_loss_is_caught_and_the_cli_says_so_in_one_line(toy_root, monkeypatch, capsys):
    original = KGIN.calculate_loss

    def exploding(self, interaction):
        bpr, l2, independence = original(self, interaction)
        return bpr + float("inf"), l2, independence

    monkeypatch.setattr(KGIN, "calculate_loss", exploding)
    argv = ["--dataset", "toy", f"--data_path={toy_root}"] + [f"--{k}={v}" for k, v in TOY.items()]
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert err.startswith("error: training loss became inf at epoch 0 batch 0") and err.count("\n") == 1


def test_resume_refuses_overrides_and_missing_files(capsys, tmp_path):
    assert main(["--resume", str(tmp_path / "none.pth")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["--resume", str(tmp_path / "none.pth"), "--epochs=3"]) == 2
    assert "--resume takes no config overrides" in capsys.readouterr().err


def test_load_data_and_model_gives_back_the_trained_model(toy_root):
    from recbole_kgin.quick_start import load_data_and_model
    from recbole_kgin.utils import get_trainer

    result = run_recbole_kgin("KGIN", "toy", config_dict={**TOY, "data_path": str(toy_root), "epochs": 2})
    (best,) = glob.glob("saved/KGIN-*[0-9].pth")
    config, model, _, _, _, test_data = load_data_and_model(best)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    assert dict(trainer.evaluate(test_data, load_best_model=False)) == dict(result["test_result"])
