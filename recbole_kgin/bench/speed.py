"""Speed, memory and quality of our KGIN against RecBole's built-in KGIN.

    python -m recbole_kgin.bench.speed --dataset ml-1m --data_path=DIR --epochs 3
    python -m recbole_kgin.bench.speed --dataset lastfm --data_path=DIR --busy none,torch,python,kgin
    python -m recbole_kgin.bench.speed --synthetic amazon-book --epochs 1 --recbole_batches 20

Each model trains in its own subprocess (so peak RSS is its own) with identical
hyper-parameters, through the trainer a user gets (ours: KGINTrainer; RecBole's:
KGTrainer, which also samples KG triples every batch), for the same number of
epochs without early stopping. Printed per model: seconds per training epoch
(median over epochs; with a batch limit, the median batch times the batches of an
epoch, marked ``~`` as extrapolated), seconds for one full-ranking evaluation of the
test set, seconds to load the dataset and build loaders and model, peak RSS, the
threads used, test Recall@20 / NDCG@20 after those epochs; then the ratios.

Threads (``--threads``): ``auto`` gives our KGIN its default policy (the CPUs it may
use, governed by load: :mod:`recbole_kgin.runtime.threads`); RecBole's KGIN runs as RecBole
runs it, at a fixed count (torch's default, or ``--threads`` where a number).
``--busy`` repeats everything beside each competing load
(:mod:`recbole_kgin.bench.busy_load`); ``none`` is the quiet machine.
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

from recbole_kgin.bench.busy_load import LOADS, RunningLoad, run_load
from recbole_kgin.bench.provenance import command_line, header, measured_on
from recbole_kgin.bench.settings import SHARED_SETTINGS

MODELS = ("KGIN", "RecBoleKGIN")
# RecBole's KGIN given the runtime settings KGINTrainer uses (glibc malloc reuse, fused
# Adam), to show how much of the gap is the model's computation itself.
LEVELLED = "RecBoleKGIN+runtime"
QUIET = "none"


class _EnoughBatches(Exception):
    """Ends an epoch early once the batch limit is reached."""


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_overrides(model: str, threads: str) -> Dict[str, Any]:
    """Thread settings per model: ours governed (``auto``) or capped; RecBole's fixed."""
    ours = model == "KGIN"
    settings: Dict[str, Any] = {} if ours else {"thread_governor": False}
    if threads != "auto":
        settings["cpu_threads"] = int(threads)
    return settings


def measure(
    model: str, dataset: str, epochs: int, overrides: Dict[str, Any], batches: Optional[int] = None
) -> Dict[str, Any]:
    """Train ``model`` for ``epochs`` epochs (each cut after ``batches`` batches where
    given) in this process, evaluate once on the test set, and measure it."""
    from recbole.utils import init_seed

    from recbole_kgin.config import Config
    from recbole_kgin.runtime.cpu_memory import keep_freed_memory_for_reuse
    from recbole_kgin.quick_start import build

    levelled = model == LEVELLED
    start = time.perf_counter()
    config = Config(model.split("+")[0], dataset, config_dict={**SHARED_SETTINGS, **overrides})
    init_seed(config["seed"], config["reproducibility"])
    _, (train_data, _, test_data), model_obj, trainer = build(config, saved=False)
    load_seconds = time.perf_counter() - start
    if levelled:
        keep_freed_memory_for_reuse()
        trainer.optimizer = torch.optim.Adam(model_obj.parameters(), lr=config["learning_rate"], fused=True)
    device = config["device"]
    stamps: List[float] = []
    threads_seen: List[int] = []
    check_nan = trainer._check_nan

    def timed_check(loss) -> None:
        check_nan(loss)
        _synchronize(device)
        stamps.append(time.perf_counter())
        threads_seen.append(torch.get_num_threads())
        if batches is not None and len(stamps) >= batches:
            raise _EnoughBatches

    trainer._check_nan = timed_check
    epoch_seconds: List[float] = []
    batch_seconds: List[float] = []
    for epoch in range(epochs):
        stamps.clear()
        _synchronize(device)
        start = time.perf_counter()
        try:
            trainer._train_epoch(train_data, epoch, show_progress=False)
            epoch_seconds.append(time.perf_counter() - start)
        except _EnoughBatches:
            pass
        batch_seconds += [b - a for a, b in zip([start] + stamps[:-1], stamps)]
    batches_per_epoch = len(train_data)
    extrapolated = not epoch_seconds
    if extrapolated:
        epoch_seconds = [statistics.median(batch_seconds) * batches_per_epoch]
    _synchronize(device)
    start = time.perf_counter()
    result = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    _synchronize(device)
    eval_seconds = time.perf_counter() - start
    peak_gpu = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {
        "model": model,
        "device": str(device),
        "batches_per_epoch": batches_per_epoch,
        "batches_timed": len(batch_seconds),
        "median_batch_seconds": statistics.median(batch_seconds),
        "extrapolated": extrapolated,
        "epoch_seconds": epoch_seconds,
        "median_epoch_seconds": statistics.median(epoch_seconds),
        "eval_seconds": eval_seconds,
        "load_seconds": load_seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mib": peak_gpu,
        "threads_min": min(threads_seen),
        "threads_max": max(threads_seen),
        "threads_mean": statistics.mean(threads_seen),
        "recall@20": None if extrapolated else result["recall@20"],
        "ndcg@20": None if extrapolated else result["ndcg@20"],
        "parameters": sum(p.numel() for p in model_obj.parameters()),
    }


def run_child(
    model: str,
    dataset: str,
    epochs: int,
    threads: str,
    overrides: Dict[str, Any],
    batches: Optional[int],
    environment: Optional[Dict[str, str]] = None,
) -> Dict[str, Any]:
    """:func:`measure` in a fresh process (its peak RSS its own), with ``environment``."""
    command = [
        sys.executable, "-m", "recbole_kgin.bench.speed", "--child", model,
        "--dataset", dataset, "--epochs", str(epochs),
        "--overrides", json.dumps({**overrides, **model_overrides(model, threads)}),
    ]  # fmt: skip
    if batches is not None:
        command += ["--batches", str(batches)]
    completed = subprocess.run(command, capture_output=True, text=True, env=environment)
    if completed.returncode != 0:
        tail = completed.stderr.strip().splitlines()[-1:] or ["no output"]
        raise SystemExit(f"error: benchmark of {model} failed: {tail[0]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _number(value: Optional[float], spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_report(results: Sequence[Dict[str, Any]]) -> str:
    """One table over all conditions, then the ratios RecBole / ours per condition and
    busy / quiet per model. ``~``: extrapolated from the median batch."""
    header = (
        f"{'load':<7} {'model':<20} {'device':<6} {'threads':>7} {'s/epoch':>10} {'s/batch':>8} "
        f"{'eval s':>7} {'load s':>7} {'RSS MiB':>8} {'Recall@20':>9} {'NDCG@20':>8}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        threads = f"{r['threads_min']}-{r['threads_max']}" if r["threads_min"] != r["threads_max"] else str(r["threads_min"])
        epoch = ("~" if r["extrapolated"] else "") + f"{r['median_epoch_seconds']:.2f}"
        lines.append(
            f"{r.get('busy', QUIET):<7} {r['model']:<20} {r['device']:<6} {threads:>7} {epoch:>10} "
            f"{r['median_batch_seconds']:>8.4f} {r['eval_seconds']:>7.2f} {r['load_seconds']:>7.1f} "
            f"{r['peak_rss_mib']:>8.0f} {_number(r['recall@20'], '9.4f'):>9} {_number(r['ndcg@20'], '8.4f'):>8}"
        )
    keyed = {(r.get("busy", QUIET), r["model"]): r for r in results}
    for (busy, name), theirs in keyed.items():
        ours = keyed.get((busy, "KGIN"))
        if name == "KGIN" or ours is None:
            continue
        lines.append(
            f"[{busy}] {name} / KGIN: epoch time x{theirs['median_epoch_seconds'] / ours['median_epoch_seconds']:.2f}, "
            f"eval time x{theirs['eval_seconds'] / ours['eval_seconds']:.2f}, "
            f"peak RSS x{theirs['peak_rss_mib'] / ours['peak_rss_mib']:.2f}; "
            f"Recall@20 {_number(ours['recall@20'], '.4f')} vs {_number(theirs['recall@20'], '.4f')}"
        )
    for (busy, name), loaded in keyed.items():
        quiet = keyed.get((QUIET, name))
        if busy == QUIET or quiet is None:
            continue
        lines.append(
            f"{name} beside {busy}: epoch x{loaded['median_epoch_seconds'] / quiet['median_epoch_seconds']:.2f} "
            f"its quiet epoch"
        )
    return "\n".join(lines)


def _load_kinds(value: str) -> List[str]:
    kinds = [kind.strip() for kind in value.split(",") if kind.strip()]
    unknown = [kind for kind in kinds if kind not in (QUIET, *LOADS)]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown load {unknown[0]!r}: choose from {QUIET}, {', '.join(LOADS)}")
    return kinds


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recbole_kgin.bench.speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--data_path", default=None, help="folder that contains <dataset>/")
    parser.add_argument("--synthetic", default=None, metavar="SHAPE",
                        help="generate (once) and use a synthetic dataset of a KGIN paper shape: "
                             "amazon-book, last-fm, alibaba-ifashion; --scale sizes it")
    parser.add_argument("--scale", type=float, default=1.0, help="with --synthetic: multiple of the paper's sizes, in (0, 16] (1: the paper's)")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs per model")
    parser.add_argument("--batches", type=int, default=None, help="cut every model's epochs after this many batches")
    parser.add_argument("--recbole_batches", type=int, default=None,
                        help="cut RecBole's KGIN's epochs after this many batches (extrapolated, marked ~)")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from KGIN, RecBoleKGIN, {LEVELLED}")
    parser.add_argument("--threads", default="auto", help="auto (default) or a number of threads for every model")
    parser.add_argument("--busy", type=_load_kinds, default=[QUIET],
                        help=f"comma-separated loads to run beside the models: {QUIET} (quiet), {', '.join(LOADS)}")
    parser.add_argument("--eval_batch_size", type=int, default=None,
                        help=f"RecBole's eval_batch_size (default {SHARED_SETTINGS['eval_batch_size']}); a full-ranking "
                             "batch holds eval_batch_size // items users, so large item sets want more")
    parser.add_argument("--output", default=None, help="append every result as a JSON line to this file")
    parser.add_argument("--gpu_id", default=None, help="RecBole gpu_id; '' forces CPU")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--load", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--overrides", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.load:
        run_load(args.load, args.dataset, json.loads(args.overrides))
        return 0
    if args.child:
        result = measure(args.child, args.dataset, args.epochs, json.loads(args.overrides), args.batches)
        print(json.dumps(result))
        return 0
    if args.epochs < 1:
        parser.error("--epochs must be >= 1")
    if args.threads != "auto" and not (args.threads.isdigit() and int(args.threads) > 0):
        parser.error("--threads must be auto or a positive integer")
    overrides: Dict[str, Any] = {}
    if args.synthetic:
        from recbole_kgin.data.synthetic import ensure_synthetic

        args.dataset, data_path = ensure_synthetic(args.synthetic, args.scale, args.data_path)
        overrides["data_path"] = str(data_path)
    elif args.data_path:
        overrides["data_path"] = args.data_path
    if args.gpu_id is not None:
        overrides["gpu_id"] = args.gpu_id
    if args.eval_batch_size is not None:
        overrides["eval_batch_size"] = args.eval_batch_size
    results = []
    command, when = command_line("recbole_kgin.bench.speed", argv), measured_on()
    for busy in args.busy:
        with RunningLoad(None if busy == QUIET else busy, args.dataset, json.dumps(overrides)):
            for model in args.models.split(","):
                batches = args.recbole_batches if model != "KGIN" and args.recbole_batches else args.batches
                result = {"busy": busy, "dataset": args.dataset, **run_child(model, args.dataset, args.epochs, args.threads, overrides, batches),
                          "command": command, "measured": when}
                results.append(result)
                if args.output:
                    with open(args.output, "a", encoding="utf-8") as handle:
                        handle.write(json.dumps(result) + "\n")
    print("\n".join(header(command, when)))
    print(f"dataset {args.dataset}, {args.epochs} epoch(s), {results[0]['batches_per_epoch']} batches/epoch, "
          f"threads {args.threads}, settings "
          f"{json.dumps({k: overrides.get(k, v) for k, v in SHARED_SETTINGS.items() if k not in ('show_progress', 'state')})}")
    print(format_report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
