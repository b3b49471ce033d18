"""Shared fixtures: isolated working folders, the shared datasets, a toy KG dataset."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from toy_data import write_toy_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = Path(
    os.environ.get("RECBOLE_KGIN_SHARED_DATA", REPO_ROOT.parent / "shared" / "datasets")
)

# Small, quiet, deterministic runs.
FAST = {
    "epochs": 1,
    "show_progress": False,
    "state": "WARNING",
    "seed": 2020,
    "eval_batch_size": 4096,
}
# The toy dataset has 12 items: rank at 5.
TOY = {**FAST, "topk": [5], "valid_metric": "Recall@5"}



def die_after_validation(monkeypatch, epoch_to_die: int) -> None:
    """Make the process 'die' (KeyboardInterrupt) right after the .last checkpoint of ``epoch_to_die``."""
    import recbole_kgin.runtime.resumable as resumable

    save = resumable.ResumableTrainer._save_last_checkpoint

    def save_then_die(self, epoch, train_data):
        save(self, epoch, train_data)
        if epoch == epoch_to_die:
            raise KeyboardInterrupt

    monkeypatch.setattr(resumable.ResumableTrainer, "_save_last_checkpoint", save_then_die)


def pytest_addoption(parser):
    parser.addoption(
        "--require-fused-kernel", action="store_true",
        help="fail at once where the fused C++ kernels cannot be built (instead of skipping their tests)",
    )


def pytest_configure(config):
    if config.getoption("--require-fused-kernel"):
        from recbole_kgin.model.fused import kernel

        if kernel() is None:
            raise pytest.UsageError("--require-fused-kernel: the fused C++ kernels could not be built")


@pytest.fixture(autouse=True)
def isolated_cwd(tmp_path, tmp_path_factory, monkeypatch):
    """RecBole writes log/, saved/ and log_tensorboard/ into the working folder;
    recbole-kgin keeps its caches (processed data, synthetic datasets) in a folder of the
    test's own, beside it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RECBOLE_KGIN_CACHE_DIR", str(tmp_path_factory.mktemp("recbole-kgin-cache")))
    return tmp_path


def shared_dataset(name: str) -> Path:
    """The folder holding ``../shared/datasets/<name>``, or skip the test."""
    folder = SHARED_DATASETS / name
    if not (folder / f"{name}.inter").is_file():
        pytest.skip(f"shared dataset {name} not found at {folder} (set RECBOLE_KGIN_SHARED_DATA)")
    return SHARED_DATASETS


@pytest.fixture
def toy_root(tmp_path):
    """A data folder holding the toy KG dataset ``toy``."""
    root = tmp_path / "data"
    write_toy_dataset(root / "toy")
    return root
