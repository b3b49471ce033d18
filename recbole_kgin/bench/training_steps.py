"""What the benchmarks that time two paths of one model's training step share: its
first batches, an Adam step, seconds per batch, and how far the two paths' losses and
gradients lie apart."""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, List, Tuple

import torch

Outcome = Tuple[torch.Tensor, List[torch.Tensor]]  # a loss and every parameter's gradient


def first_batches(loader: Iterable[Any], count: int) -> List[Any]:
    """The loader's first ``count`` batches."""
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == count:
            break
    return batches


def adam_step(model: torch.nn.Module) -> Callable[[Any], None]:
    """One training step on a batch: forward, backward, Adam (lr 1e-3)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(batch: Any) -> None:
        optimizer.zero_grad()
        model.calculate_loss(batch).backward()
        optimizer.step()

    return step


def seconds_per_batch(step: Callable[[Any], None], batches: List[Any]) -> float:
    start = time.perf_counter()
    for batch in batches:
        step(batch)
    return (time.perf_counter() - start) / len(batches)


def loss_and_gradients(model: torch.nn.Module, batch: Any, seed: int = 0) -> Outcome:
    """The loss of ``batch`` and every parameter's gradient, from the random state ``seed``."""
    torch.manual_seed(seed)
    model.zero_grad()
    loss = model.calculate_loss(batch)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


def largest_difference(first: Outcome, second: Outcome) -> float:
    """The largest absolute difference of the two losses and of any gradient entry."""
    (loss, gradients), (other_loss, other_gradients) = first, second
    gaps = [(loss - other_loss).abs().item()] + [(a - b).abs().max().item() for a, b in zip(gradients, other_gradients)]
    return max(gaps)
