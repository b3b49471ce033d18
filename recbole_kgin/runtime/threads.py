"""CPU threads that suit a shared machine.

PyTorch's OpenMP threads busy-wait at every barrier. When the threads of all
processes outnumber the cores, each small parallel region waits for a thread that is
descheduled: measured on 2 cores, a lastfm epoch at torch's default 2 threads took
4-5x its quiet time beside one other torch process, 1.8x at one thread. So:

- the thread count starts at the CPUs this process may use (:func:`usable_cpus`: its
  affinity mask, capped by a cgroup CPU quota), never above;
- :class:`ThreadGovernor` then follows the load: every ``interval`` seconds (checked
  once per training batch) it reads how busy those CPUs were with other processes'
  work and sets torch's thread count to the CPUs left free (at least one);
- a user's own choice wins: ``cpu_threads: <n>`` in the config caps the count (at
  the usable CPUs);
  ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` or ``torch.set_num_threads`` called after
  importing recbole_kgin fix it (no governor); ``thread_governor: False`` keeps the
  start count.

The OpenMP wait policy itself is left as it is: ``OMP_WAIT_POLICY=PASSIVE`` made the
quiet lastfm epoch ~60% slower on a 2-core AMD EPYC virtual machine, and with the governor no thread waits on a busy core.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Callable, Mapping, Optional, Tuple

import torch

USER_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_STAT = Path("/proc/stat")

_torch_threads_we_know: Optional[int] = None  # torch's count when we last saw or set it


def remember_torch_threads() -> None:
    """Note torch's thread count now (at import, and whenever recbole_kgin sets it),
    so a later ``torch.set_num_threads`` by the user can be told apart from ours."""
    global _torch_threads_we_know
    _torch_threads_we_know = torch.get_num_threads()


def set_torch_threads(count: int) -> None:
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    remember_torch_threads()


def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> Optional[float]:
    """CPUs allowed by a cgroup quota (v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us`` /
    ``cpu.cfs_period_us``), or None when there is no quota."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def affinity_cpus() -> Tuple[int, ...]:
    """The CPU numbers this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return tuple(sorted(os.sched_getaffinity(0)))
    return tuple(range(os.cpu_count() or 1))


def usable_cpus(cpus: Optional[Tuple[int, ...]] = None, cgroup_root: Path = CGROUP_ROOT) -> int:
    """How many threads can run at once: the affinity CPUs (default: this process's),
    capped by a cgroup quota (rounded down, at least 1)."""
    count = len(affinity_cpus() if cpus is None else cpus)
    limit = cgroup_cpu_limit(cgroup_root)
    if limit is not None:
        count = min(count, max(1, math.floor(limit)))
    return max(1, count)


def user_thread_choice(environ: Mapping[str, str] = os.environ) -> Optional[int]:
    """The thread count the user chose, or None: ``OMP_NUM_THREADS`` or
    ``MKL_NUM_THREADS`` (first positive integer), or ``torch.set_num_threads``
    called since recbole_kgin last saw torch's count."""
    for variable in USER_THREAD_VARIABLES:
        value = environ.get(variable, "").split(",")[0].strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    current = torch.get_num_threads()
    if _torch_threads_we_know is not None and current != _torch_threads_we_know:
        return current
    return None


def read_cpu_jiffies(cpus: Tuple[int, ...], path: Path = PROC_STAT) -> Optional[int]:
    """Busy clock ticks of ``cpus`` since boot from /proc/stat, or None where it cannot
    be read. Busy = everything but idle and iowait (steal included: time the hypervisor
    gave to someone else is not ours either)."""
    wanted = {f"cpu{cpu}" for cpu in cpus}
    busy = found = 0
    try:
        with open(path, "r", encoding="ascii") as handle:
            for line in handle:
                fields = line.split()
                if not fields or fields[0] not in wanted:
                    continue
                ticks = [int(value) for value in fields[1:9]]  # user .. steal
                busy += sum(ticks) - ticks[3] - ticks[4]  # minus idle and iowait
                found += 1
    except (OSError, ValueError, IndexError):
        return None
    return busy if found == len(wanted) else None


def own_cpu_seconds() -> float:
    """CPU seconds this process has used, all threads, children excluded."""
    times = os.times()
    return times.user + times.system


class ThreadGovernor:
    """Sets torch's thread count to the CPUs other processes leave free.

    Args:
        cap: most threads to use (:func:`usable_cpus` or the user's ``cpu_threads``).
        interval: seconds between two load readings.
        cpus: CPU numbers to watch (this process's affinity).
        read_jiffies, own_seconds, clock, ticks_per_second, set_threads: the readings
            and the setter; injectable for tests.

    :meth:`tick` (every training batch) reads the CPUs' busy ticks and this process's
    CPU time once ``interval`` has passed; others' load = (busy ticks / tick rate -
    own CPU seconds) / wall seconds, in CPUs; threads = round(CPUs - others' load),
    clamped to [1, cap]. Where /proc/stat cannot be read the count stays at ``cap``.
    """

    def __init__(
        self,
        cap: int,
        interval: float = 0.5,
        cpus: Optional[Tuple[int, ...]] = None,
        read_jiffies: Callable[[Tuple[int, ...]], Optional[int]] = read_cpu_jiffies,
        own_seconds: Callable[[], float] = own_cpu_seconds,
        clock: Callable[[], float] = time.monotonic,
        ticks_per_second: Optional[float] = None,
        set_threads: Callable[[int], None] = set_torch_threads,
    ) -> None:
        self.cap = max(1, int(cap))
        self.interval = interval
        self.cpus = affinity_cpus() if cpus is None else cpus
        self._read_jiffies, self._own_seconds, self._clock = read_jiffies, own_seconds, clock
        self._set_threads = set_threads
        if ticks_per_second is None:
            ticks_per_second = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.ticks_per_second = float(ticks_per_second)
        self.threads = self.cap
        self.others_load: Optional[float] = None
        self._set_threads(self.threads)
        self._last = self._reading()

    def _reading(self) -> Optional[Tuple[float, int, float]]:
        jiffies = self._read_jiffies(self.cpus)
        if jiffies is None:
            return None
        return self._clock(), jiffies, self._own_seconds()

    def tick(self) -> int:
        """Re-read the load if ``interval`` has passed; returns the thread count."""
        if self._last is None or self._clock() - self._last[0] < self.interval:
            return self.threads
        now = self._reading()
        if now is None:
            return self.threads
        wall = now[0] - self._last[0]
        others_busy = (now[1] - self._last[1]) / self.ticks_per_second - (now[2] - self._last[2])
        self._last = now
        self.others_load = max(0.0, others_busy / wall)
        free = len(self.cpus) - self.others_load
        threads = min(self.cap, max(1, math.floor(free + 0.5)))
        if threads != self.threads:
            self.threads = threads
            self._set_threads(threads)
        return self.threads


class FixedThreads:
    """The no-governor policy: one count, set once."""

    def __init__(self, count: int, set_threads: Callable[[int], None] = set_torch_threads) -> None:
        self.threads = count
        set_threads(count)

    def tick(self) -> int:
        return self.threads


def _config_value(config, key: str):
    try:
        return config[key]  # RecBole's Config answers None for a missing key
    except KeyError:
        return None


def thread_policy(config) -> "ThreadGovernor | FixedThreads":
    """The policy a run's config asks for (see the module note): ``cpu_threads``
    (``auto``, the default, or a positive int) and ``thread_governor`` (default True)."""
    requested = _config_value(config, "cpu_threads")
    governed = _config_value(config, "thread_governor") is not False
    if requested in (None, "auto"):
        chosen = user_thread_choice()
        if chosen is not None:
            return FixedThreads(chosen)
        cap = usable_cpus()
    else:
        cap = min(int(requested), usable_cpus())  # never above the CPUs this process may use
    if not governed or not sys.platform.startswith("linux"):
        return FixedThreads(cap)
    return ThreadGovernor(cap)


def describe(policy: "ThreadGovernor | FixedThreads") -> str:
    """One log line's worth: the count and how it is kept."""
    if isinstance(policy, ThreadGovernor):
        return f"{policy.threads} (governed: follows the CPUs other processes leave free, at most {policy.cap})"
    return f"{policy.threads} (fixed)"


class ThreadGovernedTrainer:
    """Mixin for RecBole trainers (before the trainer class in the bases): applies the
    run's thread policy when built, ticks it every training batch (RecBole's
    ``_check_nan`` runs once per batch) and before every evaluation."""

    def __init__(self, config, model) -> None:
        super().__init__(config, model)
        self.thread_policy = thread_policy(config)
        self.logger.info(f"CPU threads: {describe(self.thread_policy)}")

    def _check_nan(self, loss) -> None:
        self.thread_policy.tick()
        super()._check_nan(loss)

    def evaluate(self, *args, **kwargs):
        self.thread_policy.tick()
        return super().evaluate(*args, **kwargs)


def thread_governed(trainer_class: type) -> type:
    """``trainer_class`` with :class:`ThreadGovernedTrainer` mixed in (same name)."""
    if issubclass(trainer_class, ThreadGovernedTrainer):
        return trainer_class
    return type(trainer_class.__name__, (ThreadGovernedTrainer, trainer_class), {"__module__": trainer_class.__module__})
