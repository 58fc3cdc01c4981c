"""The benchmark compares like with like: from the same weights, every contender computes the
same loss and the same gradients as our step."""

import sys
from pathlib import Path

import pytest
import torch

from simsiam_lab.loss import SimSiamLoss
from simsiam_lab.model import ModelConfig, ResNetTrunk, SimSiam

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
from peers import LightlySimSiam, ReferenceSimSiam, lightly_loss, reference_loss


def _ours() -> SimSiam:
    torch.manual_seed(0)
    cfg = ModelConfig("resnet18", width=8, cifar_stem=True, dim=32, predictor_hidden_dim=8)
    return SimSiam(cfg)


def _with_our_weights(peer: torch.nn.Module, ours: SimSiam) -> torch.nn.Module:
    """Same layers in the same order: copy tensor by tensor."""
    theirs, mine = peer.state_dict(), ours.state_dict()
    assert [t.shape for t in theirs.values()] == [t.shape for t in mine.values()]
    peer.load_state_dict(dict(zip(theirs, mine.values(), strict=True)))
    return peer


@pytest.mark.parametrize("peer", ["reference", "lightly"])
def test_a_peer_computes_our_loss_and_gradients(peer: str):
    if peer == "lightly":
        pytest.importorskip("lightly", reason="benchmark-only dependency: pip install '.[bench]'")
        cls, loss_fn = LightlySimSiam, lightly_loss
    else:
        cls, loss_fn = ReferenceSimSiam, reference_loss
    ours = _ours()
    model = _with_our_weights(cls(ResNetTrunk("resnet18", 8, True), 64, 32, 8), ours)
    torch.manual_seed(1)
    x1, x2 = torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)

    loss = SimSiamLoss("cosine", stop_gradient=True, symmetric=True)(*ours(x1, x2))
    loss.backward()
    peer_loss = loss_fn(model, x1, x2)
    peer_loss.backward()
    assert peer_loss.item() == pytest.approx(loss.item(), abs=1e-6)
    grads = [p.grad for p in ours.parameters()]
    peer_grads = [p.grad for p in model.parameters()]
    assert len(grads) == len(peer_grads)
    for g, h in zip(grads, peer_grads, strict=True):
        torch.testing.assert_close(h, g, atol=1e-6, rtol=1e-4)
