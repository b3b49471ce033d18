"""Competing processes for ``python -m recbole_kgin.bench.speed --busy``.

Each load runs in its own process, started with the environment minus any thread
settings (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``), as another user's experiment would:

- ``torch``: a loop of 256x256 matrix products at torch's default thread count;
- ``python``: a pure-Python busy loop (one core);
- ``kgin``: a second training of our KGIN on the same dataset, as a second
  comparison or Ray trial beside the measured one would be.

A load prints ``ready`` once it is doing its work; :class:`RunningLoad` waits for it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Dict, List, Optional

LOADS = ("torch", "python", "kgin")
READY = "ready"


def run_load(kind: str, dataset: str, overrides: Dict[str, object]) -> None:
    """Do ``kind``'s work until killed (the body of a load process)."""
    if kind == "python":
        print(READY, flush=True)
        while True:
            pass
    import torch

    if kind == "torch":
        matrix = torch.randn(256, 256)
        print(READY, flush=True)
        while True:
            matrix = torch.tanh(matrix @ matrix)
    if kind == "kgin":
        from recbole_kgin.bench.settings import SHARED_SETTINGS
        from recbole_kgin.config import Config
        from recbole_kgin.quick_start import build

        config = Config("KGIN", dataset, config_dict={**SHARED_SETTINGS, **overrides})
        _, (train_data, _, _), _, trainer = build(config, saved=False)
        print(READY, flush=True)
        epoch = 0
        while True:
            trainer._train_epoch(train_data, epoch, show_progress=False)
            epoch += 1
    raise ValueError(f"unknown load {kind!r}: one of {', '.join(LOADS)}")


class RunningLoad:
    """Context manager: start ``kind`` (``None``: nothing), wait until it is ready,
    kill it on exit."""

    def __init__(self, kind: Optional[str], dataset: str, overrides_json: str) -> None:
        self.kind, self.dataset, self.overrides_json = kind, dataset, overrides_json
        self.process: Optional[subprocess.Popen] = None

    def command(self) -> List[str]:
        return [
            sys.executable, "-m", "recbole_kgin.bench.speed", "--load", self.kind,
            "--dataset", self.dataset, "--overrides", self.overrides_json,
        ]  # fmt: skip

    def __enter__(self) -> "RunningLoad":
        if self.kind is None:
            return self
        environment = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        self.process = subprocess.Popen(
            self.command(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=environment
        )
        for line in self.process.stdout:
            if line.strip() == READY:
                return self
        self.__exit__(None, None, None)
        raise SystemExit(f"error: the {self.kind} load ended before it started its work")

    def __exit__(self, *exc) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
