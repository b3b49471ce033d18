"""Run code as other local users (``setpriv``), for attacks one user makes on another.

Only root can switch users; elsewhere the tests that need it skip with the reason.
The code imports recbole-kgin's modules without the package's RecBole fixes
(``recbole_kgin/__init__.py`` imports RecBole and torch, seconds per process).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
ATTACKER, VICTIM = 65534, 65533  # nobody, and an account with no name: neither is root

PRELUDE = f"""
import sys, types
package = types.ModuleType("recbole_kgin")
package.__path__ = [{str(REPO_ROOT / "recbole_kgin")!r}]
sys.modules["recbole_kgin"] = package
"""


def _can_switch_users() -> bool:
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("setpriv") is None:
        return False
    probe = subprocess.run(_as(ATTACKER, ["true"]), capture_output=True)
    return probe.returncode == 0


def _as(uid: int, command: list) -> list:
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *command]


needs_other_users = pytest.mark.skipif(
    not _can_switch_users(), reason="acting as another local user needs root and setpriv"
)


def run_as(uid: int, code: str, *args: str, env: dict = None) -> subprocess.CompletedProcess:
    """Run Python ``code`` (with ``sys.argv[1:]`` = ``args``) as user ``uid``."""
    environment = {"PATH": os.environ.get("PATH", ""), "HOME": "/nonexistent", "PYTHONDONTWRITEBYTECODE": "1",
                   **(env or {})}  # fmt: skip
    return subprocess.run(
        _as(uid, [sys.executable, "-c", PRELUDE + code, *args]), capture_output=True, text=True, env=environment,
        timeout=120,
    )  # fmt: skip


def shared_tmp() -> Iterator[Path]:
    """A folder every user may create entries in, sticky as /tmp is (a fixture body)."""
    folder = Path(tempfile.mkdtemp(prefix="recbole-kgin-test-"))
    folder.chmod(stat.S_ISVTX | 0o777)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
