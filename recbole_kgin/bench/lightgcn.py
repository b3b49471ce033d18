"""Time RecBole's LightGCN training step with its COO propagation against the CSR one
(:mod:`recbole_kgin.compat.lightgcn_propagation`).

    python -m recbole_kgin.bench.lightgcn --dataset ml-1m --data_path DIR

Builds LightGCN once (``--layers``, the comparison's batch of 2048 and embedding size
64) and times the same training batches (forward, backward, Adam step) through
RecBole's ``LightGCN.forward`` and through ours, alternating the two paths ``--rounds``
times; prints seconds per batch of each (median over rounds), the speed-up, and the
largest difference of the loss and of any gradient between the two paths on the first
batch. Both run in this process at the stated thread count.
"""

from __future__ import annotations

import argparse
import statistics
from typing import List, Optional

import torch

from recbole_kgin.bench.provenance import command_line, header, measured_on
from recbole_kgin.bench.training_steps import (
    adam_step, first_batches, largest_difference, loss_and_gradients, seconds_per_batch,
)


def main(argv: Optional[List[str]] = None) -> List[str]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--data_path", default=None)
    parser.add_argument("--layers", type=int, default=2, help="LightGCN's n_layers (default 2, RecBole's)")
    parser.add_argument("--batches", type=int, default=8, help="training batches per round (default 8)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of both paths (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)

    from recbole.model.general_recommender.lightgcn import LightGCN

    from recbole_kgin.compat import lightgcn_propagation
    from recbole_kgin.config import Config
    from recbole_kgin.quick_start import build

    command, when = command_line("recbole_kgin.bench.lightgcn", argv), measured_on()
    settings = {"n_layers": args.layers, "train_batch_size": 2048, "embedding_size": 64, "show_progress": False,
                "state": "WARNING", "cpu_threads": args.threads, "thread_governor": False}  # fmt: skip
    if args.data_path:
        settings["data_path"] = args.data_path
    _, (train, _, _), model, _ = build(Config("LightGCN", args.dataset, config_dict=settings), saved=False)
    torch.set_num_threads(args.threads)
    batches = first_batches(train, args.batches)
    step = adam_step(model)

    def gradients_through(forward):
        LightGCN.forward = forward
        return loss_and_gradients(model, batches[0])

    recbole_forward = lightgcn_propagation.RECBOLE_LIGHTGCN_FORWARD
    through_csr = gradients_through(lightgcn_propagation.lightgcn_forward)
    difference = largest_difference(gradients_through(recbole_forward), through_csr)
    times = {"RecBole": [], "CSR": []}
    try:
        for _ in range(args.rounds):
            for name, forward in (("RecBole", recbole_forward), ("CSR", lightgcn_propagation.lightgcn_forward)):
                LightGCN.forward = forward
                step(batches[0])  # warm-up
                times[name].append(seconds_per_batch(step, batches))
    finally:
        LightGCN.forward = lightgcn_propagation.lightgcn_forward
    ours, theirs = statistics.median(times["CSR"]), statistics.median(times["RecBole"])
    matrix = model.norm_adj_matrix
    lines = header(command, when) + [
        f"LightGCN on {args.dataset}: {matrix.shape[0]:,} nodes, {matrix._nnz():,} nonzeros, {args.layers} layers, "
        f"batch 2048, {args.threads} thread(s), {args.batches} batches x {args.rounds} rounds",
        f"RecBole (COO): {theirs:.3f} s/batch; CSR: {ours:.3f} s/batch; speed-up {theirs / ours:.2f}x",
        f"largest difference of the loss and the gradients on batch 1: {difference:.1e}",
    ]  # fmt: skip
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
