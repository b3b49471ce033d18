"""Builds recbole-kgin's fused CPU kernels (``recbole_kgin/model/kernels.cpp``) on first use.

:func:`kernel` compiles them with :func:`torch.utils.cpp_extension.load` (a C++
compiler and ninja; about 40 s once, then cached: a folder per source file, instruction
set, torch and Python version, under ``TORCH_EXTENSIONS_DIR`` or torch's default), for
the widest vector instructions torch reports the CPU has (AVX-512 or AVX2 with FMA;
:data:`VECTOR_FLAGS`) and with ``-fopenmp``, so the kernels run on the OpenMP runtime
torch already loaded. Where the build fails it logs one line and
returns None; callers then use the torch path. Kept apart from the model package: this
is build configuration, and its result is cached in module state.
"""

from __future__ import annotations

import hashlib
import os
import sys
from logging import getLogger
from pathlib import Path
from typing import Optional

import torch

SOURCE = Path(__file__).parent / "kernels.cpp"
EXTENSION_NAME = "recbole_kgin_kernels"
# Compiler flags per ``torch.backends.cpu.get_cpu_capability()``; other capabilities
# (no AVX2, other architectures) build without vector flags. AVX-512 halves the KG
# hops' time against AVX2 where the CPU has it (lastfm, one thread:
# forward 238 -> 114 us, backward 382 -> 232 us per hop).
VECTOR_FLAGS = {
    "AVX2": ["-mavx2", "-mfma"],
    "AVX512": ["-mavx2", "-mfma", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq"],
}

_module = None
_failure: Optional[str] = None


def _put_ninja_on_path() -> None:
    """torch runs ``ninja`` from PATH; the pip package's binary sits in the environment's
    bin folder, which is not on PATH when Python is run without activating it."""
    try:
        import ninja
    except ImportError:
        return
    folders = [folder for folder in os.environ.get("PATH", "").split(os.pathsep) if folder]
    if ninja.BIN_DIR not in folders:
        os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR] + folders)


def _build_directory(capability: str) -> Path:
    """A build folder per source file (path and content) and instruction set: ninja
    rebuilds whenever the compile command changes, so two checkouts sharing torch's
    default folder would rebuild each other's kernels on every start."""
    from torch.utils.cpp_extension import get_default_build_root

    root = os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root()
    key = f"{SOURCE.resolve()}\n{SOURCE.read_text()}\n{capability}\n{torch.__version__}\n{sys.version}".encode()
    folder = Path(root) / f"{EXTENSION_NAME}-{hashlib.sha1(key).hexdigest()[:12]}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def kernel():
    """The compiled extension, or None (the reason logged once) where it cannot be built."""
    global _module, _failure
    if _module is None and _failure is None:
        try:
            from torch.utils.cpp_extension import load

            _put_ninja_on_path()

            capability = torch.backends.cpu.get_cpu_capability()
            flags = VECTOR_FLAGS.get(capability, [])
            _module = load(
                name=EXTENSION_NAME + (f"_{capability.lower()}" if flags else ""),
                sources=[str(SOURCE)],
                build_directory=str(_build_directory(capability if flags else "")),
                extra_cflags=["-O3", "-fno-math-errno", "-fopenmp"] + flags,
                extra_ldflags=["-fopenmp"],
                verbose=False,
            )
        except Exception as error:  # no compiler, no ninja, a failed build: the torch path works
            text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            _failure = text.split(": [")[0][:200]  # a build error's first line holds the whole command
            getLogger().warning(
                f"fused KG kernel unavailable ({_failure}); KGIN uses its slower torch path "
                f"(install a C++ compiler and 'pip install ninja', or set fused_kernel: False to silence this)"
            )
    return _module
