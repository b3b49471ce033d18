"""What a tuned comparison would cost on a dataset: every model's measured epoch, and
the core-hours that follow from the epochs a finished comparison trained.

    python -m recbole_kgin.bench.comparison_cost --dataset ml-1m --data_path=DIR \\
        --models KGIN,BPR,LightGCN,CKE,KGCN,KGAT --epochs_like comparisons/lastfm

For each model, under the tuned comparison's settings (:data:`PROTOCOL`, the model's
packaged defaults, one thread), it builds the dataset and model (timed: ``load s``),
trains one epoch and validates once (``train s``, ``valid s``; the first epoch, as
every trial has one). The estimate assumes the dataset needs as many epochs per model
as the comparison in ``--epochs_like`` trained (its ``tuned.json``: every trial's
epochs, every run's): ``core h = epochs x (train s + valid s) / 3600``, plus the runs
on ``--split_seeds`` more splits for two models (KGIN and the slower of the others, as
the best other model is not known in advance). A model that comparison has not
finished takes the median epochs of those it has, marked so. Prints a table per
comparison named (comma-separated); with ``--output`` appends them as JSON lines.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from recbole_kgin.bench.provenance import command_line, header, measured_on


def measure(model: str, dataset: str, data_path: Optional[str], config_files: Optional[List[str]] = None) -> Dict[str, float]:
    """``{"load s", "train s", "valid s"}`` of one model under the comparison's settings
    (and ``config_files``, which apply to every model, as in the comparison)."""
    from recbole_kgin.experiments.compare import configs_for
    from recbole_kgin.experiments.tuned_compare import PROTOCOL
    from recbole_kgin.quick_start import build

    settings = {**PROTOCOL, "epochs": 1, "show_progress": False, "state": "WARNING", "cpu_threads": 1,
                "thread_governor": False, "startup_cache": False}  # fmt: skip
    if data_path:
        settings["data_path"] = data_path
    start = time.perf_counter()
    entry = configs_for([model], dataset, config_files, settings)[model]
    if entry.error:
        raise SystemExit(f"{model}: {entry.error}")
    _, (train_data, valid_data, _), _, trainer = build(entry.config, saved=False)
    loaded = time.perf_counter()
    torch.set_num_threads(1)
    trainer._train_epoch(train_data, 0, show_progress=False)
    trained = time.perf_counter()
    trainer._valid_epoch(valid_data, show_progress=False)
    validated = time.perf_counter()
    return {"load s": loaded - start, "train s": trained - loaded, "valid s": validated - trained}


def epochs_trained(comparison: Path) -> Dict[str, Dict[str, float]]:
    """Per finished model of a tuned comparison's ``tuned.json``: ``trial epochs`` (every
    trial's), ``run epochs`` (its runs on the search's split) and ``epochs per run``."""
    document = json.loads((comparison / "tuned.json").read_text())
    spent: Dict[str, Dict[str, float]] = {}
    for summary in document["models"]:
        runs = [row for row in document["runs"] if row["model"] == summary["model"] and row["epochs_run"]]
        main = [row for row in runs if row["split_seed"] == min(r["split_seed"] for r in runs)] if runs else []
        if not main or summary.get("error"):
            continue
        run_epochs = sum(row["epochs_run"] for row in main)
        spent[summary["model"]] = {"trial epochs": summary["trial_epochs"], "run epochs": run_epochs,
                                   "epochs per run": run_epochs / len(main)}  # fmt: skip
    return spent


def estimate(
    measured: Dict[str, Dict[str, float]], spent: Dict[str, Dict[str, float]], split_seeds: int, seeds: int
) -> List[Dict[str, Any]]:
    """One row per measured model: its epochs (as in ``spent``, else the median over
    ``spent``), and the core-hours of its search, its runs and, for KGIN and the most
    expensive other model, its runs on ``split_seeds`` more splits."""
    median = {key: statistics.median(entry[key] for entry in spent.values()) for key in
              ("trial epochs", "run epochs", "epochs per run")} if spent else {}  # fmt: skip
    rows = []
    for model, seconds in measured.items():
        epochs = spent.get(model, median)
        per_epoch = seconds["train s"] + seconds["valid s"]
        rows.append({
            "model": model, **seconds,
            "epochs from": "measured comparison" if model in spent else "median of the others",
            "trial epochs": round(epochs.get("trial epochs", 0)), "run epochs": round(epochs.get("run epochs", 0)),
            "search h": epochs.get("trial epochs", 0) * per_epoch / 3600,
            "runs h": epochs.get("run epochs", 0) * per_epoch / 3600,
            "splits h": 0.0, "epochs per run": epochs.get("epochs per run", 0),
        })  # fmt: skip
    others = [row for row in rows if row["model"] != "KGIN"]
    splitting = [row for row in rows if row["model"] == "KGIN"]
    if others:
        splitting.append(max(others, key=lambda row: row["search h"] + row["runs h"]))
    for row in splitting:
        per_epoch = row["train s"] + row["valid s"]
        row["splits h"] = split_seeds * seeds * row["epochs per run"] * per_epoch / 3600
    for row in rows:
        row["total h"] = row["search h"] + row["runs h"] + row["splits h"]
    return rows


def format_rows(rows: List[Dict[str, Any]]) -> str:
    columns = ["model", "load s", "train s", "valid s", "epochs from", "trial epochs", "run epochs", "search h",
               "runs h", "splits h", "total h"]  # fmt: skip
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [(f"{row[c]:.2f}" if c.endswith(" s") else f"{row[c]:.1f}") if isinstance(row[c], float) else str(row[c])
                 for c in columns]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(f"| all | | | | | | | | | | {sum(row['total h'] for row in rows):.1f} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--data_path", default=None, help="folder that contains <dataset>/")
    parser.add_argument("--models", default="KGIN,BPR,LightGCN,CKE,KGCN,KGAT")
    parser.add_argument("--config_files", default=None, help="space-separated property files for every model")
    parser.add_argument("--epochs_like", required=True,
                        help="a tuned comparison's output folder (its tuned.json); comma-separated: a table for each")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--split_seeds", type=int, default=2)
    parser.add_argument("--output", default=None, help="append the rows as JSON lines to this file")
    args = parser.parse_args(argv)

    command, when = command_line("recbole_kgin.bench.comparison_cost", argv), measured_on()
    likes = [Path(folder) for folder in args.epochs_like.split(",")]
    spent = {folder: epochs_trained(folder) for folder in likes}  # read before the minutes of measuring
    files = args.config_files.split() if args.config_files else None
    measured = {model: measure(model, args.dataset, args.data_path, files) for model in args.models.split(",")}
    print("\n".join(header(command, when)))
    for folder in likes:
        rows = estimate(measured, spent[folder], args.split_seeds, args.seeds)
        print(f"{args.dataset}: one epoch and one validation per model at one thread; epochs as in {folder}")
        print(format_rows(rows))
        if args.output:
            with open(args.output, "a", encoding="utf-8") as handle:
                for row in rows:
                    record = {"command": command, "measured": when, "dataset": args.dataset, "epochs_like": str(folder)}
                    handle.write(json.dumps({**record, **row}) + "\n")


if __name__ == "__main__":
    main()
