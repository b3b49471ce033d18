"""One model across processes: two Gloo workers on CPU (recbole_kgin/runtime/distributed.py)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import torch

from conftest import REPO_ROOT, TOY
from recbole_kgin.cli import main
from recbole_kgin.launch import free_port, rendezvous, run_distributed
from recbole_kgin.common.errors import UserInputError

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


def _listening_addresses(pids) -> set:
    """The local addresses of the TCP sockets that processes ``pids`` listen on (from /proc)."""
    listening = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as handle:
            for line in handle.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":  # LISTEN
                    address, port = fields[1].split(":")
                    packed = bytes.fromhex(address)
                    if len(packed) == 4:  # /proc writes each 32-bit word in host order
                        host = socket.inet_ntop(socket.AF_INET, packed[::-1])
                    else:
                        host = socket.inet_ntop(socket.AF_INET6, b"".join(packed[i:i + 4][::-1] for i in range(0, 16, 4)))
                    listening[fields[9]] = f"{host}:{int(port, 16)}"
    found = set()
    for pid in pids:
        try:
            descriptors = os.listdir(f"/proc/{pid}/fd")
        except OSError:  # the process ended
            continue
        for descriptor in descriptors:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{descriptor}")
            except OSError:  # closed meanwhile
                continue
            if link.startswith("socket:[") and link[8:-1] in listening:
                found.add(listening[link[8:-1]])
    return found


@pytest.mark.slow
def test_two_gloo_workers_train_and_return_the_result(toy_root, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = set(_workers())
    busy = socket.socket()  # the port a fixed default would take is taken: a free one is chosen
    busy.bind(("127.0.0.1", 5678))
    busy.listen(1)
    seen, running = set(), threading.Event()

    def watch() -> None:  # every listening socket of this process and its workers, while they run
        while not running.wait(0.2):
            seen.update(_listening_addresses([os.getpid(), *_workers()]))

    watcher = threading.Thread(target=watch)
    watcher.start()
    argv = ["--dataset", "toy", "--nproc", "2", "--ip", "127.0.0.1", f"--data_path={toy_root}"]
    argv += [f"--{key}={value}" for key, value in SETTINGS.items()]
    try:
        assert main(argv) == 0
    finally:
        running.set()
        watcher.join()
        busy.close()
    seen.discard("127.0.0.1:5678")
    assert seen and all(address.startswith("127.0.0.1:") for address in seen), seen  # no other interface
    printed = capsys.readouterr().out
    assert printed.startswith("KGIN on toy") and "test:       recall@5=" in printed
    assert set(_workers()) <= before  # no worker left behind
    saved = sorted(path.name for path in (tmp_path / "saved").iterdir())
    assert len(saved) == 2 and saved[0] == saved[1].replace(".pth", ".last.pth")  # rank 0 alone saved


@pytest.mark.slow
def test_the_loss_decreases_and_the_result_is_a_single_runs(toy_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run_distributed("KGIN", "toy", None, {**SETTINGS, "data_path": str(toy_root)}, nproc=2)
    assert set(result) == {"best_valid_score", "valid_score_bigger", "best_valid_result", "test_result", "train_loss"}
    losses = result["train_loss"]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert 0 <= result["test_result"]["recall@5"] <= 1


def _pickles_refused(*args, **kwargs):
    raise AssertionError("results travel as pickles (broadcast_object_list)")


def _train_and_gather(rank, settings, port, queue):
    from recbole_kgin.config import Config
    from recbole_kgin.quick_start import build

    torch.distributed.broadcast_object_list = _pickles_refused  # what arrives would be unpickled
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
    with rendezvous("localhost", None, 2, 600) as port:
        torch.multiprocessing.spawn(_train_and_gather, args=(settings, port, queue), nprocs=2, join=True)
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
    with pytest.raises(UserInputError, match="spans machines: give every machine the same --port"):
        run_distributed("KGIN", "toy", None, {"data_path": str(toy_root)}, nproc=2, world_size=4)
    with pytest.raises(UserInputError, match="bad config value distributed_timeout=0"):
        run_distributed("KGIN", "toy", None, {"data_path": str(toy_root), "distributed_timeout": 0}, nproc=2)


def test_the_meeting_point_listens_on_the_given_address_only():
    with rendezvous("127.0.0.1", None, 2, 5) as port:
        assert _listening_addresses([os.getpid()]) == {f"127.0.0.1:{port}"}
        with pytest.raises(UserInputError, match=f"cannot listen on 127.0.0.1:{port} .*Address already in use"):
            with rendezvous("127.0.0.1", port, 2, 5):
                pass
    assert _listening_addresses([os.getpid()]) == set()


@pytest.mark.slow
def test_workers_end_when_their_parent_is_killed(toy_root, tmp_path):
    argv = [sys.executable, str(REPO_ROOT / "run_recbole_kgin.py"), "--dataset", "toy", "--nproc", "2",
            f"--data_path={toy_root}", *[f"--{key}={value}" for key, value in {**SETTINGS, "epochs": 100_000, "stopping_step": 100_000}.items()]]
    # started as a shell starts a background job: SIGINT ignored (torch's spawn asks the
    # kernel for a SIGINT to the workers when their parent dies; they would ignore it)
    parent = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))  # fmt: skip
    workers = []
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not (tmp_path / "saved").is_dir():  # training has begun
            assert parent.poll() is None, "the run ended before it could be killed"
            time.sleep(0.5)
        workers = _children(parent.pid)
        assert len(workers) == 2
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.time() + 30
        while time.time() < deadline and any(_alive(pid) for pid in workers):
            time.sleep(0.2)
        assert not any(_alive(pid) for pid in workers)
    finally:
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_a_worker_whose_group_never_fills_ends_after_distributed_timeout(toy_root, tmp_path):
    # one worker of a group of two; the other is never started
    argv = [sys.executable, str(REPO_ROOT / "run_recbole_kgin.py"), "--dataset", "toy", "--nproc", "1", "--world_size", "2",
            "--ip", "127.0.0.1", "--port", str(free_port()), f"--data_path={toy_root}", "--distributed_timeout=3",
            *[f"--{key}={value}" for key, value in SETTINGS.items()]]  # fmt: skip
    started = time.monotonic()
    completed = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert time.monotonic() - started < 60
    assert completed.returncode == 2 and "Traceback" not in completed.stderr, completed.stderr
    lines = completed.stderr.splitlines()  # torch's own warnings may come first
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], completed.stderr
    assert "did not all join at 127.0.0.1:" in lines[-1] and "within 3 s (distributed_timeout)" in lines[-1]


def _children(parent: int) -> list:
    """Worker processes of ``parent`` (not multiprocessing's resource tracker)."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                command = handle.read()
        except OSError:
            continue
        if fields[1] == str(parent) and b"resource_tracker" not in command:
            found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_knowledge_aware_loader_is_reshuffled_every_epoch_across_workers():
    """RecBole calls set_epoch only on loaders that shuffle themselves; a KG loader
    shuffles through its inner interaction loader, whose sampler must get the epoch."""
    from recbole_kgin.runtime.distributed import DistributedTrainer

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
