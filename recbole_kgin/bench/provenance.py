"""What a benchmark file says of itself: the command that produced it, when, and on what
machine, so that every figure under ``benchmarks/`` can be traced and rerun."""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import sys
from typing import List, Optional, Sequence

import torch

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def command_line(module: str, argv: Optional[Sequence[str]] = None) -> str:
    """``python -m <module> <arguments>``, led by the thread variables that were set."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    variables = [f"{name}={os.environ[name]}" for name in THREAD_VARIABLES if name in os.environ]
    return " ".join([*variables, "python", "-m", module, *map(shlex.quote, arguments)])


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else the platform's processor."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """CPU model, CPUs this process may use, torch version, and the GPU where there is one."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{cpu_model()}, {cpus} CPU(s) usable, torch {torch.__version__}{gpu}"


def measured_on() -> str:
    """The date of the measurement and :func:`machine`: ``2026-12-03 on AMD EPYC ..., 2 CPU(s) usable, ...``."""
    return f"{datetime.date.today().isoformat()} on {machine()}"


def header(command: str, when: str) -> List[str]:
    """The two comment lines a benchmark's output starts with."""
    return [f"# {command}", f"# measured {when}"]
