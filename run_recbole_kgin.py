"""Train and evaluate KGIN (or any RecBole model): ``python run_recbole_kgin.py --help``."""

import sys

from recbole_kgin.cli import main

if __name__ == "__main__":
    sys.exit(main())
