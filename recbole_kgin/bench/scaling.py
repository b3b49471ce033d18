"""How cost grows with the data: a paper shape at several scales (users, items,
interactions, entities and triples scaled together, degrees heavy-tailed as
``--synthetic`` makes them), each measured in fresh processes:

- ours: first start-up (dataset build, loaders, model; the startup cache written), a
  training epoch (from ``--batches`` batches, extrapolated where fewer than the epoch's),
  one full-ranking evaluation, peak RSS; then a second start-up that reads the cache;
- RecBole's KGIN up to ``--recbole_max_scale``: an epoch from ``--recbole_batches``
  batches, extrapolated, its evaluation and peak RSS.

    python -m recbole_kgin.bench.scaling --scales 0.25,0.5,1,2,4,8 --threads 1 \\
        --output benchmarks/scaling-amazon-book.jsonl --plot docs/_static/scaling-amazon-book.png

Each scale's record is appended to ``--output`` as it lands; a rerun measures only the
scales missing there. Prints the table and the fitted exponents (the slope of each cost
against interactions + triples on log-log axes) and draws them with ``--plot``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from recbole_kgin.bench.provenance import command_line, header, measured_on
from recbole_kgin.bench.speed import run_child
from recbole_kgin.common.resources import CACHE_VARIABLE
from recbole_kgin.data.synthetic import PAPER_SHAPES, ensure_synthetic

SERIES = {  # column -> (record path, label)
    "epoch_s": (("kgin", "median_epoch_seconds"), "ours: epoch"),
    "eval_s": (("kgin", "eval_seconds"), "ours: evaluation"),
    "first_start_s": (("kgin", "load_seconds"), "ours: first start-up"),
    "second_start_s": (("second_start", "total"), "ours: second start-up"),
    "rss_mib": (("kgin", "peak_rss_mib"), "ours: peak RSS (MiB)"),
    "recbole_epoch_s": (("recbole", "median_epoch_seconds"), "RecBole's KGIN: epoch"),
    "recbole_rss_mib": (("recbole", "peak_rss_mib"), "RecBole's KGIN: peak RSS (MiB)"),
}


def value(record: Dict[str, Any], path: Sequence[str]) -> Optional[float]:
    found: Any = record
    for key in path:
        if not isinstance(found, dict) or found.get(key) is None:
            return None
        found = found[key]
    return float(found)


def fitted_exponent(sizes: Sequence[float], costs: Sequence[float]) -> Optional[float]:
    """The slope of log(cost) against log(size) by least squares; None under 2 points."""
    points = [(math.log(size), math.log(cost)) for size, cost in zip(sizes, costs) if cost and cost > 0]
    if len(points) < 2:
        return None
    xs, ys = zip(*points)
    return float(np.polyfit(xs, ys, 1)[0])


def second_start(dataset: str, overrides: Dict[str, Any], cache: str) -> Dict[str, float]:
    """bench.startup's child: a start-up in a fresh process with ``cache``, which the
    first run of the same data settings filled."""
    import subprocess

    command = [sys.executable, "-m", "recbole_kgin.bench.startup", "--child", "--dataset", dataset,
               "--data_path", overrides["data_path"], "--eval_batch_size", str(overrides["eval_batch_size"])]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, env={**os.environ, CACHE_VARIABLE: cache})
    if completed.returncode != 0:
        raise SystemExit(f"error: second start-up of {dataset} failed: {completed.stderr.strip()[-300:]}")
    seconds = json.loads(completed.stdout.strip().splitlines()[-1])
    return {**seconds, "total": seconds["config"] + seconds["data"] + seconds["model"]}


def measure_scale(args: argparse.Namespace, scale: float) -> Dict[str, Any]:
    started = time.perf_counter()
    dataset, data_path = ensure_synthetic(args.shape, scale, args.data_path)
    generated = time.perf_counter() - started
    shape = PAPER_SHAPES[args.shape].scaled(scale)
    overrides = {"data_path": str(data_path), "eval_batch_size": args.eval_users * shape.items}
    record: Dict[str, Any] = {"shape": args.shape, "scale": scale, "dataset": dataset, "threads": args.threads,
                              "users": shape.users, "items": shape.items, "interactions": shape.interactions,
                              "entities": shape.entities, "relations": shape.relations, "triples": shape.triples,
                              "size": shape.interactions + shape.triples, "generate_seconds": generated}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="recbole-kgin-scaling-") as cache:
        environment = {**os.environ, CACHE_VARIABLE: cache}
        record["kgin"] = run_child("KGIN", dataset, 1, args.threads, overrides, args.batches, environment)
        record["second_start"] = second_start(dataset, overrides, cache)
    record["recbole"] = None
    if scale <= args.recbole_max_scale:
        settings = {**overrides, "startup_cache": False}
        record["recbole"] = run_child("RecBoleKGIN", dataset, 1, args.threads, settings, args.recbole_batches)
    return record


def table(records: Sequence[Dict[str, Any]]) -> List[str]:
    columns = ["scale", "size", *SERIES]
    lines = [" | ".join(columns), " | ".join("---" for _ in columns)]
    for record in records:
        cells = [f"{record['scale']:g}", f"{record['size']:,}"]
        cells += ["-" if value(record, path) is None else f"{value(record, path):,.1f}" for path, _ in SERIES.values()]
        lines.append(" | ".join(cells))
    sizes = [record["size"] for record in records]
    exponents = []
    for column, (path, _) in SERIES.items():
        slope = fitted_exponent(sizes, [value(record, path) or 0 for record in records])
        exponents.append("-" if slope is None else f"{slope:.2f}")
    lines.append(" | ".join(["exponent", ""] + exponents))
    return lines


def plot(records: Sequence[Dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (times, memory) = plt.subplots(1, 2, figsize=(11, 4.2))
    for column, (field, label) in SERIES.items():
        points = [(record["size"], value(record, field)) for record in records if value(record, field)]
        if not points:
            continue
        sizes, costs = zip(*points)
        slope = fitted_exponent(sizes, costs)
        axis = memory if column.endswith("rss_mib") else times
        axis.plot(sizes, costs, marker="o", label=f"{label} (slope {slope:.2f})" if slope is not None else label)
    for axis, ylabel in ((times, "seconds"), (memory, "peak RSS, MiB")):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("interactions + triples")
        axis.set_ylabel(ylabel)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recbole_kgin.bench.scaling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="amazon-book", choices=sorted(PAPER_SHAPES))
    parser.add_argument("--scales", default="0.25,0.5,1,2,4,8", help="comma-separated multiples of the paper's sizes")
    parser.add_argument("--data_path", default=None, help="where the synthetic datasets go (default: the user's cache)")
    parser.add_argument("--threads", default="1", help="auto or a number of threads for every model")
    parser.add_argument("--batches", type=int, default=20, help="training batches timed per scale (ours)")
    parser.add_argument("--recbole_batches", type=int, default=3, help="training batches timed per scale (RecBole's KGIN)")
    parser.add_argument("--recbole_max_scale", type=float, default=1.0, help="largest scale RecBole's KGIN is measured at")
    parser.add_argument("--eval_users", type=int, default=256, help="users per full-ranking evaluation batch")
    parser.add_argument("--output", required=True, help="JSON lines, one per scale; scales already there are not redone")
    parser.add_argument("--plot", default=None, help="write the log-log figure here (PNG)")
    args = parser.parse_args(argv)
    scales = [float(part) for part in args.scales.split(",")]
    output = Path(args.output)
    done = [json.loads(line) for line in output.read_text().splitlines() if line.strip()] if output.is_file() else []
    command, when = command_line("recbole_kgin.bench.scaling", argv), measured_on()
    for scale in scales:
        if any(record["scale"] == scale and record["shape"] == args.shape for record in done):
            continue
        record = {**measure_scale(args, scale), "command": command, "measured": when}
        done.append(record)
        output.parent.mkdir(parents=True, exist_ok=True)
        with open(output, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        print(f"scale {scale:g}: measured", file=sys.stderr, flush=True)
    records = sorted((record for record in done if record["shape"] == args.shape), key=lambda record: record["scale"])
    print("\n".join(header(command, when) + table(records)))
    if args.plot:
        plot(records, Path(args.plot), f"{args.shape} shape, threads {args.threads}; {when}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
