"""recbole_kgin/model/dropout.py: keep masks and the fused message dropout + normalisation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from recbole_kgin.model.fused import kernel
from recbole_kgin.model import dropout
from recbole_kgin.model.dropout import _NORMALIZE_EPS, _DropoutNormalize, dropout_normalize, keep_mask

needs_kernel = pytest.mark.skipif(kernel() is None, reason="the fused kernels could not be built here")


GENERATORS = [False, pytest.param(True, marks=needs_kernel)]  # fused: the kernels' generator


@pytest.mark.parametrize("fused", GENERATORS)
@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_keep_mask_keeps_the_configured_share(rate, fused):
    torch.manual_seed(0)
    n = 400_000
    mask = keep_mask(n, rate, torch.device("cpu"), fused)
    assert mask.dtype == torch.bool and mask.shape == (n,)
    kept = mask.float().mean().item()
    sigma = math.sqrt(rate * (1 - rate) / n)
    assert abs(kept - (1 - rate)) < 5 * sigma + 1 / 65536


def test_random_lanes_are_the_draws_of_torchs_full_range_mapping():
    """The faster draw (no modulo) must give the lanes of ``random_(-2**63, 2**63 - 1)``:
    runs seeded before the change keep their masks."""
    torch.manual_seed(3)
    lanes = dropout.random_lanes((1000, 7), torch.device("cpu"))
    torch.manual_seed(3)
    words = torch.empty(1750, dtype=torch.int64).random_(-(2**63), 2**63 - 1)
    assert torch.equal(lanes, words.view(torch.int16).view(1000, 7))
    assert lanes.min() < -30000 and lanes.max() > 30000  # every lane spans the range, the top ones too
    assert (lanes.view(-1, 4)[:, 3] < 0).float().mean().item() == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize("fused", GENERATORS)
def test_keep_mask_shapes_and_extremes(fused):
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    assert keep_mask((3, 5), 0.5, cpu, fused).shape == (3, 5)
    assert keep_mask(7, 0.5, cpu, fused).shape == (7,)  # not a multiple of the lanes a draw gives
    assert keep_mask(1_000_000, 0.0, cpu, fused).all()  # rate 0 keeps every lane value
    assert keep_mask(100_000, 0.999, cpu, fused).float().mean() < 0.002  # rates are in [0, 1)
    lanes = torch.stack([keep_mask(64, 0.5, cpu, fused) for _ in range(500)]).float().mean(0)
    assert lanes.min() > 0.35 and lanes.max() < 0.65  # every position is drawn, not just the first lanes


@needs_kernel
def test_the_kernels_lanes_are_uniform_reproducible_and_independent_of_threads():
    cpu = torch.device("cpu")
    torch.manual_seed(5)
    first = dropout.random_lanes((4096, 64), cpu, fused=True)
    second = dropout.random_lanes((4096, 64), cpu, fused=True)
    torch.manual_seed(5)
    assert torch.equal(dropout.random_lanes((4096, 64), cpu, fused=True), first)  # torch's seed reproduces them
    assert (first != second).float().mean() > 0.99  # each call draws a new seed
    lanes = first.view(-1).long() + 32768
    counts = torch.bincount(lanes >> 8, minlength=256).double()  # 256 bins of the 16-bit range
    expected = lanes.numel() / 256
    assert ((counts - expected) ** 2 / expected).sum() < 350  # chi-square, 255 degrees of freedom (p ~ 1e-4)
    for bit in range(16):  # every bit of a lane, low and high halves of a word alike
        assert ((lanes >> bit) & 1).float().mean().item() == pytest.approx(0.5, abs=0.01)
    pairs = torch.stack([first.view(-1)[:-1], first.view(-1)[1:]]).float()
    assert abs(torch.corrcoef(pairs)[0, 1].item()) < 0.01  # neighbouring lanes (one word's halves) uncorrelated
    words = [kernel().random_words(300_000, 99) for _ in range(2)]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        words.append(kernel().random_words(300_000, 99))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(words[0], words[1]) and torch.equal(words[0], words[2])
    assert not torch.equal(kernel().random_words(1000, 98), words[0][:1000])  # the seed matters


@needs_kernel
def test_the_kernels_words_past_two_to_the_32_differ_from_their_low_bits():
    """Word i and word i + 2**32 share their low 32 bits of i: the high bits enter the
    hash, so they differ (checked on the counter arithmetic, without 16 GiB of words)."""
    mix = lambda x: _lowbias32(x)  # noqa: E731
    k1, k2 = mix(5), mix(0 ^ 0x9E3779B9)
    low = [mix(mix((i + k1) & 0xFFFFFFFF) ^ ((k2 + (i >> 32) * 0x9E3779B9) & 0xFFFFFFFF)) for i in (7, 7 + 2**32)]
    assert low[0] != low[1]
    assert kernel().random_words(8, 5)[7].item() & 0xFFFFFFFF == low[0]


def _lowbias32(x: int) -> int:
    x &= 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def test_message_dropout_zeroes_the_configured_share_and_matches_normalize():
    torch.manual_seed(2)
    x = torch.randn(20_000, 16, dtype=torch.float64) + 3.0
    out = dropout_normalize(x, 0.25)
    dropped = (out == 0).double().mean().item()
    assert abs(dropped - 0.25) < 5 * math.sqrt(0.25 * 0.75 / x.numel())
    kept = out != 0
    expected = F.normalize(torch.where(kept, x / 0.75, torch.zeros_like(x)))
    assert torch.allclose(out, expected)


def test_no_message_dropout_is_plain_normalize():
    x = torch.randn(50, 8, dtype=torch.float64)
    assert torch.equal(dropout_normalize(x, 0.0), F.normalize(x))


@pytest.mark.parametrize("rate", [0.3, 0.7])
def test_fused_dropout_normalize_equals_the_two_steps_with_a_fixed_mask(rate):
    """Forward and the hand-written backward against autograd through F.dropout's
    arithmetic (x * keep / (1 - rate)) and F.normalize, rows dropped whole included."""
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(40, 6, dtype=torch.float64, generator=generator)
    keep = (torch.rand(40, 6, generator=generator) >= rate).double()
    keep[5] = 0.0  # a row that dropout zeroes: the eps corner
    x[6], keep[6] = 1e-15, 1.0  # a row kept whole whose norm is under eps: no projection
    upstream = torch.randn(40, 6, dtype=torch.float64, generator=generator)

    fused_input = x.clone().requires_grad_()
    fused = _DropoutNormalize.apply(fused_input, keep, _NORMALIZE_EPS * (1.0 - rate))
    (fused * upstream).sum().backward()
    plain_input = x.clone().requires_grad_()
    plain = F.normalize(plain_input * keep / (1.0 - rate))
    (plain * upstream).sum().backward()

    assert torch.allclose(fused, plain, atol=1e-12)
    assert torch.allclose(fused_input.grad, plain_input.grad, rtol=1e-9, atol=1e-10)
    assert torch.count_nonzero(fused_input.grad[keep == 0]) == 0


def test_fused_dropout_normalize_passes_gradcheck():
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(12, 5, dtype=torch.float64, generator=generator, requires_grad=True)
    keep = (torch.rand(12, 5, generator=generator) >= 0.4).double()
    assert torch.autograd.gradcheck(lambda t: _DropoutNormalize.apply(t, keep, 1e-12), (x,))


@pytest.mark.parametrize("fused", [False, pytest.param(True, marks=needs_kernel)])
@pytest.mark.parametrize("rate", [0.3, 0.6])
def test_dropout_normalize_keeps_the_eps_of_dropout_then_normalize(rate, fused, monkeypatch):
    """Rows whose norm is under F.normalize's eps: the fused step divides the unscaled
    row by eps * (1 - rate), which is F.normalize(F.dropout(x)) on them too."""
    import recbole_kgin.model.dropout as dropout

    x = torch.full((3, 4), 1e-14, dtype=torch.float64)
    x[2] = torch.randn(4, dtype=torch.float64)
    keep = torch.ones(3, 4, dtype=torch.bool)
    keep[1, 0] = False
    monkeypatch.setattr(dropout, "random_lanes", lambda shape, device, fused=False: torch.where(keep, 32767, -32768).to(torch.int16))
    expected = F.normalize(x * keep / (1.0 - rate))
    assert torch.allclose(dropout_normalize(x, rate, fused), expected, rtol=1e-12, atol=0)


@needs_kernel
@pytest.mark.parametrize("rate", [0.3, 0.7])
def test_cpp_dropout_normalize_equals_the_torch_function(rate):
    """The C++ pass (recbole_kgin/model/kernels.cpp) against _DropoutNormalize with the
    mask its lanes give, forward and backward, the eps corners included."""
    from recbole_kgin.model import fused
    from recbole_kgin.model.dropout import keep_threshold

    generator = torch.Generator().manual_seed(5)
    x = torch.randn(40, 6, dtype=torch.float64, generator=generator)
    lanes = torch.randint(-32768, 32768, (40, 6), generator=generator).to(torch.int16)
    lanes[5] = -32768  # the whole row dropped
    x[6], lanes[6] = 1e-15, 32767  # kept whole, norm under eps
    threshold, eps = keep_threshold(rate), _NORMALIZE_EPS * (1.0 - rate)
    keep = (lanes >= threshold).double()
    upstream = torch.randn(40, 6, dtype=torch.float64, generator=generator)
    results = []
    for run in (lambda t: fused.dropout_normalize(t, lanes, threshold, eps), lambda t: _DropoutNormalize.apply(t, keep, eps)):
        leaf = x.clone().requires_grad_()
        out = run(leaf)
        (out * upstream).sum().backward()
        results.append((out.detach(), leaf.grad))
    # the kernel multiplies by 1/|z| where torch divides: one rounding more (a row with
    # one kept value gives out = 1 - 1 ulp, so its zero gradient becomes ~1e-15)
    assert torch.allclose(results[0][0], results[1][0], rtol=1e-12, atol=1e-15)
    assert torch.allclose(results[0][1], results[1][1], rtol=1e-12, atol=1e-13)
    assert torch.count_nonzero(results[0][1][keep == 0]) == 0
    leaf = x[:5].clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: fused.dropout_normalize(t, lanes[:5].contiguous(), threshold, eps), (leaf,))


@needs_kernel
def test_fused_masks_and_message_dropout_take_the_kernels_lanes_seeded_by_one_int64_draw():
    cpu = torch.device("cpu")
    torch.manual_seed(8)
    seed = int(torch.empty((), dtype=torch.int64).random_())
    expected = kernel().random_words(50, seed).view(torch.int16)[:99]
    torch.manual_seed(8)
    assert torch.equal(dropout.random_lanes(99, cpu, fused=True), expected)
    torch.manual_seed(8)
    assert torch.equal(keep_mask(99, 0.3, cpu, True), expected >= dropout.keep_threshold(0.3))
    torch.manual_seed(8)
    plain = dropout.random_lanes(99, cpu)  # torch's draws unless fused is asked for
    torch.manual_seed(8)
    assert torch.equal(keep_mask(99, 0.3, cpu), plain >= dropout.keep_threshold(0.3))
    assert not torch.equal(plain, expected)

    from recbole_kgin.model import fused

    x = torch.randn(33, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    rate, eps = 0.4, _NORMALIZE_EPS * 0.6
    torch.manual_seed(9)
    lanes = dropout.random_lanes((33, 3), cpu, fused=True)
    reference = fused.dropout_normalize(x, lanes, dropout.keep_threshold(rate), eps)
    torch.manual_seed(9)
    assert torch.equal(dropout_normalize(x, rate, True), reference)
    torch.manual_seed(9)
    keep = (dropout.random_lanes((33, 3), cpu) >= dropout.keep_threshold(rate)).to(x.dtype)
    torch.manual_seed(9)
    assert torch.equal(dropout_normalize(x, rate), _DropoutNormalize.apply(x, keep, eps))  # torch's by default
