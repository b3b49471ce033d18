"""Speed, memory and quality of our KGIN against RecBole's built-in KGIN.

    python -m recbole_kgin.benchmark --dataset ml-1m --data_path ../shared/datasets --epochs 3

Each model trains in its own subprocess (so peak RSS is its own) with identical
hyper-parameters, through the trainer a user gets (ours: KGINTrainer; RecBole's:
KGTrainer, which also samples KG triples every batch), for the same number of
epochs without early stopping. Printed per model: median seconds per training
epoch, seconds for one full-ranking evaluation of the test set, peak RSS, test
Recall@20 / NDCG@20 after those epochs; then the ratios (RecBole / ours).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import torch

SHARED_SETTINGS: Dict[str, Any] = {
    "embedding_size": 64,
    "context_hops": 3,
    "n_factors": 4,
    "train_batch_size": 1024,
    "node_dropout_rate": 0.5,
    "mess_dropout_rate": 0.1,
    "kg_reverse_r": True,
    "ind": "distance",
    "sim_regularity": 1e-4,
    "reg_weight": 1e-5,
    "temperature": 0.2,
    "learning_rate": 1e-3,
    "show_progress": False,
    "state": "WARNING",
    "eval_batch_size": 4096,
}
MODELS = ("KGIN", "RecBoleKGIN")
# RecBole's KGIN given the runtime settings KGINTrainer uses (glibc malloc reuse, fused
# Adam), to show how much of the gap is the model's computation itself.
LEVELLED = "RecBoleKGIN+runtime"


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(model: str, dataset: str, epochs: int, overrides: Dict[str, Any]) -> Dict[str, Any]:
    """Train ``model`` for ``epochs`` epochs in this process and measure it."""
    from recbole.utils import init_seed

    from recbole_kgin.config import Config
    from recbole_kgin.cpu_memory import keep_freed_memory_for_reuse
    from recbole_kgin.quick_start import build

    levelled = model == LEVELLED
    config = Config(model.split("+")[0], dataset, config_dict={**SHARED_SETTINGS, **overrides})
    init_seed(config["seed"], config["reproducibility"])
    _, (train_data, _, test_data), model_obj, trainer = build(config, saved=False)
    if levelled:
        keep_freed_memory_for_reuse()
        trainer.optimizer = torch.optim.Adam(
            model_obj.parameters(), lr=config["learning_rate"], fused=True
        )
    device = config["device"]
    epoch_seconds: List[float] = []
    for epoch in range(epochs):
        _synchronize(device)
        start = time.perf_counter()
        trainer._train_epoch(train_data, epoch, show_progress=False)
        _synchronize(device)
        epoch_seconds.append(time.perf_counter() - start)
    _synchronize(device)
    start = time.perf_counter()
    result = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    _synchronize(device)
    eval_seconds = time.perf_counter() - start
    peak_gpu = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {
        "model": model,
        "device": str(device),
        "batches_per_epoch": len(train_data),
        "epoch_seconds": epoch_seconds,
        "median_epoch_seconds": statistics.median(epoch_seconds),
        "eval_seconds": eval_seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mib": peak_gpu,
        "recall@20": result["recall@20"],
        "ndcg@20": result["ndcg@20"],
        "parameters": sum(p.numel() for p in model_obj.parameters()),
    }


def _run_child(model: str, args: argparse.Namespace, overrides: Dict[str, Any]) -> Dict[str, Any]:
    command = [
        sys.executable, "-m", "recbole_kgin.benchmark", "--child", model,
        "--dataset", args.dataset, "--epochs", str(args.epochs),
        "--overrides", json.dumps(overrides),
    ]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        tail = completed.stderr.strip().splitlines()[-1:] or ["no output"]
        raise SystemExit(f"error: benchmark of {model} failed: {tail[0]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def format_report(results: Sequence[Dict[str, Any]]) -> str:
    header = (
        f"{'model':<20} {'device':<7} {'s/epoch':>8} {'eval s':>7} {'peak RSS MiB':>12} "
        f"{'peak GPU MiB':>12} {'Recall@20':>9} {'NDCG@20':>8}  epochs (s)"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        gpu = f"{r['peak_gpu_mib']:.0f}" if r["peak_gpu_mib"] is not None else "-"
        epochs = ", ".join(f"{s:.2f}" for s in r["epoch_seconds"])
        lines.append(
            f"{r['model']:<20} {r['device']:<7} {r['median_epoch_seconds']:>8.2f} "
            f"{r['eval_seconds']:>7.2f} {r['peak_rss_mib']:>12.0f} {gpu:>12} "
            f"{r['recall@20']:>9.4f} {r['ndcg@20']:>8.4f}  {epochs}"
        )
    by_model = {r["model"]: r for r in results}
    ours = by_model.get("KGIN")
    for name in ("RecBoleKGIN", LEVELLED):
        theirs = by_model.get(name)
        if ours is None or theirs is None:
            continue
        lines.append(
            f"{name} / KGIN: epoch time x{theirs['median_epoch_seconds'] / ours['median_epoch_seconds']:.2f}, "
            f"eval time x{theirs['eval_seconds'] / ours['eval_seconds']:.2f}, "
            f"peak RSS x{theirs['peak_rss_mib'] / ours['peak_rss_mib']:.2f}; "
            f"Recall@20 {ours['recall@20']:.4f} vs {theirs['recall@20']:.4f}, "
            f"NDCG@20 {ours['ndcg@20']:.4f} vs {theirs['ndcg@20']:.4f} (ours vs {name})"
        )
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recbole_kgin.benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--data_path", default=None, help="folder that contains <dataset>/")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs per model (>= 2)")
    parser.add_argument(
        "--models", default=",".join(MODELS),
        help=f"comma-separated, from KGIN, RecBoleKGIN, {LEVELLED}",
    )
    parser.add_argument("--gpu_id", default=None, help="RecBole gpu_id; '' forces CPU")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--overrides", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child, args.dataset, args.epochs, json.loads(args.overrides))))
        return 0
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (the median needs two epochs)")
    overrides: Dict[str, Any] = {}
    if args.data_path:
        overrides["data_path"] = args.data_path
    if args.gpu_id is not None:
        overrides["gpu_id"] = args.gpu_id
    results = [_run_child(model, args, overrides) for model in args.models.split(",")]
    print(f"dataset {args.dataset}, {args.epochs} epochs, {results[0]['batches_per_epoch']} batches/epoch, "
          f"settings {json.dumps({k: v for k, v in SHARED_SETTINGS.items() if k not in ('show_progress', 'state')})}")
    print(format_report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
