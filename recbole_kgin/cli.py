"""Command line of ``run_recbole_kgin.py``, following RecBole's ``run_recbole.py``.

``--model``, ``--dataset`` and ``--config_files "a.yaml b.yaml"`` as in RecBole; every
other ``--key=value`` overrides that config key (values are read as Python literals
where they parse, e.g. ``--epochs=1 --learning_rate=1e-3 --topk=[10,20]``).
Bad input ends with one ``error: ...`` line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from recbole_kgin.errors import UserInputError

DEFAULT_MODEL = "KGIN"
DEFAULT_DATASET = "ml-100k"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_recbole_kgin.py",
        description="Train and evaluate KGIN (or any RecBole model) on RecBole atomic files.",
        epilog="Any other --key=value overrides that config key, e.g. --epochs=1 "
        "--data_path=../shared/datasets --learning_rate=1e-3.",
        allow_abbrev=False,
    )
    parser.add_argument("--model", "-m", default=DEFAULT_MODEL, help="model name (default: KGIN)")
    parser.add_argument(
        "--dataset", "-d", default=DEFAULT_DATASET, help="dataset name (default: ml-100k, embedded)"
    )
    parser.add_argument(
        "--config_files", default=None, help='space-separated YAML files, e.g. "a.yaml b.yaml"'
    )
    compare = parser.add_argument_group("comparison (one protocol, several models)")
    compare.add_argument(
        "--compare", default=None, metavar="M1,M2,...",
        help="train each model in turn and tabulate test metrics, e.g. KGIN,KGAT,KGCN,CKE",
    )
    compare.add_argument("--force", action="store_true", help="retrain models whose results are already there")
    explain = parser.add_argument_group("explanation of a trained KGIN")
    explain.add_argument("--explain", default=None, metavar="CHECKPOINT", help="a saved/KGIN-*.pth file")
    explain.add_argument("--user", default=None, help="user id (dataset token) to explain")
    explain.add_argument("--item", default=None, help="item id (token); default: the user's top recommendation")
    explain.add_argument("--top", type=int, default=5, help="how many intents' relations, paths and items to list")
    explain.add_argument("--intents", type=int, default=2, help="how many of the user's top intents rank the paths")
    explain.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument(
        "--output", default=None,
        help="output folder (comparison: results/compare-<dataset>; explanation: explanations/<checkpoint>)",
    )
    return parser


def split_overrides(extra: Sequence[str]) -> Dict[str, Any]:
    """``["--epochs=1", ...]`` -> ``{"epochs": "1", ...}`` (typed later by the Config)."""
    overrides: Dict[str, Any] = {}
    for arg in extra:
        if not arg.startswith("--") or "=" not in arg or arg.startswith("--="):
            raise UserInputError(
                f"unrecognised argument '{arg}': config overrides take the form --key=value"
            )
        key, value = arg[2:].split("=", 1)
        if key in overrides and overrides[key] != value:
            raise UserInputError(f"--{key} given twice with different values: keep one")
        overrides[key] = value
    return overrides


def parse_args(argv: Optional[Sequence[str]]) -> Tuple[argparse.Namespace, Dict[str, Any]]:
    args, extra = build_parser().parse_known_args(argv)
    return args, split_overrides(extra)


def config_file_list(args: argparse.Namespace) -> Optional[List[str]]:
    return args.config_files.split() if args.config_files else None


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        args, overrides = parse_args(argv)
        if args.compare:
            return _compare(args, overrides)
        if args.explain:
            return _explain(args, overrides)
        from recbole_kgin.quick_start import run_recbole_kgin

        result = run_recbole_kgin(
            model=args.model,
            dataset=args.dataset,
            config_file_list=config_file_list(args),
            config_dict=overrides,
        )
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.model} on {args.dataset}")
    print(f"best valid: {format_metrics(result['best_valid_result'])}")
    print(f"test:       {format_metrics(result['test_result'])}")
    return 0


def _compare(args: argparse.Namespace, overrides: Dict[str, Any]) -> int:
    from recbole_kgin.compare import format_markdown, run_comparison

    models = [name.strip() for name in args.compare.split(",") if name.strip()]
    if not models:
        raise UserInputError("--compare needs model names, e.g. --compare KGIN,KGAT,KGCN,CKE")
    rows = run_comparison(
        models, args.dataset, config_file_list(args), overrides, args.output, args.force
    )
    print(format_markdown(rows))
    print(f"outputs: {args.output or f'results/compare-{args.dataset}'}")
    return 1 if any(row.status == "failed" for row in rows) else 0


def _explain(args: argparse.Namespace, overrides: Dict[str, Any]) -> int:
    if args.user is None:
        raise UserInputError("--explain needs --user <user id>")
    if overrides:
        raise UserInputError(f"--explain takes no config overrides (got --{next(iter(overrides))}=...)")
    if args.top < 1 or args.intents < 1:
        raise UserInputError("--top and --intents must be >= 1")
    from recbole_kgin.explain import run_explain

    print(run_explain(args.explain, args.user, args.item, args.top, args.intents, args.output, args.json))
    return 0


def format_metrics(metrics: Dict[str, float]) -> str:
    return "  ".join(f"{name}={value:.4f}" for name, value in metrics.items())
