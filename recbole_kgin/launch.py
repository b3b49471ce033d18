"""Start one model's training across processes: ``nproc`` workers on this machine, in a
group of ``world_size`` that may span machines (``--nproc``, ``--world_size``, ``--ip``,
``--port``, ``--group_offset``). What a worker does is :mod:`recbole_kgin.runtime.distributed`.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys
import threading
import time
from contextlib import contextmanager, nullcontext
from datetime import timedelta
from typing import Any, Dict, Iterator, List, Optional

import torch
from torch.multiprocessing.spawn import ProcessException

from recbole_kgin.common.errors import UserInputError
from recbole_kgin.config import Config
from recbole_kgin.quick_start import run_recbole_kgin
from recbole_kgin.runtime.threads import usable_cpus


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def rendezvous(ip: str, port: Optional[int], world_size: int, timeout: float) -> Iterator[int]:
    """Hold the group's meeting point on this machine (the one with rank 0) for the
    block: a store listening on ``ip``'s address only, on ``port`` (None: a free one,
    chosen here, without a race); yields the port. A port in use, or an address not of
    this machine, raises :class:`UserInputError`."""
    fix = "leave --port out for a free one, or pick another" if port else "check --ip"
    try:
        family, kind, _, _, address = socket.getaddrinfo(ip, port or 0, type=socket.SOCK_STREAM)[0]
    except OSError as error:
        raise UserInputError(f"cannot resolve --ip {ip} ({error.strerror}): check --ip") from None
    listener = socket.socket(family, kind)
    try:
        listener.bind(address)
        listener.listen(128)
    except OSError as error:
        listener.close()
        raise UserInputError(f"cannot listen on {ip}:{port or 0} for the process group ({error.strerror}): {fix}") from None
    chosen = listener.getsockname()[1]
    descriptor = listener.detach()  # the store owns the socket from here, and closes it
    store = torch.distributed.TCPStore(
        ip, chosen, world_size, is_master=True, timeout=timedelta(seconds=timeout), wait_for_workers=False,
        master_listen_fd=descriptor,
    )  # fmt: skip
    try:
        yield chosen
    finally:
        del store


def die_with_parent(parent: int) -> None:
    """End this process when process ``parent`` ends, even by SIGKILL: the kernel's
    parent-death signal on Linux, a watchdog thread elsewhere."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, signal.SIGKILL, 0, 0, 0) == 0:  # PR_SET_PDEATHSIG
            if os.getppid() != parent:  # it ended before the signal was armed
                os._exit(1)
            return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def _worker(rank: int, parent: int, model, dataset, config_file_list, config_dict, queue) -> None:
    die_with_parent(parent)
    result = run_recbole_kgin(model, dataset, config_file_list, {**config_dict, "local_rank": rank})
    if rank == 0 and config_dict["offset"] == 0:
        queue.put(result)


def run_distributed(
    model: str,
    dataset: str,
    config_file_list: Optional[List[str]] = None,
    config_dict: Optional[Dict[str, Any]] = None,
    nproc: int = 2,
    world_size: int = -1,
    ip: str = "localhost",
    port: Optional[int] = None,
    group_offset: int = 0,
) -> Optional[Dict[str, Any]]:
    """Train ``model`` with ``nproc`` workers here (``world_size`` in all, this machine's
    first rank ``group_offset``); returns rank 0's result (None on other machines).
    ``port``: where rank 0's machine listens (None: a free port, on one machine only)."""
    import torch.multiprocessing as mp

    world_size = nproc if world_size == -1 else world_size
    if nproc < 1 or world_size < nproc or group_offset < 0 or group_offset + nproc > world_size:
        raise UserInputError(
            f"--nproc {nproc}, --world_size {world_size}, --group_offset {group_offset}: need nproc >= 1 and "
            f"group_offset + nproc <= world_size"
        )
    if port is None and world_size > nproc:
        raise UserInputError(f"--world_size {world_size} spans machines: give every machine the same --port")
    settings = dict(config_dict or {})
    settings.setdefault("cpu_threads", max(1, usable_cpus() // nproc))  # workers share the CPUs
    # the workers' Config, built once here first: a bad value ends the run before any worker starts
    timeout = Config(model, dataset, config_file_list, settings)["distributed_timeout"]
    queue = mp.get_context("spawn").SimpleQueue()
    with rendezvous(ip, port, world_size, timeout) if group_offset == 0 else nullcontext(port) as chosen:
        settings.update(world_size=world_size, ip=ip, port=chosen, nproc=nproc, offset=group_offset)
        try:
            mp.spawn(_worker, args=(os.getpid(), model, dataset, config_file_list, settings, queue), nprocs=nproc)
        except ProcessException as error:  # raised in a worker, or a worker died
            lines = [line for line in str(error).strip().splitlines() if line.strip()]
            last = lines[-1] if lines else str(error)
            own = f"{UserInputError.__module__}.{UserInputError.__qualname__}: "
            if last.startswith(own):  # the worker's one-line error, as it wrote it
                raise UserInputError(last[len(own):]) from None
            raise UserInputError(f"a training worker failed: {last}") from None
    return None if queue.empty() else queue.get()
