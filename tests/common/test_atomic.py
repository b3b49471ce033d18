"""Files replaced whole: two processes writing one file never collide or tear it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from recbole_kgin.common.atomic import replacing, write_text_atomically
from recbole_kgin.runtime.checkpoints import save_checkpoint

WRITES = 300
SIZE = 200_000

# A second process replaces the file with its own large content WRITES times while this
# one does the same and reads the file back after each of its writes. A collision on a
# shared temporary name shows as an error in a writer, a torn file as a mixed read.
WRITER = """
import sys
from pathlib import Path
from recbole_kgin.runtime.checkpoints import save_checkpoint
from recbole_kgin.common.atomic import write_text_atomically
from types import SimpleNamespace
path, kind = Path(sys.argv[1]), sys.argv[2]
print("writing", flush=True)
for _ in range({writes}):
    if kind == "text":
        write_text_atomically(path, "b" * {size})
    else:
        save_checkpoint({{"config": SimpleNamespace(**__import__("json").loads(sys.argv[3])), "mark": "b" * {size}}}, path)
"""


def _config_state() -> dict:
    """What :func:`save_checkpoint` reads of a Config, empty."""
    from recbole_kgin.runtime.checkpoints import CONFIG_LAYERS

    return {"model": "BPR", "dataset": "toy", **{name: {} for name in CONFIG_LAYERS}}


def _write(path: Path, kind: str) -> None:
    if kind == "text":
        write_text_atomically(path, "a" * SIZE)
    else:
        save_checkpoint({"config": SimpleNamespace(**_config_state()), "mark": "a" * SIZE}, path)


def _read(path: Path, kind: str) -> str:
    if kind == "text":
        return path.read_text(encoding="utf-8")
    return torch.load(path, weights_only=True)["mark"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["text", "checkpoint"])
def test_two_processes_writing_one_file_neither_collide_nor_tear_it(tmp_path, kind):
    target = tmp_path / "shared.out"
    script = WRITER.format(writes=WRITES, size=SIZE)
    other = subprocess.Popen([sys.executable, "-c", script, str(target), kind, json.dumps(_config_state())],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert other.stdout.readline() == "writing\n", other.stderr.read()
    torn, writes = 0, 0
    while other.poll() is None or writes < WRITES:
        _write(target, kind)
        writes += 1
        if _read(target, kind) not in ("a" * SIZE, "b" * SIZE):
            torn += 1
    assert other.wait() == 0, other.stderr.read()
    assert torn == 0
    assert sorted(path.name for path in tmp_path.iterdir()) == ["shared.out"]  # no temporary file left


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "kept.txt"
    write_text_atomically(target, "saved by the user")
    with pytest.raises(ZeroDivisionError):
        with replacing(target) as temporary:
            temporary.write_text("half")
            1 / 0
    assert target.read_text() == "saved by the user"
    assert [path.name for path in tmp_path.iterdir()] == ["kept.txt"]
