"""Independence losses on hand-made tensors."""

from __future__ import annotations

import math

import pytest
import torch

from recbole_kgin.model.independence import (
    cosine_loss,
    distance_correlation_matrix,
    distance_loss,
    independence_loss,
    mutual_information_loss,
)
from reference_kgin import reference_distance_correlation, reference_independence


def test_distance_correlation_of_a_vector_with_itself_is_one():
    x = torch.linspace(-1.0, 2.0, 40, dtype=torch.float64)
    dcor = distance_correlation_matrix(torch.stack([x, x]))
    assert dcor[0, 1].item() == pytest.approx(1.0, abs=1e-4)
    # any affine image is as dependent
    dcor = distance_correlation_matrix(torch.stack([x, 3 * x - 5]))
    assert dcor[0, 1].item() == pytest.approx(1.0, abs=1e-4)


def test_distance_correlation_of_independent_vectors_is_near_zero():
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 2000, generator=generator, dtype=torch.float64)
    assert distance_correlation_matrix(torch.stack([x, y]))[0, 1].item() < 0.1


def test_distance_correlation_sees_nonlinear_dependence():
    x = torch.linspace(-1.0, 1.0, 201, dtype=torch.float64)
    y = x**2  # Pearson correlation 0, yet fully dependent
    assert abs(torch.corrcoef(torch.stack([x, y]))[0, 1].item()) < 1e-6
    assert distance_correlation_matrix(torch.stack([x, y]))[0, 1].item() > 0.4


def test_vectorised_distance_loss_matches_the_authors_pairwise_formula():
    vectors = torch.randn(4, 12, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    expected = sum(
        reference_distance_correlation(vectors[p], vectors[q]) for p in range(4) for q in range(p + 1, 4)
    )
    assert distance_loss(vectors).item() == pytest.approx(expected.item(), abs=1e-10)


def test_cosine_loss_of_orthogonal_rows_is_zero_and_of_parallel_rows_counts_pairs():
    assert cosine_loss(torch.eye(4, dtype=torch.float64)).item() == pytest.approx(0.0, abs=1e-12)
    parallel = torch.ones(3, 5, dtype=torch.float64)
    assert cosine_loss(parallel).item() == pytest.approx(3.0)  # 3 pairs, cos^2 = 1


def test_mutual_information_loss_is_finite_nonnegative_and_orthogonal_beats_correlated():
    orthogonal = torch.eye(4, 8, dtype=torch.float64)
    correlated = orthogonal + 0.8 * torch.ones(4, 8, dtype=torch.float64)
    low = mutual_information_loss(orthogonal, 0.2)
    high = mutual_information_loss(correlated, 0.2)
    assert math.isfinite(low.item()) and math.isfinite(high.item())
    assert 0.0 <= low.item() < high.item()


def test_mutual_information_loss_falls_as_two_intents_turn_orthogonal():
    losses = []
    for degrees in range(0, 91, 10):
        angle = math.radians(degrees)
        vectors = torch.tensor([[1.0, 0.0], [math.cos(angle), math.sin(angle)]], dtype=torch.float64)
        losses.append(mutual_information_loss(vectors, 0.2).item())
    assert all(a > b for a, b in zip(losses, losses[1:]))


def test_gradient_descent_on_mutual_information_decorrelates_intents():
    vectors = (torch.ones(4, 16) + 0.1 * torch.randn(4, 16, generator=torch.Generator().manual_seed(1))).requires_grad_()
    optimizer = torch.optim.SGD([vectors], lr=0.1)
    for _ in range(300):
        optimizer.zero_grad()
        mutual_information_loss(vectors, 0.2).backward()
        optimizer.step()
    unit = torch.nn.functional.normalize(vectors.detach(), dim=1)
    off_diagonal = (unit @ unit.t())[~torch.eye(4, dtype=torch.bool)]
    assert off_diagonal.max().item() < 0.05


@pytest.mark.parametrize("kind", ["distance", "cosine", "mi"])
def test_dispatch_matches_reference(kind):
    vectors = torch.randn(3, 10, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    got = independence_loss(vectors, kind, 0.2)
    assert got.item() == pytest.approx(reference_independence(vectors, kind, 0.2).item(), rel=1e-9)


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError, match="unknown independence loss"):
        independence_loss(torch.eye(2), "pearson", 0.2)
