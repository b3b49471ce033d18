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

- :func:`run_distributed` spawns ``nproc`` workers that run recbole-kgin's own
  quick start (every plugin model is found), each capped at ``CPUs / nproc`` threads;
- :func:`init_worker_device` joins the process group with Gloo on CPUs and NCCL on GPUs;
- training is RecBole's: each worker takes ``train_batch_size / world_size`` of every
  batch (``DistributedSampler``), gradients are averaged across workers, so a step
  sees the single-process batch and the learning rate means what it means there;
- :class:`DistributedTrainer`: only rank 0 evaluates, on every user (the loaders it
  evaluates are built whole, :func:`whole_loader`), and sends the result to the others,
  which therefore stop early at the same epoch; only rank 0 logs and saves; the result
  is returned as a single-process run returns it.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Dict, List, Optional

import torch

from recbole_kgin.errors import UserInputError


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
    torch.distributed.init_process_group(
        backend="nccl" if on_gpu else "gloo",
        rank=local_rank + settings["offset"],
        world_size=settings["world_size"],
        init_method=f"tcp://{settings['ip']}:{settings['port']}",
    )
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
        box: List[Any] = [result]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _worker(rank: int, model, dataset, config_file_list, config_dict, queue) -> None:
    from recbole_kgin.quick_start import run_recbole_kgin

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
    port: int = 5678,
    group_offset: int = 0,
) -> Optional[Dict[str, Any]]:
    """Train ``model`` with ``nproc`` workers here (``world_size`` in all, this machine's
    first rank ``group_offset``); returns rank 0's result (None on other machines)."""
    import torch.multiprocessing as mp

    from recbole_kgin.threads import usable_cpus

    world_size = nproc if world_size == -1 else world_size
    if nproc < 1 or world_size < nproc or group_offset < 0 or group_offset + nproc > world_size:
        raise UserInputError(
            f"--nproc {nproc}, --world_size {world_size}, --group_offset {group_offset}: need nproc >= 1 and "
            f"group_offset + nproc <= world_size"
        )
    settings = dict(config_dict or {})
    settings.update(world_size=world_size, ip=ip, port=port, nproc=nproc, offset=group_offset)
    settings.setdefault("cpu_threads", max(1, usable_cpus() // nproc))  # workers share the CPUs
    queue = mp.get_context("spawn").SimpleQueue()
    try:
        mp.spawn(_worker, args=(model, dataset, config_file_list, settings, queue), nprocs=nproc, join=True)
    except mp.ProcessException as error:  # raised in a worker, or a worker died
        lines = [line for line in str(error).strip().splitlines() if line.strip()]
        raise UserInputError(f"a training worker failed: {lines[-1] if lines else error}") from None
    return None if queue.empty() else queue.get()
