"""``python -m recbole_kgin.bench.scaling``: measured records per scale, resumable, a
table with fitted exponents and a log-log figure."""

import json
import math

import pytest

from recbole_kgin.bench.scaling import fitted_exponent, main, table
from recbole_kgin.data.synthetic import PAPER_SHAPES


def test_the_fitted_exponent_is_the_log_log_slope():
    sizes = [1e3, 2e3, 4e3, 8e3]
    assert fitted_exponent(sizes, [3 * size**1.5 for size in sizes]) == pytest.approx(1.5)
    assert fitted_exponent(sizes, [7.0] * 4) == pytest.approx(0.0, abs=1e-12)
    assert fitted_exponent([1e3], [2.0]) is None and fitted_exponent(sizes, [0, 0, 0, 5]) is None


def test_the_table_shows_missing_figures_as_dashes():
    records = [
        {"scale": scale, "size": int(1000 * scale), "kgin": {"median_epoch_seconds": 2.0 * scale, "eval_seconds": 1.0,
         "load_seconds": 3.0, "peak_rss_mib": 100.0 * scale}, "second_start": {"total": 1.0}, "recbole": None}
        for scale in (1, 2)
    ]  # fmt: skip
    lines = table(records)
    assert lines[2].split(" | ")[:3] == ["1", "1,000", "2.0"] and lines[2].endswith("| - | -")
    assert lines[-1].split(" | ")[2] == "1.00"  # epoch time doubles with the size


@pytest.mark.slow
def test_tiny_scales_are_measured_resumed_and_drawn(tmp_path, capsys):
    output, figure = tmp_path / "scaling.jsonl", tmp_path / "scaling.png"
    argv = ["--shape", "amazon-book", "--scales", "0.002,0.004", "--batches", "2", "--recbole_max_scale", "0",
            "--data_path", str(tmp_path / "data"), "--output", str(output), "--plot", str(figure)]  # fmt: skip
    assert main(argv) == 0
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [record["scale"] for record in records] == [0.002, 0.004]
    for record in records:
        shape = PAPER_SHAPES["amazon-book"].scaled(record["scale"])
        assert record["size"] == shape.interactions + shape.triples and record["recbole"] is None
        assert record["kgin"]["median_epoch_seconds"] > 0 and record["kgin"]["peak_rss_mib"] > 0
        assert record["second_start"]["entries_before"] == 1  # the first run's entry, read back
        assert 0 < record["second_start"]["data"] and record["command"].startswith("python -m recbole_kgin.bench.scaling")
    assert figure.stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "exponent" in printed and printed.startswith("# python -m recbole_kgin.bench.scaling")
    main(argv)  # resumed: nothing measured again
    assert len(output.read_text().splitlines()) == 2
    assert not math.isnan(records[1]["kgin"]["eval_seconds"])
