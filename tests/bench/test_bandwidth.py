"""``python -m recbole_kgin.bench.bandwidth`` prints one measured line per thread count."""

import re

import torch

from recbole_kgin.bench.bandwidth import best_seconds, main

LINE = re.compile(r"threads (\d+): copy ([\d.]+) GB/s \(read \+ write\), random 256-B row gather ([\d.]+) GB/s of rows")


def test_one_line_per_thread_count_with_measured_rates(capsys, monkeypatch):
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    before = torch.get_num_threads()
    try:
        lines = main(["--threads", "1,2", "--copy_mib", "4", "--table_rows", "1000", "--rows", "10000", "--repeats", "2"])
    finally:
        torch.set_num_threads(before)
    assert capsys.readouterr().out.splitlines() == lines
    assert lines[0] == "# python -m recbole_kgin.bench.bandwidth --threads 1,2 --copy_mib 4 --table_rows 1000 --rows 10000 --repeats 2"
    assert lines[1].startswith("# measured ")
    matches = [LINE.fullmatch(line) for line in lines[2:]]
    assert [int(match.group(1)) for match in matches] == [1, 2]
    assert all(float(match.group(2)) > 0 and float(match.group(3)) > 0 for match in matches)


def test_the_best_timing_is_kept():
    calls = []
    assert best_seconds(lambda: calls.append(1), 3) >= 0
    assert len(calls) == 4  # one warm-up, then the timed repeats
