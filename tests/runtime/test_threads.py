"""Thread policy: usable CPUs, the user's choice, the load governor, its trainer hook."""

from __future__ import annotations

import pytest
import torch

from conftest import TOY
from recbole_kgin.runtime import threads
from recbole_kgin.common.config_checks import check_config_values
from recbole_kgin.common.errors import UserInputError
from recbole_kgin.runtime.threads import FixedThreads, ThreadGovernor


@pytest.fixture(autouse=True)
def restore_torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
    threads.remember_torch_threads()


def test_cgroup_v2_quota(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert threads.cgroup_cpu_limit(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert threads.cgroup_cpu_limit(tmp_path) is None


def test_cgroup_v1_quota(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    assert threads.cgroup_cpu_limit(tmp_path) == 3.0
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert threads.cgroup_cpu_limit(tmp_path) is None


def test_usable_cpus_is_the_affinity_capped_by_the_quota(tmp_path):
    assert threads.usable_cpus((0, 1, 2, 3), tmp_path) == 4  # no quota files
    (tmp_path / "cpu.max").write_text("250000 100000\n")
    assert threads.usable_cpus((0, 1, 2, 3), tmp_path) == 2
    assert threads.usable_cpus((5,), tmp_path) == 1
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert threads.usable_cpus((0, 1, 2, 3), tmp_path) == 1


def test_usable_cpus_of_this_process_never_exceeds_its_affinity():
    import os

    assert 1 <= threads.usable_cpus() <= len(os.sched_getaffinity(0))


def test_user_thread_choice_from_the_environment():
    threads.remember_torch_threads()
    assert threads.user_thread_choice({"OMP_NUM_THREADS": "3"}) == 3
    assert threads.user_thread_choice({"MKL_NUM_THREADS": "2"}) == 2
    assert threads.user_thread_choice({"OMP_NUM_THREADS": "4,2"}) == 4
    assert threads.user_thread_choice({"OMP_NUM_THREADS": "0"}) is None
    assert threads.user_thread_choice({"OMP_NUM_THREADS": "many"}) is None
    assert threads.user_thread_choice({}) is None


def test_user_thread_choice_sees_set_num_threads_after_import():
    threads.remember_torch_threads()
    torch.set_num_threads(torch.get_num_threads() + 1)
    assert threads.user_thread_choice({}) == torch.get_num_threads()
    threads.set_torch_threads(1)  # ours: not the user's
    assert threads.user_thread_choice({}) is None


def test_read_cpu_jiffies(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text(
        "cpu  30 0 10 100 5 0 0 0 0 0\n"
        "cpu0 10 1 2 50 3 1 1 2 0 0\n"
        "cpu1 20 0 8 50 2 0 0 0 0 0\n"
        "intr 12345\n"
    )
    # cpu0: total 70, idle+iowait 53 -> busy 17; cpu1: total 80, idle 52 -> busy 28
    assert threads.read_cpu_jiffies((0,), stat) == 17
    assert threads.read_cpu_jiffies((0, 1), stat) == 45
    assert threads.read_cpu_jiffies((0, 2), stat) is None  # cpu2 absent
    assert threads.read_cpu_jiffies((0,), tmp_path / "absent") is None


def test_read_cpu_jiffies_of_this_machine_counts_up():
    first = threads.read_cpu_jiffies(threads.affinity_cpus())
    sum(range(3_000_000))  # keep a CPU busy for a few ticks
    second = threads.read_cpu_jiffies(threads.affinity_cpus())
    assert first is not None and 0 < first <= second


class FakeMachine:
    """Clock, busy ticks of the watched CPUs and this process's CPU seconds."""

    def __init__(self, cpus: int = 2, hz: int = 100) -> None:
        self.cpus, self.hz = cpus, hz
        self.now = self.busy = self.own = 0.0
        self.readable = True
        self.set_calls = []

    def run(self, seconds: float, own_cpus: float, other_cpus: float) -> None:
        self.now += seconds
        self.own += seconds * own_cpus
        self.busy += seconds * (own_cpus + other_cpus) * self.hz

    def governor(self, cap: int, interval: float = 0.5) -> ThreadGovernor:
        return ThreadGovernor(
            cap,
            interval=interval,
            cpus=tuple(range(self.cpus)),
            read_jiffies=lambda cpus: int(self.busy) if self.readable else None,
            own_seconds=lambda: self.own,
            clock=lambda: self.now,
            ticks_per_second=self.hz,
            set_threads=self.set_calls.append,
        )


def test_governor_gives_up_the_cpus_others_keep_busy_and_takes_them_back():
    machine = FakeMachine(cpus=2)
    governor = machine.governor(cap=2)
    assert machine.set_calls == [2] and governor.threads == 2
    machine.run(1.0, own_cpus=1.0, other_cpus=1.0)  # another process holds one CPU
    assert governor.tick() == 1 and machine.set_calls == [2, 1]
    assert governor.others_load == pytest.approx(1.0)
    machine.run(1.0, own_cpus=1.0, other_cpus=0.9)
    assert governor.tick() == 1 and machine.set_calls == [2, 1]  # unchanged: not set again
    machine.run(1.0, own_cpus=1.0, other_cpus=0.0)  # it stopped
    assert governor.tick() == 2 and machine.set_calls == [2, 1, 2]


def test_governor_rounds_the_free_cpus_and_keeps_at_least_one():
    machine = FakeMachine(cpus=4)
    governor = machine.governor(cap=4)
    machine.run(1.0, own_cpus=2.0, other_cpus=1.6)  # 2.4 free -> 2
    assert governor.tick() == 2
    machine.run(1.0, own_cpus=1.0, other_cpus=1.4)  # 2.6 free -> 3
    assert governor.tick() == 3
    machine.run(1.0, own_cpus=0.5, other_cpus=3.5)  # nothing free -> still 1
    assert governor.tick() == 1


def test_governor_never_exceeds_its_cap():
    machine = FakeMachine(cpus=8)
    governor = machine.governor(cap=3)
    machine.run(1.0, own_cpus=3.0, other_cpus=0.0)
    assert governor.tick() == 3 and machine.set_calls == [3]


def test_governor_reads_the_load_only_after_its_interval():
    machine = FakeMachine(cpus=2)
    governor = machine.governor(cap=2, interval=0.5)
    machine.run(0.4, own_cpus=0.0, other_cpus=2.0)
    assert governor.tick() == 2  # 0.4 s < interval: no reading
    machine.run(0.2, own_cpus=0.0, other_cpus=2.0)
    assert governor.tick() == 1  # over the whole 0.6 s: 2 CPUs busy with others


def test_governor_without_proc_stat_keeps_its_cap():
    machine = FakeMachine(cpus=2)
    machine.readable = False
    governor = machine.governor(cap=2)
    machine.run(1.0, own_cpus=0.0, other_cpus=2.0)
    assert governor.tick() == 2 and machine.set_calls == [2]


def test_policy_from_config(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    threads.remember_torch_threads()
    fixed = threads.thread_policy({"cpu_threads": 1, "thread_governor": False})
    assert isinstance(fixed, FixedThreads) and fixed.threads == 1 and torch.get_num_threads() == 1
    governed = threads.thread_policy({"cpu_threads": "auto", "thread_governor": True})
    assert isinstance(governed, ThreadGovernor) and governed.cap == threads.usable_cpus()
    capped = threads.thread_policy({"cpu_threads": 1, "thread_governor": True})
    assert isinstance(capped, ThreadGovernor) and capped.cap == 1
    assert isinstance(threads.thread_policy({}), ThreadGovernor)  # keys absent: the defaults
    too_many = threads.thread_policy({"cpu_threads": threads.usable_cpus() + 3, "thread_governor": False})
    assert too_many.threads == threads.usable_cpus()  # never above the CPUs it may use


def test_policy_respects_the_users_environment(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    policy = threads.thread_policy({"cpu_threads": "auto", "thread_governor": True})
    assert isinstance(policy, FixedThreads) and policy.threads == 1
    # an explicit cpu_threads in the config still wins over the environment
    assert isinstance(threads.thread_policy({"cpu_threads": 2, "thread_governor": True}), ThreadGovernor)


@pytest.mark.parametrize("key, value", [("cpu_threads", 0), ("cpu_threads", "many"), ("cpu_threads", 1.5), ("thread_governor", "yes")])
def test_bad_thread_settings_fail_in_one_line(key, value):
    with pytest.raises(UserInputError, match=key):
        check_config_values({key: value}, object)


@pytest.mark.parametrize("model", ["KGIN", "BPR", "KGAT"])
def test_every_trainer_ticks_its_policy_once_per_batch_and_before_evaluation(toy_root, monkeypatch, model):
    from recbole_kgin.config import Config
    from recbole_kgin.quick_start import build

    ticks = []
    monkeypatch.setattr(FixedThreads, "tick", lambda self: ticks.append(self.threads) or self.threads)
    settings = {**TOY, "data_path": str(toy_root), "epochs": 2, "train_batch_size": 64,
                "cpu_threads": 1, "thread_governor": False}
    _, (train_data, valid_data, test_data), _, trainer = build(Config(model, "toy", config_dict=settings), saved=False)
    assert isinstance(trainer.thread_policy, FixedThreads) and torch.get_num_threads() == 1
    trainer.fit(train_data, valid_data, saved=False)
    trainer.evaluate(test_data, load_best_model=False)
    interaction_batches = len(getattr(train_data, "general_dataloader", train_data))
    batches = interaction_batches + (len(train_data.kg_dataloader) if model == "KGAT" else 0)
    assert len(ticks) == 2 * batches + 2 + 1 and set(ticks) == {1}
