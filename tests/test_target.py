import pytest
import torch

from simsiam_lab.model import SimSiam
from simsiam_lab.target import Batch, LiveTarget, MovingAverageTarget, SnapshotTarget


@pytest.fixture
def model(small_simsiam) -> SimSiam:
    return small_simsiam(width=4, dim=16)


def _live_z(model: SimSiam, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.projector(model.backbone(x))


def _perturb(model: SimSiam) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))


def _batch(x: torch.Tensor, step: int) -> Batch:
    """Both views the same images, as the snapshot tests compare them with the live network."""
    return Batch(x, x, torch.arange(len(x)), step)


def _at(idx: torch.Tensor, step: int) -> Batch:
    """What the moving average reads of a step: its images' indices (views unused)."""
    return Batch(torch.empty(0), torch.empty(0), idx, step)


def test_a_moving_average_keeps_the_gradient_decision_to_the_loss():
    memory = MovingAverageTarget(2, 2, 0.5, torch.device("cpu"))
    z1, z2 = torch.randn(2, 2, requires_grad=True), torch.randn(2, 2, requires_grad=True)
    t1, t2 = memory((z1, z2), _at(torch.arange(2), 0))
    assert t1 is z1  # passed on: loss.stop_gradient decides
    assert not t2.requires_grad  # the running average is no function of the weights


def test_live_target_is_the_networks_own_z():
    z = (torch.randn(2, 3), torch.randn(2, 3))
    assert LiveTarget()(z, Batch(*z, torch.arange(2), 0)) is z


def test_snapshot_refreshed_every_step_equals_the_live_network(model):
    x = torch.randn(8, 3, 16, 16)
    snapshot = SnapshotTarget(model, refresh_every=1)
    for step in range(2):
        t1, _ = snapshot((None, None), _batch(x, step))
        assert torch.allclose(t1, _live_z(model, x), atol=1e-5)
        _perturb(model)


def test_snapshot_holds_its_weights_for_k_steps(model):
    x = torch.randn(8, 3, 16, 16)
    snapshot = SnapshotTarget(model, refresh_every=3)
    first, _ = snapshot((None, None), _batch(x, 0))
    _perturb(model)
    held, _ = snapshot((None, None), _batch(x, 1))
    assert torch.equal(held, first)
    assert not torch.allclose(held, _live_z(model, x), atol=1e-3)
    refreshed, _ = snapshot((None, None), _batch(x, 3))
    assert torch.allclose(refreshed, _live_z(model, x), atol=1e-5)


def test_snapshot_target_gets_no_gradient(model):
    x = torch.randn(4, 3, 16, 16)
    t1, t2 = SnapshotTarget(model, 1)((None, None), _batch(x, 0))
    assert not t1.requires_grad and not t2.requires_grad


def test_moving_average_memory():
    memory = MovingAverageTarget(n_images=5, dim=2, momentum=0.8, device=torch.device("cpu"))
    idx = torch.tensor([1, 3])
    z2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    _, eta = memory((torch.zeros(2, 2), z2), _at(idx, 0))
    assert torch.equal(eta, z2)  # first visit: the average starts at the output
    _, eta = memory((torch.zeros(2, 2), torch.zeros(2, 2)), _at(idx, 1))
    assert torch.allclose(eta, 0.8 * z2)
    assert torch.equal(memory.memory[[0, 2, 4]], torch.zeros(3, 2))  # other images untouched


@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_moving_average_update_rule(momentum):
    memory = MovingAverageTarget(3, 2, momentum, torch.device("cpu"))
    idx = torch.tensor([0])
    memory((torch.zeros(1, 2), torch.ones(1, 2)), _at(idx, 0))
    _, eta = memory((torch.zeros(1, 2), 3 * torch.ones(1, 2)), _at(idx, 1))
    assert torch.allclose(eta, (momentum * 1 + (1 - momentum) * 3) * torch.ones(1, 2))
