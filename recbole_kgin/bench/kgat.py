"""Time RecBole's KGAT training step with its COO propagation against the CSR one
(:mod:`recbole_kgin.compat.kgat_propagation`).

    python -m recbole_kgin.bench.kgat --dataset ml-1m --data_path DIR

Builds KGAT once (``--layers``, the comparison's batch of 2048) and times the same
training batches (forward, backward, Adam step) through RecBole's ``Aggregator.forward``
and through ours, alternating the two paths ``--rounds`` times; prints seconds per batch
of each (median over rounds), the speed-up, the time of the sparse products alone, and
the largest difference of the loss and of any gradient between the two paths on the
first batch. Both run in this process at the stated thread count.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import List, Optional

import torch

from recbole_kgin.bench.training_steps import (
    adam_step, first_batches, largest_difference, loss_and_gradients, seconds_per_batch,
)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--data_path", default=None)
    parser.add_argument("--layers", default="64,64,64", help="KGAT's layer sizes (default 64,64,64)")
    parser.add_argument("--batches", type=int, default=8, help="training batches per round (default 8)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of both paths (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)

    from recbole.model.knowledge_aware_recommender.kgat import Aggregator
    from recbole.utils import KGDataLoaderState

    from recbole_kgin.compat import kgat_propagation
    from recbole_kgin.config import Config
    from recbole_kgin.quick_start import build

    settings = {"layers": [int(size) for size in args.layers.split(",")], "train_batch_size": 2048,
                "show_progress": False, "state": "WARNING", "cpu_threads": args.threads, "thread_governor": False}
    if args.data_path:
        settings["data_path"] = args.data_path
    _, (train, _, _), model, _ = build(Config("KGAT", args.dataset, config_dict=settings), saved=False)
    torch.set_num_threads(args.threads)
    train.set_mode(KGDataLoaderState.RS)
    batches = first_batches(train, args.batches)
    step = adam_step(model)

    def gradients_through(forward):
        Aggregator.forward = forward
        return loss_and_gradients(model, batches[0])

    recbole_forward = kgat_propagation.RECBOLE_AGGREGATOR_FORWARD
    through_csr = gradients_through(kgat_propagation.aggregator_forward)
    difference = largest_difference(gradients_through(recbole_forward), through_csr)

    ego = torch.randn(model.A_in.shape[1], model.layers[0], requires_grad=True)
    product = {
        "RecBole": lambda: torch.sparse.mm(model.A_in, ego).sum().backward(),
        "CSR": lambda: kgat_propagation.propagate(model.A_in, ego).sum().backward(),
    }
    times = {"RecBole": [], "CSR": []}
    products = {"RecBole": [], "CSR": []}
    for _ in range(args.rounds):
        for name, forward in (("RecBole", recbole_forward), ("CSR", kgat_propagation.aggregator_forward)):
            Aggregator.forward = forward
            step(batches[0])  # warm-up
            times[name].append(seconds_per_batch(step, batches))
            start = time.perf_counter()
            product[name]()
            products[name].append(time.perf_counter() - start)
    Aggregator.forward = kgat_propagation.aggregator_forward
    ours, theirs = statistics.median(times["CSR"]), statistics.median(times["RecBole"])
    print(f"KGAT on {args.dataset}: {model.A_in.shape[0]:,} nodes, {model.A_in._nnz():,} edges, layers {args.layers}, "
          f"batch 2048, {args.threads} thread(s), {args.batches} batches x {args.rounds} rounds")
    print(f"RecBole (COO): {theirs:.3f} s/batch; CSR: {ours:.3f} s/batch; speed-up {theirs / ours:.2f}x")
    print(f"one sparse product with its gradient: COO {statistics.median(products['RecBole']) * 1e3:.1f} ms, "
          f"CSR {statistics.median(products['CSR']) * 1e3:.1f} ms")
    print(f"largest difference of the loss and the gradients on batch 1: {difference:.1e}")


if __name__ == "__main__":
    main()
