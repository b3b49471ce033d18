"""Node and message dropout, made cheap on CPU.

``torch.nn.functional.dropout`` draws one float per element through ``bernoulli_``,
which on CPU costs ~19 ms for a 34k x 64 table, more than the sparse products of a
hop. :func:`keep_mask` takes 16-bit uniforms ("lanes") instead: four from each 64-bit
draw of torch's generator, or, with the fused kernels (``fused``), two from each word
of a counter-based hash seeded by one draw of torch's generator (3-4x faster than
torch's draws; :cpp:func:`random_words`). Either way ``torch.manual_seed`` (RecBole's
``init_seed``) reproduces them. The drop probability is rounded to a multiple of
1/65536 (0.1 -> 0.1000061; 0.5 is exact).

KGIN L2-normalises every hop's output right after message dropout, so the two are
one step here (:func:`dropout_normalize`) with a hand-written backward.
"""

from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn.functional as F

from recbole_kgin.model import fused as fused_kernels

_LEVELS = 1 << 16
_NORMALIZE_EPS = 1e-12  # F.normalize's default


def random_lanes(shape: Union[int, Sequence[int]], device: torch.device, fused: bool = False) -> torch.Tensor:
    """int16 tensor of ``shape``, uniform over [-32768, 32767] (see module note);
    ``fused`` (CPU): from the kernels' counter-based generator."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    count = 1
    for size in shape:
        count *= size
    if fused and device.type == "cpu":
        seed = int(torch.empty((), dtype=torch.int64).random_())
        return fused_kernels.kernel().random_words((count + 1) // 2, seed).view(torch.int16)[:count].view(shape)
    words = torch.empty((count + 3) // 4, dtype=torch.int64, device=device)
    # every bit uniform. With ``to`` given, torch maps each 64-bit draw r to
    # r % (2**64 - 1) - 2**63: a 64-bit division per word. Without it, r itself (25%
    # faster on CPU); flipping the top bit gives the same lanes as the mapping (they
    # differ only where r = 2**64 - 1).
    words.random_(-(2**63), None).bitwise_xor_(-(2**63))
    return words.view(torch.int16)[:count].view(shape)


def keep_threshold(rate: float) -> int:
    """A lane is kept where it is >= this: probability ``1 - rate`` (to 1/65536)."""
    return round(rate * _LEVELS) - 32768


def keep_mask(
    shape: Union[int, Sequence[int]], rate: float, device: torch.device, fused: bool = False
) -> torch.Tensor:
    """Bool tensor of ``shape``: True with probability ``1 - rate`` (see module note)."""
    return random_lanes(shape, device, fused) >= keep_threshold(rate)


class _DropoutNormalize(torch.autograd.Function):
    """``normalize(dropout(x))`` row-wise, with one mask and few passes over memory.

    Dropout's 1/(1 - rate) rescaling cancels in the normalisation, so the forward is
    ``z = x * keep; z / max(|z|, eps * (1 - rate))``, which equals
    ``F.normalize(F.dropout(x, rate))`` exactly, the ``eps`` corner case included.
    ``keep`` is a 0/1 float tensor: multiplying by it is ~10x cheaper than
    ``masked_fill`` with a bool mask.
    """

    @staticmethod
    def forward(ctx, x, keep, eps):
        z = x * keep
        norms = torch.linalg.vector_norm(z, dim=1, keepdim=True)
        clamped = norms <= eps
        denominators = norms.clamp_min(eps)
        out = z.div_(denominators)
        ctx.save_for_backward(out, denominators, clamped, keep)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        out, denominators, clamped, keep = ctx.saved_tensors
        projection = (out * grad_out).sum(dim=1, keepdim=True).masked_fill_(clamped, 0.0)
        grad = torch.addcmul(grad_out, out, projection, value=-1.0)
        grad.div_(denominators).mul_(keep)
        return grad, None, None


def normalize_eps(rate: float) -> float:
    """The floor of the row norms after message dropout at ``rate`` in [0, 1): F.normalize's
    1e-12 times ``1 - rate``, as dropout's rescaling is left out (see
    :class:`_DropoutNormalize`); at rate 0, F.normalize's own."""
    return _NORMALIZE_EPS * (1.0 - rate)


def dropout_normalize(x: torch.Tensor, rate: float, fused: bool = False) -> torch.Tensor:
    """Row-wise L2 normalisation of ``x`` after message dropout at ``rate`` (0 = none).

    (n, d) -> (n, d); equals ``F.normalize(F.dropout(x, rate))`` in distribution.
    ``fused``: one C++ pass each way (:mod:`recbole_kgin.model.fused`; CPU), lanes from
    the kernels' generator (:func:`random_lanes`); given the same lanes, the same
    result as the torch path.
    """
    if rate <= 0:
        return F.normalize(x)
    lanes = random_lanes(x.shape, x.device, fused)
    eps = normalize_eps(rate)
    if fused:
        return fused_kernels.dropout_normalize(x, lanes, keep_threshold(rate), eps)
    keep = (lanes >= keep_threshold(rate)).to(x.dtype)
    return _DropoutNormalize.apply(x, keep, eps)
