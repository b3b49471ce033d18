"""``python -m recbole_kgin``: the same CLI as ``recbole-kgin`` and ``run_recbole_kgin.py``."""

from recbole_kgin.cli import run

if __name__ == "__main__":
    run()
