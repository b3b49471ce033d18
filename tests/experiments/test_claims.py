"""Claims let several processes share one comparison folder, and die with their process."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
import time

import pytest

from other_users import ATTACKER, VICTIM, needs_other_users, run_as, shared_tmp
from recbole_kgin.experiments.claims import claim
from recbole_kgin.common.errors import UserInputError


def test_a_claimed_unit_is_refused_until_it_is_let_go_and_other_units_stay_free(tmp_path):
    with claim(tmp_path, "KGAT-seed1", wait=False) as first:
        assert first
        with claim(tmp_path, "KGAT-seed1", wait=False) as second:
            assert not second
        with claim(tmp_path, "KGAT-seed2", wait=False) as other:
            assert other
    with claim(tmp_path, "KGAT-seed1", wait=False) as again:
        assert again


def test_waiting_blocks_until_the_holder_lets_go(tmp_path):
    order = []

    def waiter():
        with claim(tmp_path, "CKE-search", wait=True) as held:
            order.append(("waiter", held))

    with claim(tmp_path, "CKE-search", wait=False):
        thread = threading.Thread(target=waiter)
        thread.start()
        time.sleep(0.5)
        order.append(("holder lets go", True))
    thread.join(timeout=10)
    assert order == [("holder lets go", True), ("waiter", True)]


def test_a_killed_process_leaves_no_stale_claim(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", f"""
import sys, time
from pathlib import Path
from recbole_kgin.experiments.claims import claim
with claim(Path({str(tmp_path)!r}), "BPR-search", wait=False) as held:
    print(held, flush=True)
    time.sleep(60)
"""],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "True"
        with claim(tmp_path, "BPR-search", wait=False) as held:
            assert not held
    finally:
        holder.kill()
        holder.wait()
    with claim(tmp_path, "BPR-search", wait=False) as held:
        assert held


HOLDER = """
import sys, time
from pathlib import Path
from recbole_kgin.experiments.claims import claim
with claim(Path(sys.argv[1]), "BPR-search", wait=False) as held:
    print(held, flush=True)
    time.sleep(60)
"""


def test_waiting_on_a_hung_holder_ends_with_one_line(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "True"
        started = time.monotonic()
        with pytest.raises(UserInputError) as error:
            with claim(tmp_path, "BPR-search", wait=True, timeout=1):
                pass
        assert time.monotonic() - started < 10
        message = str(error.value)
        assert message.startswith("BPR-search: waited 1 s for the process that holds")
        assert str(tmp_path / "BPR-search.lock") in message and "\n" not in message
    finally:
        holder.kill()
        holder.wait()


@pytest.fixture
def shared():
    yield from shared_tmp()


@needs_other_users
def test_a_lock_file_of_another_user_is_one_line(shared):
    claims = shared / "claims"
    claims.mkdir(mode=0o777)
    claims.chmod(0o1777)
    planted = run_as(ATTACKER, "import os, sys; os.close(os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY, 0o644))",
                     str(claims / "KGAT-seed1.lock"))  # fmt: skip
    assert planted.returncode == 0, planted.stderr
    victim = run_as(VICTIM, """
import sys
from pathlib import Path
from recbole_kgin.experiments.claims import claim
from recbole_kgin.common.errors import UserInputError
try:
    with claim(Path(sys.argv[1]), "KGAT-seed1", wait=False) as held:
        print("held", held)
except UserInputError as error:
    print("error:", error)
""", str(claims))  # fmt: skip
    assert victim.returncode == 0, victim.stderr
    assert victim.stdout.startswith("error: KGAT-seed1: cannot lock") and "--output folder of your own" in victim.stdout


# The same defences without a second user: a lock file this user may not open, and a
# folder where the lock file goes.
def test_a_lock_file_this_user_may_not_open_is_one_line(tmp_path, monkeypatch):
    lock = tmp_path / "KGAT-seed1.lock"
    lock.touch()
    lock.chmod(0)
    if os.access(lock, os.R_OK | os.W_OK):  # root: the mode binds nobody, so opening it is refused here
        open_file = os.open

        def refused(path, *args, **kwargs):
            if os.path.basename(os.fspath(path)) == lock.name:
                raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
            return open_file(path, *args, **kwargs)

        monkeypatch.setattr(os, "open", refused)
    for wait in (False, True):
        with pytest.raises(UserInputError) as error:
            with claim(tmp_path, "KGAT-seed1", wait=wait, timeout=5):
                pass
        assert str(error.value) == (
            f"KGAT-seed1: cannot lock {lock} (Permission denied; another user's file?): use an --output folder "
            f"of your own"
        )


def test_a_folder_where_the_lock_file_goes_is_one_line(tmp_path):
    (tmp_path / "KGAT-seed1.lock").mkdir()
    for wait in (False, True):
        with pytest.raises(UserInputError) as error:
            with claim(tmp_path, "KGAT-seed1", wait=wait, timeout=5):
                pass
        message = str(error.value)
        assert message.startswith(f"KGAT-seed1: cannot lock {tmp_path / 'KGAT-seed1.lock'} (Is a directory")
        assert message.endswith("use an --output folder of your own") and "\n" not in message
