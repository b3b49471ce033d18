"""Claims let several processes share one comparison folder, and die with their process."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

from recbole_kgin.claims import claim


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
from recbole_kgin.claims import claim
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
