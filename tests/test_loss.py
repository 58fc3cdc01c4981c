import pytest
import torch

from simsiam_lab.loss import SimSiamLoss, cross_entropy, negative_cosine


def test_negative_cosine_is_minus_cos():
    p, z = torch.randn(8, 16), torch.randn(8, 16)
    expected = -(p / p.norm(dim=1, keepdim=True) * z / z.norm(dim=1, keepdim=True)).sum(1).mean()
    assert torch.allclose(negative_cosine(p, z), expected, atol=1e-6)


def test_negative_cosine_reaches_minus_one_only_when_aligned():
    z = torch.randn(4, 16)
    assert negative_cosine(3.0 * z, z).item() == pytest.approx(-1.0, abs=1e-6)
    assert negative_cosine(-z, z).item() == pytest.approx(1.0, abs=1e-6)
    assert negative_cosine(z + 0.5 * torch.randn(4, 16), z).item() > -1.0 + 1e-3


def test_cross_entropy_similarity_matches_formula():
    p, z = torch.randn(5, 7), torch.randn(5, 7)
    expected = -(z.softmax(1) * p.log_softmax(1)).sum(1).mean()
    assert torch.allclose(cross_entropy(p, z), expected, atol=1e-6)


def _branches(requires_grad=True):
    torch.manual_seed(0)
    return [torch.randn(6, 8, requires_grad=requires_grad) for _ in range(4)]


def test_stop_gradient_blocks_the_target_branch():
    p1, p2, z1, z2 = _branches()
    SimSiamLoss(stop_gradient=True)(p1, p2, z1, z2).backward()
    assert z1.grad is None and z2.grad is None
    assert p1.grad.abs().sum() > 0 and p2.grad.abs().sum() > 0


def test_without_stop_gradient_the_target_gets_gradient():
    p1, p2, z1, z2 = _branches()
    SimSiamLoss(stop_gradient=False)(p1, p2, z1, z2).backward()
    assert z1.grad.abs().sum() > 0 and z2.grad.abs().sum() > 0


def test_symmetric_is_the_mean_of_both_directions_and_asymmetric_one():
    p1, p2, z1, z2 = _branches(requires_grad=False)
    sym = SimSiamLoss(symmetric=True)(p1, p2, z1, z2)
    assert torch.allclose(sym, 0.5 * (negative_cosine(p1, z2) + negative_cosine(p2, z1)))
    asym = SimSiamLoss(symmetric=False)(p1, p2, z1, z2)
    assert torch.allclose(asym, negative_cosine(p1, z2))


def test_unknown_similarity_is_rejected():
    with pytest.raises(ValueError, match="cosine"):
        SimSiamLoss(similarity="euclid")


def test_the_schema_allows_exactly_the_similarities_the_loss_defines():
    from pathlib import Path

    import yaml

    from simsiam_lab.loss import SIMILARITIES

    schema = yaml.safe_load(
        (Path(__file__).parents[1] / "src/simsiam_lab/config.schema.yaml").read_text()
    )
    allowed = schema["properties"]["loss"]["properties"]["similarity"]["enum"]
    assert sorted(allowed) == sorted(SIMILARITIES)


def test_the_cosine_s_lowest_loss_is_that_of_a_batch_constant_but_for_one_image():
    # Unit-variance BN channels over B = 8: seven outputs equal, one apart, and the image set
    # apart differs between the two views (image 7 in one, image 0 in the other).
    from simsiam_lab.loss import SIMILARITIES

    batch = 8

    def apart(image: int) -> torch.Tensor:
        z = torch.ones(batch, 2)
        z[image] = -(batch - 1.0)
        return (z - z.mean(0)) / z.std(0, unbiased=False)

    z1, z2 = apart(batch - 1), apart(0)
    loss = 0.5 * (negative_cosine(z1, z2) + negative_cosine(z2, z1)).item()
    assert loss == pytest.approx(SIMILARITIES["cosine"].lowest(batch))
