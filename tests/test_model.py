import torch
from baseline import model_config
from torch import nn
from torchvision.models import resnet18, resnet50

from simsiam_lab.model import ResNetTrunk, SimSiam


def _signature(module: nn.Sequential) -> list[tuple]:
    out = []
    for layer in module:
        if isinstance(layer, nn.Linear):
            out.append(("Linear", layer.in_features, layer.out_features, layer.bias is not None))
        elif isinstance(layer, nn.BatchNorm1d):
            out.append(("BN", layer.num_features, layer.affine))
        else:
            out.append((type(layer).__name__,))
    return out


def test_default_heads_match_builder_py():
    """facebookresearch/simsiam builder.py with ResNet-50, dim=2048, pred_dim=512.

    Its projector's last Linear has a bias that builder.py freezes (requires_grad=False)
    because BN follows; here that Linear has no bias, which is equivalent.
    """
    model = SimSiam(model_config())  # params/baseline.yaml: builder.py's
    assert _signature(model.projector) == [
        ("Linear", 2048, 2048, False),
        ("BN", 2048, True),
        ("ReLU",),
        ("Linear", 2048, 2048, False),
        ("BN", 2048, True),
        ("ReLU",),
        ("Linear", 2048, 2048, False),
        ("BN", 2048, False),
    ]
    assert _signature(model.predictor) == [
        ("Linear", 2048, 512, False),
        ("BN", 512, True),
        ("ReLU",),
        ("Linear", 512, 2048, True),
    ]


def test_trunk_at_width_64_is_torchvisions_resnet():
    for ours, theirs in (
        (ResNetTrunk("resnet18"), resnet18()),
        (ResNetTrunk("resnet50"), resnet50()),
    ):
        theirs.fc = nn.Identity()
        shapes = [p.shape for p in ours.parameters()]
        assert shapes == [p.shape for p in theirs.parameters()]


def test_zero_init_residual():
    trunk = ResNetTrunk("resnet18", width=8, cifar_stem=True)
    assert all(block.bn2.weight.abs().sum() == 0 for block in trunk.layer1)


def test_cifar_stem_keeps_resolution_until_layer2():
    trunk = ResNetTrunk("resnet18", width=8, cifar_stem=True)
    x = torch.randn(2, 3, 32, 32)
    assert trunk.layer1(trunk.maxpool(trunk.relu(trunk.bn1(trunk.conv1(x))))).shape[-1] == 32
    assert trunk(x).shape == (2, 64)


def test_bn_switches(small_simsiam):
    none = small_simsiam(
        projector_hidden_bn=False, projector_output_bn=False, predictor_hidden_bn=False
    )
    assert not any(isinstance(m, nn.BatchNorm1d) for m in [*none.projector, *none.predictor])
    assert all(m.bias is not None for m in none.projector if isinstance(m, nn.Linear))
    affine = small_simsiam(projector_output_bn_affine=True)
    assert affine.projector[-1].affine
    pred_out = small_simsiam(predictor_output_bn=True)
    assert isinstance(pred_out.predictor[-1], nn.BatchNorm1d)
    assert pred_out.predictor[-2].bias is None


def test_forward_shapes_and_no_predictor(small_simsiam):
    model = small_simsiam()
    x = torch.randn(4, 3, 32, 32)
    p1, _, z1, _ = model(x, x)
    assert p1.shape == z1.shape == (4, 32)
    identity = small_simsiam(predictor=False)
    p1, _, z1, _ = identity(x, x)
    assert torch.equal(p1, z1)
