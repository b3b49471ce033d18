"""KGIN's hot loops as fused CPU kernels (``kernels.cpp``), compiled on first use.

The torch path of :mod:`recbole_kgin.model.graph` runs a hop as two embedding bags
with a (groups, d) tensor of per-(relation, head) sums between them; on paper-sized
KGs (millions of edges, groups about half the edges) that tensor and its gradient
dominate the time. The kernel walks the edges once forward, ``Y[h] = sum w R[r] * X[t]``,
and once backward (by tail, for ``dX`` and ``dR`` together), skipping dropped edges;
dropout needs no per-batch sub-pattern, only per-edge weights (0 = dropped).
Message dropout and the row normalisation after it are one pass forward and one
backward (:func:`dropout_normalize`) instead of about fourteen tensor passes.

It is built with :func:`torch.utils.cpp_extension.load` (a C++ compiler and ninja;
about a minute once, then cached under ``TORCH_EXTENSIONS_DIR``; with AVX2 and FMA
where torch reports the CPU has them). Where that fails, :func:`kernel` logs one line
and returns None, and KGIN uses the torch path. Results agree with the torch path up
to float rounding: the random draws are the same.
"""

from __future__ import annotations

import hashlib
import os
import sys
from logging import getLogger
from pathlib import Path
from typing import Optional

import numpy as np
import torch

SOURCE = Path(__file__).with_name("kernels.cpp")
EXTENSION_NAME = "recbole_kgin_kernels"

_module = None
_failure: Optional[str] = None


def _put_ninja_on_path() -> None:
    """torch runs ``ninja`` from PATH; the pip package's binary sits in the environment's
    bin folder, which is not on PATH when Python is run without activating it."""
    try:
        import ninja
    except ImportError:
        return
    folders = os.environ.get("PATH", "").split(os.pathsep)
    if ninja.BIN_DIR not in folders:
        os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR] + folders)


def _build_directory(vector: bool) -> Path:
    """A build folder per source file (path and content) and instruction set: ninja
    rebuilds whenever the compile command changes, so two checkouts sharing torch's
    default folder would rebuild each other's kernels on every start."""
    from torch.utils.cpp_extension import get_default_build_root

    root = os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root()
    key = f"{SOURCE.resolve()}\n{SOURCE.read_text()}\n{vector}\n{torch.__version__}\n{sys.version}".encode()
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

            vector = torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
            _module = load(
                name=EXTENSION_NAME + ("_avx2" if vector else ""),
                sources=[str(SOURCE)],
                build_directory=str(_build_directory(vector)),
                extra_cflags=["-O3", "-fopenmp"] + (["-mavx2", "-mfma"] if vector else []),
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


class FusedHop:
    """One hop's edges for the kernel: rows ``0..n_rows-1`` (heads) from ``n_cols`` tails.

    Args:
        heads, relations, tails: int64 arrays of the hop's edges, sorted by head.
        positions: each edge's position in the graph's edge order (weights are
            indexed by it); the forward order must be a prefix of the graph's order.
        n_rows, n_cols: output rows (heads) and input rows (tails).
    """

    def __init__(self, heads, relations, tails, positions, n_rows: int, n_cols: int) -> None:
        as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))  # noqa: E731
        if len(positions) and not np.array_equal(positions, np.arange(len(positions))):
            raise ValueError("a fused hop's edges must be a prefix of the graph's edge order")
        self.crow = as_tensor(np.concatenate([[0], np.cumsum(np.bincount(heads, minlength=n_rows))]))
        self.col, self.rel = as_tensor(tails), as_tensor(relations)
        by_tail = np.argsort(tails, kind="stable")
        self.crow_t = as_tensor(np.concatenate([[0], np.cumsum(np.bincount(tails, minlength=n_cols))]))
        self.head_t, self.rel_t = as_tensor(heads[by_tail]), as_tensor(relations[by_tail])
        self.perm_t = as_tensor(positions[by_tail])

    def to(self, device: torch.device) -> "FusedHop":
        for name in ("crow", "col", "rel", "crow_t", "head_t", "rel_t", "perm_t"):
            setattr(self, name, getattr(self, name).to(device))
        return self


class _FusedRelationalMean(torch.autograd.Function):
    @staticmethod
    def forward(ctx, entity, relation, weights, hop):
        entity, relation = entity.contiguous(), relation.contiguous()
        ctx.hop = hop
        ctx.save_for_backward(entity, relation, weights)
        return kernel().relational_forward(entity, relation, hop.crow, hop.col, hop.rel, weights)

    @staticmethod
    def backward(ctx, grad_out):
        entity, relation, weights = ctx.saved_tensors
        hop = ctx.hop
        grad_entity, grad_relation = kernel().relational_backward(
            grad_out.contiguous(), entity, relation, hop.crow_t, hop.head_t, hop.rel_t, hop.perm_t, weights
        )
        return grad_entity, grad_relation, None, None


def relational_mean(entity: torch.Tensor, relation: torch.Tensor, weights: torch.Tensor, hop: FusedHop) -> torch.Tensor:
    """``Y[h] = sum_{(h, r, t)} w_e R[r] * X[t]``: (N, d) entities, (K, d) relations and
    per-edge weights (E,) -> (hop.n_rows, d); differentiable in entity and relation."""
    return _FusedRelationalMean.apply(entity, relation, weights.to(entity.dtype), hop)


class _FusedDropoutNormalize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lanes, threshold, eps):
        out, denominators = kernel().dropout_normalize_forward(x.contiguous(), lanes, threshold, eps)
        ctx.threshold, ctx.eps = threshold, eps
        ctx.save_for_backward(out, lanes, denominators)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        out, lanes, denominators = ctx.saved_tensors
        grad = kernel().dropout_normalize_backward(
            grad_out.contiguous(), out, lanes, ctx.threshold, denominators, ctx.eps
        )
        return grad, None, None, None


def dropout_normalize(x: torch.Tensor, lanes: torch.Tensor, threshold: int, eps: float) -> torch.Tensor:
    """(n, d) -> (n, d): ``z / max(|z|, eps)`` per row, ``z = x * (lanes >= threshold)``;
    ``lanes`` (n, d) int16 random lanes (:func:`recbole_kgin.model.dropout.random_lanes`)."""
    return _FusedDropoutNormalize.apply(x, lanes, threshold, eps)
