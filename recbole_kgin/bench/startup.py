"""Start-up before the first batch, first and second: each run in a fresh process times
its Config, the dataset and loaders (built, or read back from the startup cache), and
the model and trainer; the first run starts with an empty cache, the second finds
what the first kept.

    python -m recbole_kgin.bench.startup --synthetic amazon-book
    python -m recbole_kgin.bench.startup --dataset lastfm --data_path=DIR

Prints the command, date and machine, then one row per run. ``--output F`` appends
each run as a JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

from recbole_kgin.bench.provenance import command_line, header, measured_on
from recbole_kgin.bench.settings import SHARED_SETTINGS
from recbole_kgin.common.resources import CACHE_VARIABLE, user_cache_dir

PHASES = ("config", "data", "model")
COLUMNS = (*PHASES, "process")  # process: the child's whole life, interpreter and torch included


def measure(model: str, dataset: str, overrides: Dict[str, Any]) -> Dict[str, float]:
    """Seconds of each phase of one start-up in this process: the Config, the dataset
    and loaders, the model and trainer."""
    from recbole.utils import init_seed

    from recbole_kgin.config import Config
    from recbole_kgin.quick_start import prepare_data
    from recbole_kgin.utils import get_model, get_trainer

    entries = len(list(user_cache_dir("startup").glob("*.entry")))  # what the run may read back
    stamps = [time.perf_counter()]
    config = Config(model, dataset, config_dict={**SHARED_SETTINGS, **overrides})
    init_seed(config["seed"], config["reproducibility"])
    stamps.append(time.perf_counter())
    _, (train_data, _, _) = prepare_data(config)
    stamps.append(time.perf_counter())
    init_seed(config["seed"], config["reproducibility"])
    built = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    get_trainer(config["MODEL_TYPE"], config["model"])(config, built)
    stamps.append(time.perf_counter())
    return {**{phase: stamps[index + 1] - stamps[index] for index, phase in enumerate(PHASES)}, "entries_before": entries}


def format_rows(rows: Sequence[Dict[str, Any]]) -> List[str]:
    head = f"{'run':<7} {'dataset':<28} " + " ".join(f"{column + ' s':>9}" for column in COLUMNS)
    lines = [head, "-" * len(head)]
    for row in rows:
        cells = " ".join(f"{row['seconds'][column]:>9.1f}" for column in COLUMNS)
        lines.append(f"{row['run']:<7} {row['dataset']:<28} {cells}")
    return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recbole_kgin.bench.startup", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--data_path", default=None, help="folder that contains <dataset>/")
    parser.add_argument("--synthetic", default=None, metavar="SHAPE", help="a KGIN paper shape: amazon-book, last-fm, alibaba-ifashion")
    parser.add_argument("--scale", type=float, default=1.0, help="with --synthetic: multiple of the paper's sizes, in (0, 16]")
    parser.add_argument("--model", default="KGIN")
    parser.add_argument("--eval_batch_size", type=int, default=6_400_000,
                        help="RecBole's eval_batch_size (a data setting: part of the cache's key)")
    parser.add_argument("--output", default=None, help="append every run as a JSON line to this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    overrides: Dict[str, Any] = {"eval_batch_size": args.eval_batch_size}
    if args.synthetic:
        from recbole_kgin.data.synthetic import ensure_synthetic

        args.dataset, data_path = ensure_synthetic(args.synthetic, args.scale, args.data_path)
        overrides["data_path"] = str(data_path)
    elif args.data_path:
        overrides["data_path"] = args.data_path
    if args.child:
        print(json.dumps(measure(args.model, args.dataset, overrides)))
        return 0
    command, when = command_line("recbole_kgin.bench.startup", argv), measured_on()
    rows = []
    with tempfile.TemporaryDirectory(prefix="recbole-kgin-startup-") as cache:
        for run in ("first", "second"):
            child = [sys.executable, "-m", "recbole_kgin.bench.startup", "--child", "--dataset", args.dataset,
                     "--model", args.model, "--eval_batch_size", str(args.eval_batch_size)]  # fmt: skip
            if "data_path" in overrides:
                child += ["--data_path", overrides["data_path"]]
            started = time.perf_counter()
            completed = subprocess.run(child, capture_output=True, text=True, env={**os.environ, CACHE_VARIABLE: cache})
            process = time.perf_counter() - started
            if completed.returncode != 0:
                print(completed.stderr[-2000:], file=sys.stderr)
                return completed.returncode
            seconds = {**json.loads(completed.stdout.strip().splitlines()[-1]), "process": process}
            row = {"run": run, "dataset": args.dataset, "model": args.model, "seconds": seconds, "command": command,
                   "measured": when}  # fmt: skip
            rows.append(row)
            if args.output:
                with open(args.output, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(row) + "\n")
    print("\n".join(header(command, when) + format_rows(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
