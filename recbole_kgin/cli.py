"""Command line of ``recbole-kgin``, ``python -m recbole_kgin`` and ``run_recbole_kgin.py``
(one CLI, three ways in), following RecBole's ``run_recbole.py``.

``--model``, ``--dataset`` and ``--config_files "a.yaml b.yaml"`` as in RecBole; every
other ``--key=value`` or ``--key value`` overrides that config key (a value that starts
with ``--`` is refused: write it as ``--key=--value``). Values are typed here, once, for every
action (plain run, comparison, search, check): Python literals where they parse
(``--epochs=1 --learning_rate=1e-3 --topk=[10,20] --reproducibility=False``),
``true``/``false`` in any case as booleans, anything else as a string.
Bad input ends with one ``error: ...`` line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from recbole_kgin.experiments.claims import CLAIM_TIMEOUT
from recbole_kgin.common.errors import UserInputError
from recbole_kgin.common.literals import typed_value
from recbole_kgin.runtime.resumable import TrainingDiverged

DEFAULT_MODEL = "KGIN"
DEFAULT_DATASET = "ml-100k"


def _program_name() -> str:
    """How the user called us: recbole-kgin, run_recbole_kgin.py or python -m recbole_kgin."""
    called = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if called in ("", "__main__.py", "-c"):
        return "python -m recbole_kgin"
    return called


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_program_name(),
        description="Train and evaluate KGIN (or any RecBole model) on RecBole atomic files.",
        epilog="Any other --key=value (or --key value) overrides that config key, e.g. --epochs=1 "
        "--data_path=DIR --learning_rate 1e-3.",
        allow_abbrev=False,
    )
    parser.add_argument(
        "--model", "-m", default=None,
        help="model name (default: KGIN; with --tune, the space file's name when it is a model)",
    )
    parser.add_argument(
        "--dataset", "-d", default=None, help="dataset name (default: ml-100k, embedded)"
    )
    parser.add_argument(
        "--config_files", default=None, help='space-separated YAML files, e.g. "a.yaml b.yaml"'
    )
    compare = parser.add_argument_group("comparison (one protocol, several models)")
    compare.add_argument(
        "--compare", default=None, metavar="M1,M2,...",
        help="train each model in turn and tabulate test metrics, e.g. KGIN,KGAT,KGCN,CKE",
    )
    compare.add_argument(
        "--tune_trials", type=int, default=None, metavar="N",
        help="tuned comparison: search every model with N Ray Tune trials (same budget), retrain the best over --seeds",
    )
    compare.add_argument("--seeds", type=int, default=5, help="tuned comparison: runs (seeds) per best configuration (default 5)")
    compare.add_argument(
        "--split_seeds", type=int, default=2,
        help="tuned comparison: more splits the first model and the best other run their seeds on (default 2)",
    )
    compare.add_argument(
        "--tune_epochs", type=int, default=None,
        help="tuned comparison: epoch cap of a search trial (default: --max_epochs); early stopping applies inside",
    )
    compare.add_argument(
        "--max_epochs", type=int, default=500,
        help="tuned comparison: epoch cap of a seed run (early stopping should end it first; runs that hit it are flagged)",
    )
    compare.add_argument(
        "--claim_timeout", type=float, default=CLAIM_TIMEOUT, metavar="SECONDS",
        help="tuned comparison: how long to wait for a unit another process holds (default a day)",
    )
    compare.add_argument(
        "--force", action="store_true",
        help="retrain models whose results are already there (with --convert, --recommend, --export: "
        "replace the output)",
    )
    explain = parser.add_argument_group("explanation of a trained KGIN")
    explain.add_argument("--explain", default=None, metavar="CHECKPOINT", help="a KGIN checkpoint (saved/KGIN-<time>.pth)")
    explain.add_argument("--user", default=None, help="user id (dataset token) to explain")
    explain.add_argument("--item", default=None, help="item id (token); default: the user's top recommendation")
    explain.add_argument(
        "--top", type=int, default=None,
        help="--explain: how many intents' relations, paths and items to list (default 5); "
        "--recommend: items per user (default 10)",
    )
    explain.add_argument("--intents", type=int, default=2, help="how many of the user's top intents rank the paths")
    explain.add_argument("--json", action="store_true", help="print JSON instead of text")
    use = parser.add_argument_group("recommendations and vectors of a trained model")
    use.add_argument(
        "--recommend", default=None, metavar="CHECKPOINT",
        help="write the top --top items of --users to --output (.csv or .parquet); any model RecBole ranks",
    )
    use.add_argument(
        "--users", default="all", metavar="all|FILE|U1,U2",
        help="--recommend: all users (default), a file with one user id per line, or ids separated by commas",
    )
    use.add_argument(
        "--exclude_seen", default="true", metavar="true|false",
        help="--recommend: leave out each user's training and validation items, as RecBole's test ranking "
        "does (default true)",
    )
    use.add_argument(
        "--export", default=None, metavar="CHECKPOINT",
        help="write a KGIN's user, item, entity, relation and intent vectors and intent attention to the "
        "folder --output (.npy, token files, README.md)",
    )
    tune = parser.add_argument_group("hyper-parameter search (Ray Tune)")
    tune.add_argument(
        "--tune", default=None, metavar="SPACE",
        help="a search space: a packaged one by model name (tuning/: KGIN, KGAT, KGCN, CKE, BPR, LightGCN, ...) or a YAML file",
    )
    tune.add_argument("--num_samples", type=int, default=10, help="trials to sample (grid entries multiply it)")
    tune.add_argument("--search", default="random", help="random (default; grid entries expanded), optuna, hyperopt")
    tune.add_argument(
        "--scheduler", default=None,
        help="asha (prunes on validation; default of --tune) or fifo (no pruning; default of a tuned comparison)",
    )
    tune.add_argument("--cpus_per_trial", type=float, default=1)
    tune.add_argument("--gpus_per_trial", type=float, default=0)
    tune.add_argument("--max_concurrent", type=int, default=None, help="trials at once (default: as resources allow)")
    tune.add_argument("--grace_period", type=int, default=1, help="epochs before ASHA may stop a trial")
    tune.add_argument(
        "--address", default=os.environ.get("RAY_ADDRESS"),
        help="attach to a Ray cluster (default: $RAY_ADDRESS, else a local Ray)",
    )
    tune.add_argument(
        "--data_on_nodes", default=None, choices=["ship", "shared"],
        help="how trials on other nodes get the dataset: ship it through Ray (default with --address) "
        "or read the same path on shared storage (default without); checked on every node first",
    )
    spread = parser.add_argument_group("one model across processes (RecBole's distributed training)")
    spread.add_argument("--nproc", type=int, default=1, help="training processes on this machine (Gloo on CPU, NCCL on GPUs)")
    spread.add_argument("--world_size", type=int, default=-1, help="processes on all machines (default: --nproc)")
    spread.add_argument("--ip", default="localhost", help="address of the machine with rank 0")
    spread.add_argument(
        "--port", type=int, default=None,
        help="its port for the process group (default: a free one; give the same on every machine)",
    )
    spread.add_argument("--group_offset", type=int, default=0, help="rank of this machine's first process")
    data = parser.add_argument_group("data and runs")
    data.add_argument("--check", action="store_true", help="check the dataset's atomic files and stop")
    data.add_argument("--convert", default=None, metavar="KGAT_DIR",
                      help="convert a KGAT/KGIN-format folder into atomic files named --dataset")
    data.add_argument("--valid_ratio", type=float, default=0.1,
                      help="--convert: share of each user's train items held out for validation")
    data.add_argument("--resume", default=None, metavar="CHECKPOINT",
                      help="continue a killed run from its .last.pth checkpoint in saved/")
    data.add_argument("--trust_checkpoint", action="store_true",
                      help="--resume/--explain/--recommend/--export: also read a checkpoint that needs full "
                      "unpickling (RecBole's own, older ones), which can run code: only for files you wrote or trust")
    parser.add_argument(
        "--output", default=None,
        help="output folder (comparison: results/compare-<dataset>; explanation: explanations/<checkpoint>; "
        "tuning: results/tune-<model>-<dataset>; conversion: ./dataset); --recommend: a .csv or .parquet "
        "file, --export: a folder (both required, never replaced without --force)",
    )
    return parser


def _override_pairs(extra: Sequence[str]) -> List[Tuple[str, str]]:
    """``["--epochs=1", "--cpu_threads", "2"]`` -> ``[("epochs", "1"), ("cpu_threads", "2")]``.

    A ``--key`` without ``=`` takes the next argument as its value unless that one
    starts with ``--`` (then the key has no value and is refused)."""
    pairs: List[Tuple[str, str]] = []
    position = 0
    while position < len(extra):
        arg = extra[position]
        position += 1
        if not arg.startswith("--") or arg in ("--", "--=") or arg.startswith("--="):
            raise UserInputError(
                f"unrecognised argument '{arg}': config overrides take the form --key=value or --key value"
            )
        if "=" in arg:
            key, value = arg[2:].split("=", 1)
        elif position < len(extra) and not extra[position].startswith("--"):
            key, value = arg[2:], extra[position]
            position += 1
        else:
            raise UserInputError(f"{arg} has no value: write {arg}=VALUE or {arg} VALUE")
        pairs.append((key, value))
    return pairs


def split_overrides(extra: Sequence[str]) -> Dict[str, Any]:
    """``["--epochs=1", "--learning_rate", "1e-3", ...]`` -> ``{"epochs": 1,
    "learning_rate": 0.001, ...}``, values typed by :func:`typed_value`."""
    overrides: Dict[str, Any] = {}
    for key, text in _override_pairs(extra):
        value = typed_value(text)
        if key in overrides and overrides[key] != value:
            raise UserInputError(f"--{key} given twice with different values: keep one")
        overrides[key] = value
    return overrides


def parse_args(argv: Optional[Sequence[str]]) -> Tuple[argparse.Namespace, Dict[str, Any]]:
    args, extra = build_parser().parse_known_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded in what a run writes
    args.dataset_given = args.dataset is not None
    if args.convert is None and args.dataset is None:
        args.dataset = DEFAULT_DATASET
    return args, split_overrides(extra)


def config_file_list(args: argparse.Namespace) -> Optional[List[str]]:
    return args.config_files.split() if args.config_files else None


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        args, overrides = parse_args(argv)
        for flag, action in ACTIONS:
            if getattr(args, flag):
                return action(args, overrides)
        if args.nproc > 1 or args.world_size > 0:
            from recbole_kgin.launch import run_distributed

            result = run_distributed(
                args.model or DEFAULT_MODEL, args.dataset, config_file_list(args), overrides,
                nproc=args.nproc, world_size=args.world_size, ip=args.ip, port=args.port,
                group_offset=args.group_offset,
            )  # fmt: skip
            if result is None:  # another machine holds rank 0
                print(f"{args.model or DEFAULT_MODEL} on {args.dataset}: ranks {args.group_offset}.. done; "
                      f"rank 0 ({args.ip}) reports the result")  # fmt: skip
                return 0
        else:
            from recbole_kgin.quick_start import run_recbole_kgin

            result = run_recbole_kgin(
                model=args.model or DEFAULT_MODEL,
                dataset=args.dataset,
                config_file_list=config_file_list(args),
                config_dict=overrides,
            )
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except TrainingDiverged as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    _print_result(f"{args.model or DEFAULT_MODEL} on {args.dataset}", result)
    return 0


def run() -> None:
    """Console-script entry point (``recbole-kgin``): :func:`main`, then exit with its status."""
    sys.exit(main())


def _print_result(title: str, result: Dict[str, Any]) -> None:
    print(title)
    print(f"best valid: {format_metrics(result['best_valid_result'])}")
    print(f"test:       {format_metrics(result['test_result'])}")


def _no_overrides(action: str, overrides: Dict[str, Any]) -> None:
    if overrides:
        raise UserInputError(f"{action} takes no config overrides (got --{next(iter(overrides))}=...)")


def _convert(args: argparse.Namespace, overrides: Dict[str, Any]) -> int:
    if not args.dataset:
        raise UserInputError("--convert needs --dataset <name for the converted dataset>")
    _no_overrides("--convert", overrides)
    from recbole_kgin.data.convert import convert_kgat

    output = args.output or "dataset"
    counts = convert_kgat(args.convert, args.dataset, output, args.force, args.valid_ratio)
    for name, count in counts.items():
        print(f"{name}: {count} rows")
    folder = os.path.join(output, args.dataset)
    print(f"written to {folder}; run: python run_recbole_kgin.py --dataset {args.dataset} "
          f"--data_path={output} --config_files {os.path.join(folder, args.dataset + '.yaml')}")
    return 0


def _check(args: argparse.Namespace, overrides: Dict[str, Any]) -> int:
    from recbole_kgin.config import Config
    from recbole_kgin.data.validate import validate_config

    config = Config(args.model or DEFAULT_MODEL, args.dataset, config_file_list(args), overrides)
    report = validate_config(config)
    for error in report.errors:
        print(f"error: {error}", file=sys.stderr)
    for warning in report.warnings:
        print(f"warning: {warning}")
    counts = ", ".join(f"{name} {count} rows" for name, count in report.counts.items())
    print(f"{args.dataset} in {config['data_path']}: {'OK' if report.ok else 'ERRORS'}" + (f" ({counts})" if counts else ""))
    return 0 if report.ok else 2


def _resume(args: argparse.Namespace, overrides: Dict[str, Any]) -> int:
    _no_overrides("--resume", overrides)
    from recbole_kgin.quick_start import resume_recbole_kgin

    _print_result(f"resumed {args.resume}", resume_recbole_kgin(args.resume, args.trust_checkpoint))
    return 0


def _compare(args: argparse.Namespace, overrides: Dict[str, Any]) -> int:
    from recbole_kgin.experiments.compare import format_markdown, output_folder, run_comparison

    models = [name.strip() for name in args.compare.split(",") if name.strip()]
    if not models:
        raise UserInputError("--compare needs model names, e.g. --compare KGIN,KGAT,KGCN,CKE")
    if args.tune_trials is not None:
        return _tuned_compare(args, overrides, models)
    rows = run_comparison(
        models, args.dataset, config_file_list(args), overrides, args.output, args.force
    )
    print(format_markdown(rows))
    print(f"outputs: {output_folder(args.dataset, args.output)}")
    return 1 if any(row.status == "failed" for row in rows) else 0


def _tuned_compare(args: argparse.Namespace, overrides: Dict[str, Any], models: List[str]) -> int:
    if args.claim_timeout <= 0:
        raise UserInputError(f"--claim_timeout {args.claim_timeout:g}: give seconds > 0")
    from recbole_kgin.experiments.tuned_compare import run_tuned_comparison
    from recbole_kgin.experiments.tuned_records import Budget
    from recbole_kgin.experiments.tuned_report import format_table

    budget = Budget(
        trials=args.tune_trials, tune_epochs=args.tune_epochs, seeds=args.seeds, max_epochs=args.max_epochs,
        split_seeds=args.split_seeds, scheduler=args.scheduler or "fifo", cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial, address=args.address, grace_period=args.grace_period,
        data_on_nodes=args.data_on_nodes,
    )  # fmt: skip
    command = " ".join([_program_name(), *args.argv])
    outcome = run_tuned_comparison(
        models, args.dataset, budget, config_file_list(args), overrides, args.output, args.force, command,
        claim_timeout=args.claim_timeout,
    )
    print(format_table(outcome["summaries"], outcome["significance"], budget, outcome["settings"], outcome["metrics"]))
    print(f"outputs: {outcome['output']}")
    return 1 if any(summary.error for summary in outcome["summaries"]) else 0


def _explain(args: argparse.Namespace, overrides: Dict[str, Any]) -> int:
    if args.user is None:
        raise UserInputError("--explain needs --user <user id>")
    _no_overrides("--explain", overrides)
    top = 5 if args.top is None else args.top
    if top < 1 or args.intents < 1:
        raise UserInputError("--top and --intents must be >= 1")
    from recbole_kgin.inference.explain import run_explain

    print(run_explain(args.explain, args.user, args.item, top, args.intents, args.output, args.json,
                      args.trust_checkpoint))
    return 0


def _checked_dataset(args: argparse.Namespace) -> Optional[str]:
    """The dataset a checkpoint must be of: --dataset where given, else any."""
    return args.dataset if args.dataset_given else None


def _recommend(args: argparse.Namespace, overrides: Dict[str, Any]) -> int:
    _no_overrides("--recommend", overrides)
    if not args.output:
        raise UserInputError("--recommend needs --output recs.csv or --output recs.parquet")
    exclude_seen = typed_value(args.exclude_seen)
    if not isinstance(exclude_seen, bool):
        raise UserInputError(f"--exclude_seen takes true or false, not '{args.exclude_seen}'")
    from recbole_kgin.inference.recommend import recommend_to_file

    top = 10 if args.top is None else args.top
    print(recommend_to_file(
        args.recommend, args.users, top, exclude_seen, args.output, args.force, _checked_dataset(args),
        args.trust_checkpoint,
    ))  # fmt: skip
    return 0


def _export(args: argparse.Namespace, overrides: Dict[str, Any]) -> int:
    _no_overrides("--export", overrides)
    if not args.output:
        raise UserInputError("--export needs --output <folder for the vectors>")
    from recbole_kgin.inference.export import export_to_folder

    print(export_to_folder(args.export, args.output, args.force, _checked_dataset(args), args.trust_checkpoint))
    return 0


def tune_model(args: argparse.Namespace) -> str:
    """--model, else the space file's stem when it names a model, else KGIN."""
    if args.model:
        return args.model
    from pathlib import Path

    from recbole_kgin.utils import get_model

    stem = Path(args.tune).stem
    try:
        get_model(stem)
    except UserInputError:
        return DEFAULT_MODEL
    return stem


def _tune(args: argparse.Namespace, overrides: Dict[str, Any]) -> int:
    from recbole_kgin.experiments.tune import format_trials, run_tune

    model = tune_model(args)
    outcome = run_tune(
        args.tune, model, args.dataset, config_file_list(args), overrides,
        num_samples=args.num_samples, search=args.search, scheduler=args.scheduler or "asha",
        cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
        address=args.address, output=args.output, max_concurrent=args.max_concurrent,
        grace_period=args.grace_period, data_on_nodes=args.data_on_nodes,
    )
    print(format_trials(outcome["trials"]))
    print(f"best {model} on {args.dataset}: valid {outcome['valid_metric']} = {outcome['best_valid_score']:.4f}, "
          f"config written to {outcome['best_config_file']}")
    print(f"retrained with it, test: {format_metrics(outcome['test_result'])}")
    return 0


# The first action whose option is given runs; with none, a plain train-and-test run.
ACTIONS = (
    ("compare", _compare),
    ("explain", _explain),
    ("recommend", _recommend),
    ("export", _export),
    ("tune", _tune),
    ("convert", _convert),
    ("check", _check),
    ("resume", _resume),
)


def format_metrics(metrics: Dict[str, float]) -> str:
    return "  ".join(f"{name}={value:.4f}" for name, value in metrics.items())
