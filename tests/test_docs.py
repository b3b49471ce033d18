"""The documentation builds with warnings as errors, and its commands work as written.

Every command of README.md and docs/*.md that runs recbole-kgin (:mod:`doc_commands`)
is checked without training:

- every CLI command parses with the real parser (:func:`recbole_kgin.cli.parse_args`),
  names models that exist, and its config overrides pass the config checks
  (:func:`recbole_kgin.common.config_checks.check_config_values`); a tuned comparison's budget
  and search spaces are checked as the command checks them, and actions that take no
  overrides get none;
- every benchmark command names a module that exists and only options its ``--help``
  lists;
- the cheap ones run: ``--help``, and ``--check`` on the ml-100k embedded in recbole.

The others are only parsed, each for the reason :func:`parse_only_reason` gives: they
train (minutes to hours), need a trained checkpoint, a dataset that does not ship with
recbole (ml-1m, lastfm: ``--data_path=DIR``), a KGAT-format folder, or a cluster.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import io
import pkgutil
import re
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

import pytest

from conftest import REPO_ROOT
from doc_commands import CLI, Invocation, invocations, recbole_kgin_call, shell_commands, split_programs

DOC_FILES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
COMMANDS = invocations(DOC_FILES, REPO_ROOT)
CLI_COMMANDS = [command for command in COMMANDS if command.program == CLI]
BENCHMARK_COMMANDS = [command for command in COMMANDS if command.program != CLI]
EMBEDDED_DATASET = "ml-100k"
NO_OVERRIDES = ("explain", "recommend", "export", "convert", "resume")


def parse_only_reason(argv) -> Optional[str]:
    """Why a CLI command is parsed but not run; None for the cheap ones, which run."""
    from recbole_kgin.cli import parse_args

    if "--help" in argv or "-h" in argv:
        return None
    args, _ = parse_args(list(argv))
    if args.explain or args.recommend or args.export or args.resume:
        return "needs a trained checkpoint"
    if args.convert:
        return "needs a folder in the KGAT/KGIN text format"
    if args.address or args.world_size > 0:
        return "needs a Ray cluster or other machines"
    if args.check:
        return None if args.dataset == EMBEDDED_DATASET else "reads a dataset that does not ship with recbole"
    if args.compare or args.tune:
        return "trains several models or trials (hours)"
    return "trains a model (minutes)"


def check_cli_command(argv) -> None:
    """Parse ``argv`` as the CLI does and check what it names, without training."""
    from recbole_kgin.cli import DEFAULT_MODEL, parse_args, tune_model
    from recbole_kgin.common.config_checks import check_config_values
    from recbole_kgin.experiments.search_space import load_space
    from recbole_kgin.experiments.tuned_records import Budget
    from recbole_kgin.utils import get_model

    argv = [arg for arg in argv if arg not in ("--help", "-h")]  # the rest must parse too
    args, overrides = parse_args(argv)
    action = next((name for name in NO_OVERRIDES if getattr(args, name)), None)
    if action:
        assert not overrides, f"--{action} takes no config overrides, got {sorted(overrides)}"
        return
    if args.compare:
        models = [name.strip() for name in args.compare.split(",") if name.strip()]
    elif args.tune:
        models = [tune_model(args)]
        if not args.tune.endswith((".yaml", ".yml")):
            load_space(args.tune)
    else:
        models = [args.model or DEFAULT_MODEL]
    assert models, "no model named"
    for model in models:
        check_config_values(overrides, get_model(model))
    if args.compare and args.tune_trials is not None:
        Budget(
            trials=args.tune_trials, tune_epochs=args.tune_epochs, seeds=args.seeds, max_epochs=args.max_epochs,
            split_seeds=args.split_seeds, scheduler=args.scheduler or "fifo",
        ).check()  # fmt: skip
        assert not {"seed", "split_seed", "epochs"} & set(overrides), "a tuned comparison sets these itself"
        for model in models:
            load_space(model)


@functools.lru_cache(maxsize=None)
def benchmark_options(module: str) -> str:
    """What ``python -m <module> --help`` prints (its ``main`` called in this process)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), pytest.raises(SystemExit) as exited:
        importlib.import_module(module).main(["--help"])
    assert exited.value.code in (0, None)
    return printed.getvalue()


def run_cli(argv, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "run_recbole_kgin.py"), *argv],
        capture_output=True, text=True, timeout=600, cwd=cwd, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_the_documents_show_commands_of_every_kind():
    programs = {command.program for command in COMMANDS}
    assert {CLI, "recbole_kgin.bench.speed", "recbole_kgin.bench.kgcn_ranking"} <= programs
    readme = [command for command in CLI_COMMANDS if command.where.startswith("README.md")]
    assert len(readme) >= 12, [command.name for command in readme]
    assert any("--recommend" in command.argv for command in readme)
    assert any("--export" in command.argv for command in readme)
    reasons = {parse_only_reason(command.argv) for command in CLI_COMMANDS}
    assert None in reasons and len(reasons) >= 5  # some run, the others for every reason


@pytest.mark.parametrize("command", CLI_COMMANDS, ids=lambda command: command.name)
def test_every_cli_command_of_the_docs_parses_and_passes_the_config_checks(command: Invocation):
    try:
        check_cli_command(command.argv)
    except SystemExit as error:  # argparse's own error, printed above
        pytest.fail(f"{command.where}: '{command.text}' does not parse (exit {error.code})")
    except Exception as error:  # UserInputError and the checks' assertions
        pytest.fail(f"{command.where}: '{command.text}' fails: {error}")


@pytest.mark.parametrize("command", BENCHMARK_COMMANDS, ids=lambda command: command.name)
def test_every_benchmark_command_of_the_docs_names_its_module_and_options(command: Invocation):
    assert importlib.util.find_spec(command.program) is not None, f"{command.where}: no module {command.program}"
    listed = set(re.findall(r"--[\w-]+", benchmark_options(command.program)))
    options = {arg.split("=", 1)[0] for arg in command.argv if arg.startswith("--")}
    assert options <= listed, f"{command.where}: '{command.text}': {sorted(options - listed)} not in --help"


def _runs(command: Invocation) -> bool:
    try:
        return parse_only_reason(command.argv) is None
    except (Exception, SystemExit):  # reported by the parse test
        return False


# Each distinct cheap command runs once, named by where it first appears.
CHEAP = list({command.argv: command for command in reversed(CLI_COMMANDS) if _runs(command)}.values())


@pytest.mark.slow
@pytest.mark.parametrize("command", CHEAP, ids=lambda command: command.name)
def test_the_cheap_commands_of_the_docs_run(command: Invocation, tmp_path):
    completed = run_cli(command.argv, tmp_path)
    assert completed.returncode == 0, f"{command.where}: '{command.text}'\n{completed.stderr[-2000:]}"
    if "--help" in command.argv:
        assert "--key value" in " ".join(completed.stdout.split())
    else:
        assert f"{EMBEDDED_DATASET} in " in completed.stdout and ": OK" in completed.stdout


def test_the_readme_test_command_is_what_ci_runs():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)
    ci_command = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()[-1]
    assert blocks[1] == ci_command
    assert blocks[0].endswith("&& python run_recbole_kgin.py")


def test_commands_are_found_where_a_reader_sees_them(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "Run `python run_recbole_kgin.py --check --dataset ml-100k` or `recbole-kgin`; not `--users all`.\n"
        "```bash\n"
        "pip install -e . && python run_recbole_kgin.py --epochs 3  # a comment\n"
        "OMP_NUM_THREADS=2 taskset -c 0 python -m recbole_kgin.bench.speed \\\n"
        "    --dataset ml-1m &\n"
        "kubectl exec -it POD -- python -m recbole_kgin --tune KGIN --address auto\n"
        "```\n"
        "```python\n"
        "run_recbole_kgin.py --never\n"
        "```\n",
        encoding="utf-8",
    )
    found = [(command.where, command.program, command.argv) for command in invocations([page], tmp_path)]
    assert found == [
        ("page.md:1", CLI, ("--check", "--dataset", "ml-100k")),
        ("page.md:1", CLI, ()),
        ("page.md:3", CLI, ("--epochs", "3")),
        ("page.md:4", "recbole_kgin.bench.speed", ("--dataset", "ml-1m")),
        ("page.md:6", CLI, ("--tune", "KGIN", "--address", "auto")),
    ]
    assert split_programs("a && b | c; d") == [["a"], ["b"], ["c"], ["d"]]
    assert recbole_kgin_call(["python", "-m", "pytest"]) is None
    assert [line for line, _ in shell_commands("```sh\n# only a comment\n```\n")] == []


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--dataset", "ml-1m", "--learning_rate", "-1"], "learning_rate"),
        (["--compare", "KGIN,NoSuchModel"], "unknown model 'NoSuchModel'"),
        (["--compare", "KGIN,BPR", "--tune_trials", "2", "--epochs=3"], "sets these itself"),
        (["--tune", "NoSuchSpace"], "search space 'NoSuchSpace' not found"),
        (["--explain", "x.pth", "--user", "1", "--epochs", "2"], "takes no config overrides"),
        (["--data_path", "--epochs=2"], "has no value"),
    ],
)
def test_a_broken_command_fails_the_check(argv: List[str], fragment: str):
    with pytest.raises(Exception, match=re.escape(fragment)):
        check_cli_command(argv)


def _public_modules() -> List[str]:
    """Every module of the package but ``__main__`` and other private ones."""
    import recbole_kgin

    found = pkgutil.walk_packages(recbole_kgin.__path__, prefix="recbole_kgin.")
    return ["recbole_kgin"] + [module.name for module in found if not module.name.rsplit(".", 1)[-1].startswith("_")]


@pytest.mark.slow
def test_the_docs_build_with_warnings_as_errors(tmp_path):
    output = tmp_path / "html"
    built = subprocess.run(
        [sys.executable, "-m", "sphinx", "-E", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(tmp_path / "doctrees"), str(REPO_ROOT / "docs"), str(output)],
        capture_output=True, text=True, timeout=900, cwd=REPO_ROOT,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-5000:]
    assert built.stderr.strip() == "", built.stderr[-5000:]
    # The API reference covers every module, found at build time.
    for module in _public_modules():
        assert (output / "generated" / f"{module}.html").is_file(), f"no API page for {module}"
    # The CLI reference lists every option of the parser.
    from recbole_kgin.cli import build_parser

    cli_page = (output / "cli.html").read_text(encoding="utf-8")
    for action in build_parser()._actions:
        if action.dest == "help":
            continue  # sphinx-argparse leaves -h/--help out
        for option in action.option_strings:
            assert option in cli_page, f"{option} missing from the CLI reference"
