"""Ray Tune search: ``python tuning/run_tune.py tuning/KGIN.yaml --dataset ml-1m --num_samples 20``.

The same as ``python run_recbole_kgin.py --tune tuning/KGIN.yaml ...`` (all options of
that command apply; see recbole_kgin/tune.py).
"""

import sys

from recbole_kgin.cli import main

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        print("usage: python tuning/run_tune.py SPACE.yaml [--dataset NAME] [options of run_recbole_kgin.py --tune]")
        sys.exit(2)
    sys.exit(main(["--tune", *sys.argv[1:]]))
