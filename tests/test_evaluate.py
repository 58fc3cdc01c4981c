import math

import pytest
import torch
from baseline import cifar_augment

from simsiam_lab.data import Split
from simsiam_lab.evaluate import (
    LARC,
    ProbeSchedule,
    centre_crop,
    collapse_std,
    knn_predict,
    linear_probe_accuracy,
    paper_linear_probe_accuracy,
    top1,
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
    assert top1(knn_predict(bank, bank_y, queries, 4, k=20, temperature=0.1), query_y) == 100.0


def test_knn_on_random_labels_is_near_chance():
    bank, _ = _separable(50, 0)
    queries, query_y = _separable(20, 1)
    shuffled = torch.randint(0, 4, (200,), generator=torch.Generator().manual_seed(2))
    assert top1(knn_predict(bank, shuffled, queries, 4, k=20), query_y) < 50.0


def _schedule(epochs: int) -> ProbeSchedule:
    """The cached probe's schedule as the cpu profile has it, but for the epochs."""
    return ProbeSchedule(epochs, lr=0.1, batch_size=256, weight_decay=0.0, seed=0)


@pytest.mark.trains
def test_linear_probe_learns_separable_features():
    train_x, train_y = _separable(50, 0)
    test_x, test_y = _separable(20, 1)
    assert linear_probe_accuracy(train_x, train_y, test_x, test_y, 4, _schedule(epochs=50)) == 100.0


def test_linear_probe_is_deterministic_for_a_seed():
    train_x, train_y = _separable(50, 0)
    test_x, test_y = _separable(20, 1)
    noisy = test_x + 8 * torch.randn(test_x.shape, generator=torch.Generator().manual_seed(3))
    runs = [
        linear_probe_accuracy(train_x, train_y, noisy, test_y, 4, _schedule(epochs=3))
        for _ in range(2)
    ]
    torch.rand(5)  # the probe must not depend on the global RNG's position
    runs.append(linear_probe_accuracy(train_x, train_y, noisy, test_y, 4, _schedule(epochs=3)))
    assert runs[0] == runs[1] == runs[2]


def test_larc_scales_each_tensors_step_by_its_trust_ratio():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4, 3))
    b = torch.nn.Parameter(torch.zeros(4))
    w.grad, b.grad = torch.randn(4, 3), torch.randn(4)
    w0, gw, gb = w.detach().clone(), w.grad.clone(), b.grad.clone()
    lr, wd, trust = 0.5, 0.01, 0.001
    LARC(torch.optim.SGD([w, b], lr=lr, weight_decay=wd), trust=trust).step()
    rate = trust * w0.norm() / (gw.norm() + wd * w0.norm() + 1e-8)
    torch.testing.assert_close(w.detach(), w0 - lr * rate * (gw + wd * w0))
    torch.testing.assert_close(b.detach(), -lr * gb)  # zero norm: the plain SGD step


def _coloured_images(n_per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes a random conv net tells apart: red-ish vs blue-ish noise at 40 px."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(2).repeat_interleave(n_per_class)
    images = torch.randint(0, 120, (len(labels), 3, 40, 40), generator=gen, dtype=torch.uint8)
    images[labels == 0, 0] += 120
    images[labels == 1, 2] += 120
    return images, labels


@pytest.mark.trains
def test_the_paper_probe_learns_and_leaves_the_backbone_frozen(small_simsiam):
    backbone = small_simsiam().backbone
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    (train_x, train_y), (test_x, test_y) = _coloured_images(32, 0), _coloured_images(16, 1)
    # A random-init backbone's features are small (about 0.1), and LARC scales each step by
    # the classifier's own small norm: so few images need a high lr to train in 30 epochs.
    train, test = Split(train_x, train_y, ["r", "b"]), Split(test_x, test_y, ["r", "b"])
    accuracy = paper_linear_probe_accuracy(
        backbone, train, test, cifar_augment(), 32, ProbeSchedule(30, 16.0, 16, 0.0, 0)
    )
    # 100 at one torch thread and at two, and on this init with each of the probe's seeds 0 to
    # 5: far from where float drift would take it (an init seeded 3 stays at chance for 2 of 6).
    assert accuracy >= 90.0
    after = backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics included
    assert centre_crop(test_x, 32).shape[-2:] == (32, 32)
