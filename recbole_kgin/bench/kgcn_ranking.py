"""Time RecBole's KGCN (or KGNNLS) full ranking against the item-major one (recbole_kgin.compat.kgcn_ranking).

    python -m recbole_kgin.bench.kgcn_ranking --dataset lastfm --data_path=DIR [--model KGNNLS]

For each shape (aggregator, n_iter, neighbor_sample_size) it builds the model once
(weights drawn away from the initialisation), scores every item for the same users one
user at a time (a full-ranking batch holds one user when eval_batch_size < 2 x items, as
with RecBole's default 4096 on lastfm) by RecBole's pairwise path (``KGCN.predict`` on
every (user, item) pair, what RecBole's ``full_sort_predict`` computes) and by the
item-major one, and prints milliseconds per user, the speed-up and the largest score
difference. Both run in this process, one after the other, at the stated thread count.
"""

from __future__ import annotations

import argparse
import time
from typing import Callable, List, Optional, Tuple

import torch

SHAPES = ("sum,1,4", "concat,1,8", "neighbor,2,4", "concat,2,8")


def _per_user(score: Callable[[torch.Tensor], torch.Tensor], users: torch.Tensor) -> Tuple[float, torch.Tensor]:
    """Seconds per user and the [U, I] scores of scoring ``users`` one at a time."""
    with torch.no_grad():
        score(users[:1])  # warm-up (and the item trees, which a validation builds once)
        start = time.perf_counter()
        rows = [score(users[index : index + 1]) for index in range(len(users))]
        return (time.perf_counter() - start) / len(users), torch.stack(rows)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--data_path", default=None)
    parser.add_argument("--model", default="KGCN", choices=("KGCN", "KGNNLS"), help="KGCN (default) or KGNNLS")
    parser.add_argument("--users", type=int, default=30, help="users scored per path (default 30)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--shapes", default=";".join(SHAPES), help="aggregator,n_iter,neighbor_sample_size;...")
    args = parser.parse_args(argv)

    from recbole.data.interaction import Interaction

    from recbole_kgin.config import Config
    from recbole_kgin.quick_start import build

    torch.set_num_threads(args.threads)
    print(f"{args.model} full ranking on {args.dataset}, {args.users} users one at a time, {args.threads} thread(s)")
    print(f"{'aggregator':>10} {'n_iter':>6} {'K':>3} {'RecBole ms/user':>16} {'item-major ms/user':>19} {'speed-up':>8} {'max |diff|':>10}")
    for shape in args.shapes.split(";"):
        aggregator, n_iter, sample = shape.split(",")
        settings = {"aggregator": aggregator, "n_iter": int(n_iter), "neighbor_sample_size": int(sample),
                    "show_progress": False, "state": "WARNING", "cpu_threads": args.threads, "thread_governor": False}
        if args.data_path:
            settings["data_path"] = args.data_path
        model = build(Config(args.model, args.dataset, config_dict=settings), saved=False)[2].eval()
        torch.manual_seed(0)
        for parameter in model.parameters():
            torch.nn.init.normal_(parameter, std=0.3)
        users = torch.arange(1, args.users + 1)
        items = torch.arange(model.n_items)

        def pairwise(batch: torch.Tensor) -> torch.Tensor:
            pairs = {model.USER_ID: batch.repeat_interleave(model.n_items), model.ITEM_ID: items.repeat(len(batch))}
            return model.predict(Interaction(pairs))

        def item_major(batch: torch.Tensor) -> torch.Tensor:
            return model.full_sort_predict(Interaction({model.USER_ID: batch}))

        recbole_time, expected = _per_user(pairwise, users)
        ours_time, scores = _per_user(item_major, users)
        print(f"{aggregator:>10} {n_iter:>6} {sample:>3} {recbole_time * 1e3:>16.1f} {ours_time * 1e3:>19.1f} "
              f"{recbole_time / ours_time:>7.1f}x {(scores - expected).abs().max().item():>10.1e}")


if __name__ == "__main__":
    main()
