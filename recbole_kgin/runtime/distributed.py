"""One model trained across processes (RecBole's distributed training, made to work
for the plugin's models and on CPUs).

    python run_recbole_kgin.py --dataset ml-1m --nproc 2                     # one machine
    python run_recbole_kgin.py --nproc 4 --world_size 8 --ip HEAD --port 5678 --group_offset 4  # 2nd of two

RecBole 1.2.1 trains with ``torch.distributed`` but (1) hard-codes NCCL and CUDA
(``Config._init_device``; ``DistributedDataParallel(..., device_ids=[local_rank])``), (2)
spawns workers that look models up in RecBole only, and (3) evaluates each worker's share
of the users and averages the shares' metrics weighted by their number of *batches*
(``Trainer._map_reduce``: ``num_sample += len(batched_data)`` counts the 4 fields of a
batch), on shards that ``DistributedSampler`` pads with repeated users: the reported
metrics are not those of one process. Here:

- :func:`recbole_kgin.launch.run_distributed` spawns ``nproc`` workers that run
  recbole-kgin's own quick start (every plugin model is found), each capped at
  ``CPUs / nproc`` threads;
- :func:`init_worker_device` joins the process group with Gloo on CPUs and NCCL on GPUs;
- training is RecBole's: each worker takes ``train_batch_size / world_size`` of every
  batch (``DistributedSampler``), gradients are averaged across workers, so a step
  sees the single-process batch and the learning rate means what it means there;
- :class:`DistributedTrainer`: only rank 0 evaluates, on every user (the loaders it
  evaluates are built whole, :func:`whole_loader`), and sends the result to the others
  (as JSON in a tensor: nothing is unpickled), which therefore stop early at the same
  epoch; only rank 0 logs and saves; the result is returned as a single-process run
  returns it.

The group meets at ``ip:port``: the machine with rank 0 listens there, on that address
only (:func:`recbole_kgin.launch.rendezvous`; on one machine, ``--port`` left out, on a free port), and Gloo
uses the network interface that holds ``ip`` where it is this machine's. Nothing
authenticates the processes that join: run the group on a trusted network. A worker
waits ``distributed_timeout`` seconds (config, default 1800) for the others (then the run
ends with one line naming it), and ends when the process that started it ends, even by SIGKILL.
"""

from __future__ import annotations

import json
import os
import socket
import struct
from collections import OrderedDict
from datetime import timedelta
from typing import Any, Dict, Optional

import torch

from recbole_kgin.common.errors import UserInputError


def is_distributed(config) -> bool:
    return not config["single_spec"]


def init_worker_device(settings: Dict[str, Any]) -> None:
    """RecBole's ``Config._init_device`` for a worker (``local_rank`` set): Gloo on CPU,
    NCCL on GPUs; fills ``device`` and ``single_spec`` and quiets ranks other than 0."""
    gpu_id = settings["gpu_id"]
    gpu_id = ",".join(map(str, gpu_id)) if isinstance(gpu_id, (tuple, list)) else str(gpu_id)
    settings["gpu_id"] = gpu_id
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu_id  # as RecBole does
    on_gpu = len(gpu_id) > 0 and torch.cuda.is_available()
    local_rank, nproc = settings["local_rank"], settings["nproc"]
    if on_gpu and len(gpu_id.split(",")) < nproc:
        raise UserInputError(f"--nproc {nproc} needs as many GPUs in gpu_id (got '{gpu_id}')")
    interface = interface_of(settings["ip"])
    if interface is not None:  # the group's traffic stays on the interface of the given address
        os.environ.setdefault("GLOO_SOCKET_IFNAME", interface)
        os.environ.setdefault("NCCL_SOCKET_IFNAME", interface)
    timeout = timedelta(seconds=settings["distributed_timeout"])
    try:
        store = torch.distributed.TCPStore(
            settings["ip"], settings["port"], settings["world_size"], is_master=False, timeout=timeout
        )
    except (RuntimeError, OSError) as error:
        raise UserInputError(
            f"cannot reach the group at {settings['ip']}:{settings['port']} within {timeout.total_seconds():g} s "
            f"({' '.join(str(error).split())[:200]}): start rank 0's machine first, check --ip and --port"
        ) from None
    try:
        torch.distributed.init_process_group(
            backend="nccl" if on_gpu else "gloo",
            store=store,
            rank=local_rank + settings["offset"],
            world_size=settings["world_size"],
            timeout=timeout,
        )
    except torch.distributed.DistStoreError as error:  # a rank that never came
        raise UserInputError(
            f"the group's {settings['world_size']} processes did not all join at {settings['ip']}:{settings['port']} "
            f"within {timeout.total_seconds():g} s (distributed_timeout): start every machine's workers, check "
            f"--world_size and --group_offset ({' '.join(str(error).split())[:200]})"
        ) from None
    if on_gpu:
        torch.cuda.set_device(local_rank)
    settings["device"] = torch.device("cuda", local_rank) if on_gpu else torch.device("cpu")
    settings["single_spec"] = False
    if local_rank + settings["offset"] != 0:
        settings.update(state="error", show_progress=False, verbose=False)


def whole_loader(loader, config):
    """An evaluation loader like ``loader`` over all its users (no ``DistributedSampler``)."""
    config["single_spec"] = True  # RecBole's loaders read it once, when built
    try:
        return type(loader)(config, loader._dataset, loader._sampler, shuffle=False)
    finally:
        config["single_spec"] = False


class DistributedTrainer:
    """Mixin for RecBole trainers: evaluation and saving on rank 0 only (see module note)."""

    def _rank(self) -> int:
        return torch.distributed.get_rank() if is_distributed(self.config) else 0

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if not is_distributed(self.config):
            return super().evaluate(eval_data, load_best_model, model_file, show_progress)
        result = None
        if self._rank() == 0:
            self.config["single_spec"] = True  # rank 0 ranks every user itself: no map-reduce
            try:
                result = super().evaluate(eval_data, load_best_model, model_file, show_progress)
            finally:
                self.config["single_spec"] = False
        return broadcast_result(result)

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        # RecBole reshuffles a distributed loader only when the loader itself shuffles;
        # a knowledge-aware loader shuffles through its inner interaction loader, so
        # without this every epoch would see the first epoch's order.
        inner = getattr(train_data, "general_dataloader", None)
        if is_distributed(self.config) and inner is not None and hasattr(inner.sampler, "set_epoch"):
            inner.sampler.set_epoch(epoch_idx)
        return super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        if self._rank() == 0:
            super()._save_checkpoint(epoch, verbose=verbose, **kwargs)

    def _save_last_checkpoint(self, epoch: int, train_data) -> None:
        if self._rank() == 0:
            super()._save_last_checkpoint(epoch, train_data)


def distributed(trainer_class: type) -> type:
    """``trainer_class`` with :class:`DistributedTrainer` mixed in (a no-op in one process)."""
    if issubclass(trainer_class, DistributedTrainer):
        return trainer_class
    return type(trainer_class.__name__, (DistributedTrainer, trainer_class), {})


def broadcast_result(result: Optional[Dict[str, float]]) -> Optional[Dict[str, float]]:
    """Rank 0's evaluation result (metric -> value, or None) on every rank, sent as
    JSON bytes in tensors (``broadcast_object_list`` would unpickle what arrives)."""
    if torch.distributed.get_rank() == 0:
        plain = None if result is None else {name: float(value) for name, value in result.items()}
        payload = torch.tensor(list(json.dumps(plain).encode()), dtype=torch.uint8)
        size = torch.tensor([payload.numel()], dtype=torch.int64)
    else:
        size = torch.zeros(1, dtype=torch.int64)
    torch.distributed.broadcast(size, src=0)
    if torch.distributed.get_rank() != 0:
        payload = torch.zeros(int(size.item()), dtype=torch.uint8)
    torch.distributed.broadcast(payload, src=0)
    if torch.distributed.get_rank() == 0:
        return result
    return json.loads(bytes(payload.tolist()).decode(), object_pairs_hook=OrderedDict)


def interface_of(address: str) -> Optional[str]:
    """The name of this machine's network interface that holds ``address`` (an IPv4
    address or a name resolving to one), or None: another machine's, or not Linux."""
    try:
        import fcntl

        wanted = socket.inet_aton(socket.gethostbyname(address))
        names = [name for _, name in socket.if_nameindex()]
    except (ImportError, OSError):
        return None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for name in names:
            try:  # SIOCGIFADDR: the interface's IPv4 address, at bytes 20-24 of the answer
                answer = fcntl.ioctl(probe.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue
            if answer[20:24] == wanted:
                return name
    return None
