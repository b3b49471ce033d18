"""Searches on a real two-node Ray cluster, started the way users start one.

Each node is ``ray start ... --block`` in its own process group; the cluster is stopped
by killing exactly those groups (never ``ray stop``, which would end every Ray on the
machine), also when a test fails. The node "without the data" runs in its own mount
namespace with an empty folder mounted over the dataset (skipped where the system does
not allow ``unshare``).
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional

import pytest

from conftest import TOY
from recbole_kgin.launch import free_port
from recbole_kgin.common.errors import UserInputError
from recbole_kgin.experiments.tune import run_tune

RAY = str(Path(sys.executable).parent / "ray")
SPACE = "learning_rate: {choice: [0.02, 0.01, 0.005, 0.002]}\n"


def _unshare_works() -> bool:
    try:
        return subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True).returncode == 0
    except OSError:
        return False


class TwoNodeCluster:
    """A head and a worker node, each ``ray start --block`` with one CPU."""

    def __init__(self, hide: Optional[Path] = None, empty: Optional[Path] = None) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.groups: List[subprocess.Popen] = []
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        common = ["--num-cpus", "1", "--num-gpus", "0", "--disable-usage-stats", "--block"]
        self._start([RAY, "start", "--head", "--port", str(self.port), "--include-dashboard", "false", *common], env)
        self._wait_for_nodes(1)
        worker = [RAY, "start", "--address", self.address, *common]
        if hide is not None:  # this node sees an empty folder where the dataset is
            script = f"mount --bind {empty} {hide} && exec {' '.join(worker)}"
            worker = ["unshare", "-m", "--propagation", "private", "sh", "-c", script]
        self._start(worker, env)
        self._wait_for_nodes(2)

    def _start(self, command: List[str], env) -> None:
        self.groups.append(
            subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )

    def _wait_for_nodes(self, count: int, timeout: float = 90) -> None:
        probe = "import ray; ray.init(address=%r, logging_level='ERROR'); print(sum(n['Alive'] for n in ray.nodes()))"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = subprocess.run([sys.executable, "-c", probe % self.address], capture_output=True, text=True)
            lines = done.stdout.strip().splitlines()
            if done.returncode == 0 and lines and int(lines[-1]) >= count:
                return
            time.sleep(1)
        raise RuntimeError(f"the Ray cluster at {self.address} did not reach {count} node(s)")

    def stop(self) -> None:
        """SIGTERM each node's group (``ray start --block`` stops its processes), then
        SIGKILL whatever of those groups is left, and wait until none is."""
        for process in reversed(self.groups):
            _signal_group(process.pid, signal.SIGTERM)
        for process in self.groups:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        _forget_cluster(self.address)
        groups = {process.pid for process in self.groups}
        deadline = time.monotonic() + 20
        while _leftover_processes(groups) and time.monotonic() < deadline:
            for group in groups:
                _signal_group(group, signal.SIGKILL)
            time.sleep(0.5)
        for process in self.groups:
            process.wait()


def _forget_cluster(address: str) -> None:
    """What ``ray stop`` also does: drop the machine's note of the last cluster started,
    when it is ours (a later ``ray.init()`` would try to attach to it)."""
    from ray._private.utils import get_ray_temp_dir

    note = Path(get_ray_temp_dir()) / "ray_current_cluster"
    if note.is_file() and note.read_text().strip().endswith(f":{address.rsplit(':', 1)[1]}"):
        note.unlink()


def _signal_group(group: int, signum: int) -> None:
    try:
        os.killpg(group, signum)
    except ProcessLookupError:
        pass


def _leftover_processes(groups) -> List[int]:
    """Processes still alive in the given process groups."""
    alive = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) in groups:
                    alive.append(int(entry.name))
            except (ProcessLookupError, PermissionError):
                pass
    return alive


@pytest.fixture
def cluster(request, toy_root, tmp_path):
    hide = getattr(request, "param", False)
    if hide and not _unshare_works():
        pytest.skip("unshare -m is not permitted here: cannot hide the data from one node")
    empty = tmp_path / "empty"
    empty.mkdir()
    started = TwoNodeCluster(toy_root / "toy" if hide else None, empty)
    groups = {process.pid for process in started.groups}
    try:
        yield started
    finally:
        import ray

        ray.shutdown()
        started.stop()
        assert not _leftover_processes(groups), "a Ray process of the test cluster outlived it"
        from ray._private.utils import get_ray_temp_dir

        note = Path(get_ray_temp_dir()) / "ray_current_cluster"
        assert not (note.is_file() and note.read_text().strip().endswith(f":{started.port}"))


def _search(address: str, toy_root: Path, tmp_path: Path, **kwargs):
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    settings = {**TOY, "data_path": str(toy_root), "epochs": 60, "stopping_step": 100}  # trials long enough to overlap
    return run_tune(str(space), "BPR", "toy", None, settings, num_samples=4, address=address, scheduler="fifo",
                    output=str(tmp_path / "out"), retrain=False, **kwargs)  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("cluster", [False], indirect=True)
def test_a_search_runs_trials_on_both_nodes_and_lands_on_the_driver(cluster, toy_root, tmp_path):
    outcome = _search(cluster.address, toy_root, tmp_path)
    with open(tmp_path / "out" / "trials.csv") as handle:
        trials = list(csv.DictReader(handle))
    assert len(trials) == 4 and all(t["status"] == "completed" for t in trials)
    assert len({t["node"] for t in trials}) == 2  # both nodes trained
    assert all(t["threads"] == "1" for t in trials)  # one CPU per trial, one torch thread
    assert Path(outcome["best_config_file"]).is_file()  # on the driver


@pytest.mark.slow
@pytest.mark.parametrize("cluster", [True], indirect=True)
def test_a_node_without_the_data_stops_a_shared_search_and_gets_it_shipped(cluster, toy_root, tmp_path):
    with pytest.raises(UserInputError) as failure:
        _search(cluster.address, toy_root, tmp_path, data_on_nodes="shared")
    message = str(failure.value)
    assert message.startswith("dataset check failed before any trial: node ")
    assert f"{toy_root / 'toy' / 'toy.inter'} is missing" in message and "--data_on_nodes ship" in message
    assert "\n" not in message and not (tmp_path / "out" / "trials.csv").exists()  # no trial ran

    _search(cluster.address, toy_root, tmp_path, data_on_nodes="ship")
    with open(tmp_path / "out" / "trials.csv") as handle:
        trials = list(csv.DictReader(handle))
    assert len({t["node"] for t in trials}) == 2 and all(t["status"] == "completed" for t in trials)
