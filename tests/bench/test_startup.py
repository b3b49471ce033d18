"""``python -m recbole_kgin.bench.startup``: two fresh processes, the second reading back
what the first kept."""

import json

import pytest

from recbole_kgin.bench.startup import main


@pytest.mark.slow
def test_two_runs_the_second_finding_the_first_ones_entry(toy_root, tmp_path, capsys):
    output = tmp_path / "startup.jsonl"
    assert main(["--dataset", "toy", "--data_path", str(toy_root), "--output", str(output)]) == 0
    first, second = [json.loads(line) for line in output.read_text().splitlines()]
    assert (first["run"], second["run"]) == ("first", "second")
    assert first["seconds"]["entries_before"] == 0 and second["seconds"]["entries_before"] == 1
    for row in (first, second):
        assert all(row["seconds"][phase] >= 0 for phase in ("config", "data", "model"))
        assert row["seconds"]["process"] > row["seconds"]["data"]
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("# python -m recbole_kgin.bench.startup --dataset toy")
    assert printed[-2].startswith("first ") and printed[-1].startswith("second ")
