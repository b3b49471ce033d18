"""One model across processes: two Gloo workers on CPU (recbole_kgin/distributed.py)."""

from __future__ import annotations

import multiprocessing
import os

import pytest
import torch

from conftest import TOY
from recbole_kgin.cli import main
from recbole_kgin.distributed import free_port, run_distributed
from recbole_kgin.errors import UserInputError

SETTINGS = {**TOY, "epochs": 4, "learning_rate": 0.01, "train_batch_size": 64}


def _workers() -> list:
    """Live worker processes spawned by this one (from /proc); multiprocessing's
    resource tracker, which lives as long as this process, is not a worker."""
    me, found = str(os.getpid()), []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    command = handle.read().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if fields[1] == me and fields[0] != "Z" and "resource_tracker" not in command:
                found.append(int(entry))
    return found


@pytest.mark.slow
def test_two_gloo_workers_train_and_return_the_result(toy_root, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = set(_workers())
    argv = ["--dataset", "toy", "--nproc", "2", "--port", str(free_port()), f"--data_path={toy_root}"]
    argv += [f"--{key}={value}" for key, value in SETTINGS.items()]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("KGIN on toy") and "test:       recall@5=" in printed
    assert set(_workers()) <= before  # no worker left behind
    saved = sorted(path.name for path in (tmp_path / "saved").iterdir())
    assert len(saved) == 2 and saved[0] == saved[1].replace(".pth", ".last.pth")  # rank 0 alone saved


@pytest.mark.slow
def test_the_loss_decreases_and_the_result_is_a_single_runs(toy_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run_distributed("KGIN", "toy", None, {**SETTINGS, "data_path": str(toy_root)}, nproc=2, port=free_port())
    assert set(result) == {"best_valid_score", "valid_score_bigger", "best_valid_result", "test_result", "train_loss"}
    losses = result["train_loss"]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert 0 <= result["test_result"]["recall@5"] <= 1


def _train_and_gather(rank, settings, port, queue):
    from recbole_kgin.config import Config
    from recbole_kgin.quick_start import build

    spread = {"local_rank": rank, "world_size": 2, "nproc": 2, "ip": "localhost", "port": port, "offset": 0}
    config = Config("KGIN", "toy", None, {**settings, **spread})
    _, (train, valid, test), model, trainer = build(config, saved=False)
    initial = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    trainer.fit(train, valid, saved=False, show_progress=False)
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(2)]
    torch.distributed.all_gather(gathered, flat)
    if rank == 0:
        queue.put((bool(torch.equal(gathered[0], gathered[1])), bool(torch.equal(flat, initial)),
                   len(valid.uid_list), len(test.uid_list), len(train)))  # fmt: skip
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_workers_keep_one_model_and_rank_0_evaluates_every_user(toy_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = {**SETTINGS, "data_path": str(toy_root), "epochs": 2}
    queue = multiprocessing.get_context("spawn").SimpleQueue()
    torch.multiprocessing.spawn(_train_and_gather, args=(settings, free_port(), queue), nprocs=2, join=True)
    same, unchanged, valid_users, test_users, batches = queue.get()
    assert same and not unchanged  # trained, and the two copies stayed one model

    from recbole_kgin.config import Config
    from recbole_kgin.quick_start import build

    _, (train, valid, test), _, _ = build(Config("KGIN", "toy", None, settings), saved=False)
    assert (valid_users, test_users) == (len(valid.uid_list), len(test.uid_list))  # not a shard
    assert batches == len(train)  # each worker takes half of every batch: as many steps


def test_bad_process_counts_are_one_line_errors(toy_root):
    with pytest.raises(UserInputError, match="group_offset \\+ nproc <= world_size"):
        run_distributed("KGIN", "toy", None, {"data_path": str(toy_root)}, nproc=2, world_size=1)


def test_a_knowledge_aware_loader_is_reshuffled_every_epoch_across_workers():
    """RecBole calls set_epoch only on loaders that shuffle themselves; a KG loader
    shuffles through its inner interaction loader, whose sampler must get the epoch."""
    from recbole_kgin.distributed import DistributedTrainer

    class Sampler:
        epochs = []

        def set_epoch(self, epoch):
            self.epochs.append(epoch)

    class Inner:
        sampler = Sampler()

    class KnowledgeLoader:
        general_dataloader = Inner()

    class Base:
        def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
            return epoch_idx

    class Trainer(DistributedTrainer, Base):
        def __init__(self, single):
            self.config = {"single_spec": single}

    assert Trainer(single=False)._train_epoch(KnowledgeLoader(), 3) == 3 and Sampler.epochs == [3]
    Trainer(single=True)._train_epoch(KnowledgeLoader(), 4)
    assert Sampler.epochs == [3]  # one process: RecBole's own behaviour
