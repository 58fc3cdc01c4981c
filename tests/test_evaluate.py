import math

import pytest
import torch

from simsiam_lab.evaluate import (
    collapse_std,
    knn_accuracy,
    linear_probe_accuracy,
    top_direction_share,
)


def test_collapse_std_is_zero_for_constant_outputs():
    z = torch.randn(1, 128).repeat(512, 1)
    assert collapse_std(z) == pytest.approx(0.0, abs=1e-6)


def test_collapse_std_is_one_over_sqrt_d_for_gaussian_outputs():
    torch.manual_seed(0)
    d = 256
    assert collapse_std(torch.randn(4096, d)) == pytest.approx(1 / math.sqrt(d), rel=0.02)


def test_top_direction_share_is_one_on_a_line_and_small_when_isotropic():
    torch.manual_seed(0)
    direction = torch.randn(1, 64)
    on_a_line = torch.randn(1000, 1) * direction + 3.0
    assert top_direction_share(on_a_line) == pytest.approx(1.0, abs=1e-9)
    assert top_direction_share(torch.randn(4096, 64)) < 2 / 64
    assert top_direction_share(torch.ones(10, 64)) == 1.0  # a constant: a point is on a line


def _separable(n_per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    centres = torch.eye(4, 16) * 10
    labels = torch.arange(4).repeat_interleave(n_per_class)
    return centres[labels] + torch.randn(len(labels), 16, generator=gen), labels


def test_knn_on_separable_features_is_perfect():
    bank, bank_y = _separable(50, 0)
    queries, query_y = _separable(20, 1)
    assert knn_accuracy(bank, bank_y, queries, query_y, 4, k=20, temperature=0.1) == 100.0


def test_knn_on_random_labels_is_near_chance():
    bank, _ = _separable(50, 0)
    queries, query_y = _separable(20, 1)
    shuffled = torch.randint(0, 4, (200,), generator=torch.Generator().manual_seed(2))
    assert knn_accuracy(bank, shuffled, queries, query_y, 4, k=20) < 50.0


def test_linear_probe_learns_separable_features():
    train_x, train_y = _separable(50, 0)
    test_x, test_y = _separable(20, 1)
    assert linear_probe_accuracy(train_x, train_y, test_x, test_y, 4, epochs=50) == 100.0


def test_linear_probe_is_deterministic_for_a_seed():
    train_x, train_y = _separable(50, 0)
    test_x, test_y = _separable(20, 1)
    noisy = test_x + 8 * torch.randn(test_x.shape, generator=torch.Generator().manual_seed(3))
    runs = [linear_probe_accuracy(train_x, train_y, noisy, test_y, 4, epochs=3) for _ in range(2)]
    torch.rand(5)  # the probe must not depend on the global RNG's position
    runs.append(linear_probe_accuracy(train_x, train_y, noisy, test_y, 4, epochs=3))
    assert runs[0] == runs[1] == runs[2]
