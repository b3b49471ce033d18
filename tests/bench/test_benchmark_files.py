"""Every file under ``benchmarks/`` names the command that produced it and when it was
measured: a text file in its first comment lines, a JSON-lines file in every record."""

import importlib.util
import json
import re
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
COMMAND = re.compile(r"^(?:[A-Z_]+=\S+ |taskset -c \S+ )*python -m (recbole_kgin(?:\.\w+)+)(?: .*)?$")
FILES = sorted(path for path in BENCHMARKS.iterdir() if path.is_file())


def commands_of(path: Path):
    if path.suffix == ".jsonl":
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        assert records and all(record.get("measured") for record in records), f"{path.name}: a record says not when"
        return [record["command"] for record in records]
    comments = [line[2:] for line in path.read_text().splitlines() if line.startswith("# ")]
    assert any(line.startswith("measured ") or re.match(r"\d{4}-\d\d-\d\d", line) for line in comments), path.name
    return [line for line in comments if "python -m " in line][:1]


@pytest.mark.parametrize("path", FILES, ids=lambda path: path.name)
def test_a_benchmark_file_names_a_command_of_the_package(path):
    commands = commands_of(path)
    assert commands, f"{path.name} names no command"
    for command in commands:
        match = COMMAND.match(command)
        assert match, f"{path.name}: {command!r} is not a python -m command of recbole_kgin"
        assert importlib.util.find_spec(match.group(1)) is not None, f"{path.name}: no module {match.group(1)}"


def test_a_file_without_a_command_is_caught(tmp_path):
    bare = tmp_path / "x.txt"
    bare.write_text("# measured 2026-01-01 on a machine\nthreads 1: copy 1 GB/s\n")
    assert commands_of(bare) == []
    record = tmp_path / "x.jsonl"
    record.write_text(json.dumps({"command": "python -m recbole_kgin.bench.speed"}) + "\n")
    with pytest.raises(AssertionError):
        commands_of(record)
