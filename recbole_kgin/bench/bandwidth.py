"""Memory bandwidth at one thread count after another: a large tensor copy and a random
gather of 256-byte rows (64 float32, one embedding row at ``embedding_size`` 64) from a
table of the Amazon-Book shape's 88,572 entities, the floor under KGIN's KG hops
(docs/speed.md, "Where the time goes").

    python -m recbole_kgin.bench.bandwidth --threads 1,2

Prints the command, date and machine, then one line per thread count: the copy's GB/s (bytes read + written) and the
gather's GB/s of rows gathered, each the best of ``--repeats`` timings.
"""

from __future__ import annotations

import argparse
import time
from typing import List, Optional, Sequence, Tuple

import torch

from recbole_kgin.bench.provenance import command_line, header, measured_on

ROW_FLOATS = 64  # 256 bytes


def best_seconds(work, repeats: int) -> float:
    """The shortest of ``repeats`` timings of ``work()`` after one warm-up call."""
    work()
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        timings.append(time.perf_counter() - started)
    return min(timings)


def measure(threads: int, copy_mib: int, table_rows: int, gathered_rows: int, repeats: int) -> Tuple[float, float]:
    """(copy GB/s read + written, gather GB/s of rows) at ``threads`` torch threads."""
    torch.set_num_threads(threads)
    source = torch.ones(copy_mib * 2**20 // 4)
    target = torch.empty_like(source)
    copy_seconds = best_seconds(lambda: target.copy_(source), repeats)
    table = torch.ones(table_rows, ROW_FLOATS)
    index = torch.randint(0, table.shape[0], (gathered_rows,), generator=torch.Generator().manual_seed(0))
    rows = torch.empty(gathered_rows, ROW_FLOATS)
    gather_seconds = best_seconds(lambda: torch.index_select(table, 0, index, out=rows), repeats)
    copy_rate = 2 * source.numel() * 4 / copy_seconds / 1e9
    gather_rate = rows.numel() * 4 / gather_seconds / 1e9
    return copy_rate, gather_rate


def format_line(threads: int, copy_rate: float, gather_rate: float) -> str:
    return f"threads {threads}: copy {copy_rate:.1f} GB/s (read + write), random 256-B row gather {gather_rate:.1f} GB/s of rows"


def main(argv: Optional[Sequence[str]] = None) -> List[str]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    parser.add_argument("--copy_mib", type=int, default=512, help="size of the copied tensor")
    parser.add_argument("--table_rows", type=int, default=88_572, help="rows of the table gathered from")
    parser.add_argument("--rows", type=int, default=2_000_000, help="rows gathered per timing")
    parser.add_argument("--repeats", type=int, default=5, help="timings per figure (the best is kept)")
    args = parser.parse_args(argv)
    lines = header(command_line("recbole_kgin.bench.bandwidth", argv), measured_on())
    print("\n".join(lines), flush=True)
    for threads in (int(part) for part in args.threads.split(",")):
        line = format_line(threads, *measure(threads, args.copy_mib, args.table_rows, args.rows, args.repeats))
        print(line, flush=True)
        lines.append(line)
    return lines


if __name__ == "__main__":
    main()
