"""The package as users install it: a wheel, installed without -e, used outside the repository."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from conftest import REPO_ROOT
from toy_data import write_toy_dataset

pytestmark = pytest.mark.slow

NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "*.egg-info", "build", "dist", "__pycache__", "mutants", "results", "saved", "log*", ".pytest_cache"
)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(wheel file, install target) of a wheel built from a copy of the checkout."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    shutil.copytree(REPO_ROOT, source, ignore=NOT_SOURCE)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-w", str(root / "dist"), str(source)], check=True)
    (wheel,) = (root / "dist").glob("recbole_kgin-*.whl")
    target = root / "site"
    subprocess.run(pip + ["install", "--no-deps", "--no-index", "--target", str(target), str(wheel)], check=True)
    return wheel, target


def run_installed(target, args, cwd, timeout=600):
    env = {**os.environ, "PYTHONPATH": str(target)}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout)


def test_the_wheel_holds_the_cli_properties_and_search_spaces(installed):
    wheel, _ = installed
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert {"recbole_kgin/__main__.py", "recbole_kgin/cli.py", "recbole_kgin/properties/overall.yaml",
            "recbole_kgin/properties/model/KGIN.yaml", "recbole_kgin/model/kernels.cpp",
            "recbole_kgin/properties/model/KGIN/ml-100k.yaml", "recbole_kgin/bench/speed.py"} <= names
    assert {f"recbole_kgin/tuning/{model}.yaml" for model in ("KGIN", "KGAT", "KGCN", "CKE")} <= names
    assert "recbole-kgin = recbole_kgin.cli:run" in entry_points
    assert not any(name.startswith(("tests/", "tuning/", "properties/")) for name in names)


def test_python_m_runs_the_embedded_default_outside_the_repository(installed, tmp_path):
    _, target = installed
    where = run_installed(target, [sys.executable, "-c", "import recbole_kgin; print(recbole_kgin.__file__)"], tmp_path)
    assert where.stdout.startswith(str(target)), where.stdout + where.stderr
    completed = run_installed(
        target, [sys.executable, "-m", "recbole_kgin", "--epochs=1", "--fused_kernel=False", "--show_progress=False", "--state=ERROR"],
        tmp_path,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "KGIN on ml-100k" in completed.stdout and "test:" in completed.stdout


def test_console_script_tunes_with_the_packaged_space(installed, tmp_path):
    _, target = installed
    write_toy_dataset(tmp_path / "data" / "toy")
    script = target / "bin" / "recbole-kgin"
    args = [str(script), "--tune", "KGIN", "--dataset", "toy", f"--data_path={tmp_path / 'data'}",
            "--num_samples", "1", "--epochs=1", "--topk=[5]", "--valid_metric=Recall@5",
            "--show_progress=False", "--state=ERROR"]
    completed = run_installed(target, args, tmp_path)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "best KGIN on toy" in completed.stdout and (tmp_path / "results" / "tune-KGIN-toy" / "trials.csv").is_file()
    usage = run_installed(target, [str(script), "--help"], tmp_path)
    assert usage.stdout.startswith("usage: recbole-kgin")
