"""Tests for the batched SimSiam augmentations in simsiam_lab.augment."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from baseline import cifar_augment

from simsiam_lab.augment import (
    Augmentation,
    BatchShard,
    _adjust_hue,
    _blur_kernel_size,
    _hsv_to_rgb,
    _rgb_to_hsv,
    augment,
    deterministic_view,
    sample_crop_params,
    two_views,
)

CFG = cifar_augment()
# Every random op off and the crop pinned to the full image: augment is the deterministic view.
IDENTITY = replace(
    CFG, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, grayscale_p=0.0
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(n: int = 8, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), generator=_gen(seed), dtype=torch.uint8)


def _unnormalise(x: torch.Tensor, cfg: Augmentation) -> torch.Tensor:
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1)
    return x * std + mean


def _total_variation(x: torch.Tensor) -> float:
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().mean()
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().mean()
    return float(dx + dy)


@pytest.mark.parametrize("size", [32, 24, 48])
def test_shape_dtype_device(size: int) -> None:
    images = _images(4, 40)
    out = augment(images, size, replace(CFG, blur_p=0.5), _gen(1))
    assert out.shape == (4, 3, size, size)
    assert out.dtype == torch.float32
    assert out.device == images.device
    assert torch.isfinite(out).all()


def test_non_square_input() -> None:
    images = torch.randint(0, 256, (3, 3, 20, 50), generator=_gen(0), dtype=torch.uint8)
    assert augment(images, 16, CFG, _gen(0)).shape == (3, 3, 16, 16)
    assert deterministic_view(images, CFG, size=16).shape == (3, 3, 16, 16)


def test_normalize_maps_mean_colour_to_zero() -> None:
    colour = torch.tensor([round(m * 255) for m in CFG.mean], dtype=torch.uint8)
    images = colour.view(1, 3, 1, 1).expand(2, 3, 32, 32).contiguous()
    # Half a uint8 step divided by the smallest std bounds the rounding error.
    tol = 0.5 / 255 / min(CFG.std) + 1e-6
    assert deterministic_view(images, CFG).abs().max() <= tol
    resized = deterministic_view(images, CFG, size=16)
    assert resized.shape == (2, 3, 16, 16)
    assert resized.abs().max() <= tol


def test_normalize_unit_std() -> None:
    images = torch.full((1, 3, 4, 4), 255, dtype=torch.uint8)
    expected = torch.tensor([(1 - m) / s for m, s in zip(CFG.mean, CFG.std, strict=True)])
    torch.testing.assert_close(deterministic_view(images, CFG)[0, :, 0, 0], expected)


def test_same_seed_same_output_different_seed_differs() -> None:
    images = _images()
    cfg = replace(CFG, blur_p=0.5)
    a = augment(images, 32, cfg, _gen(123))
    b = augment(images, 32, cfg, _gen(123))
    c = augment(images, 32, cfg, _gen(124))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_two_views_differ() -> None:
    v1, v2 = two_views(_images(), 32, CFG, _gen(7))
    assert v1.shape == v2.shape == (8, 3, 32, 32)
    # Each image's two views must differ, not just the batch as a whole.
    per_image = (v1 - v2).flatten(1).abs().amax(dim=1)
    assert (per_image > 1e-3).all()


def test_identity_geometry_matches_the_deterministic_view() -> None:
    images = _images(4, 32)
    out = augment(images, 32, IDENTITY, _gen(0))
    torch.testing.assert_close(out, deterministic_view(images, IDENTITY), atol=1e-5, rtol=0)


def test_flip_mirrors_width() -> None:
    images = _images(4, 16)
    out = augment(images, 16, replace(IDENTITY, flip_p=1.0), _gen(0))
    torch.testing.assert_close(out, deterministic_view(images, CFG).flip(-1), atol=1e-5, rtol=0)


def test_crop_params_stay_inside_image() -> None:
    p = sample_crop_params(20_000, 32, 48, CFG, _gen(0))
    eps = 1e-6
    for key in ("x0", "y0", "w", "h"):
        assert p[key].shape == (20_000,)
        assert (p[key] >= 0).all()
    assert (p["x0"] + p["w"] <= 1 + eps).all()
    assert (p["y0"] + p["h"] <= 1 + eps).all()
    assert p["flip"].dtype == torch.bool


def test_crop_area_uniform_for_square_ratio() -> None:
    # A large image, so that rounding crops to whole pixels does not blur the distribution.
    p = sample_crop_params(20_000, 1024, 1024, replace(CFG, crop_ratio=(1.0, 1.0)), _gen(1))
    area = p["w"] * p["h"]
    lo, hi = CFG.crop_scale
    assert area.min() >= lo - 1e-3
    assert area.max() <= hi + 1e-3
    # U(0.2, 1): mean 0.6, variance 0.8^2 / 12.
    assert abs(float(area.mean()) - 0.6) < 0.01
    assert abs(float(area.var()) - 0.8**2 / 12) < 0.003
    assert abs(float(p["flip"].float().mean()) - 0.5) < 0.02


def _torchvision_crops(n: int, height: int, width: int, seed: int) -> dict[str, torch.Tensor]:
    """torchvision's own RandomResizedCrop draws, as fractions of the image."""
    from torchvision.transforms import RandomResizedCrop

    torch.manual_seed(seed)
    image = torch.zeros(3, height, width)
    boxes = torch.tensor(
        [RandomResizedCrop.get_params(image, CFG.crop_scale, CFG.crop_ratio) for _ in range(n)],
        dtype=torch.float64,
    )  # (top, left, h, w) in pixels
    return {"w": boxes[:, 3] / width, "h": boxes[:, 2] / height}


@pytest.mark.parametrize(("height", "width"), [(224, 224), (96, 160)])
def test_crop_distribution_matches_torchvision(height: int, width: int) -> None:
    n = 20_000
    ours = sample_crop_params(n, height, width, CFG, _gen(2))
    theirs = _torchvision_crops(n, height, width, seed=2)

    def stats(p: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        w, h = p["w"].double(), p["h"].double()
        return {
            "area": w * h,
            "log_ratio": torch.log(w * width / (h * height)),
            "full_side": ((w > 1 - 1e-9) | (h > 1 - 1e-9)).double(),
        }

    a, b = stats(ours), stats(theirs)
    qs = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9], dtype=torch.float64)
    # 20k draws: the mean's standard error is about 0.0017 for the area, so 0.01 is ~6 se;
    # pixel rounding in torchvision moves its quantiles by well under 0.01.
    assert abs(float(a["area"].mean() - b["area"].mean())) < 0.01
    torch.testing.assert_close(a["area"].quantile(qs), b["area"].quantile(qs), atol=0.015, rtol=0)
    torch.testing.assert_close(
        a["log_ratio"].quantile(qs), b["log_ratio"].quantile(qs), atol=0.02, rtol=0
    )
    assert abs(float(a["full_side"].mean() - b["full_side"].mean())) < 0.01


def test_crop_falls_back_to_centre_when_nothing_fits() -> None:
    # Scale (0.99, 1) with ratios 3 to 4 fits no candidate in a square image: every crop is
    # torchvision's fallback, the full width at ratio 3, centred.
    from torchvision.transforms import RandomResizedCrop

    cfg = replace(CFG, crop_scale=(0.99, 1.0), crop_ratio=(3.0, 4.0))
    p = sample_crop_params(100, 32, 32, cfg, _gen(3))
    top, left, h, w = RandomResizedCrop.get_params(torch.zeros(3, 32, 32), (0.99, 1.0), (3.0, 4.0))
    for key, pixels in {"x0": left, "y0": top, "w": w, "h": h}.items():
        torch.testing.assert_close(p[key], torch.full((100,), pixels / 32))


def _rate(changed: torch.Tensor) -> float:
    return float(changed.float().mean())


def test_flip_and_grayscale_rates_match_torchvision() -> None:
    from torchvision.transforms import v2

    n = 4000
    images = _images(n, 8, seed=5)
    ours_flip = augment(images, 8, replace(IDENTITY, flip_p=CFG.flip_p), _gen(6))
    flipped = (ours_flip - deterministic_view(images, CFG).flip(-1)).flatten(1).abs().amax(1) < 1e-5
    ours_gray = _unnormalise(augment(images, 8, replace(IDENTITY, grayscale_p=0.2), _gen(7)), CFG)
    gray = (ours_gray[:, 0] - ours_gray[:, 1]).flatten(1).abs().amax(1) < 1e-5
    torch.manual_seed(8)
    tv_flip = [
        bool(torch.equal(v2.RandomHorizontalFlip(CFG.flip_p)(x), x.flip(-1))) for x in images
    ]
    tv_gray = [bool(torch.equal((g := v2.RandomGrayscale(0.2)(x))[0], g[1])) for x in images]
    # Binomial standard error at n = 4000 is under 0.008; 0.03 is about 4 se for the pair.
    assert abs(_rate(flipped) - _rate(torch.tensor(tv_flip))) < 0.03
    assert abs(_rate(gray) - _rate(torch.tensor(tv_gray))) < 0.03


def test_jitter_rate_and_brightness_factors_match_torchvision() -> None:
    from torchvision.transforms import v2

    n = 4000
    flat = torch.full((n, 3, 4, 4), 128, dtype=torch.uint8)
    cfg = replace(IDENTITY, jitter_p=CFG.jitter_p, contrast=0.0, saturation=0.0, hue=0.0)
    ours = _unnormalise(augment(flat, 4, cfg, _gen(9)), cfg)[:, 0, 0, 0] / (128 / 255)
    torch.manual_seed(10)
    jitter = v2.RandomApply([v2.ColorJitter(brightness=CFG.brightness)], p=CFG.jitter_p)
    theirs = torch.stack([jitter(x.float() / 255)[0, 0, 0] for x in flat]) / (128 / 255)
    changed = lambda f: (f - 1).abs() > 1e-3  # noqa: E731
    assert abs(_rate(changed(ours)) - _rate(changed(theirs))) < 0.03
    qs = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9])
    torch.testing.assert_close(ours.quantile(qs), theirs.quantile(qs), atol=0.03, rtol=0)


def test_jitter_probability() -> None:
    cfg = replace(IDENTITY, jitter_p=0.8)
    images = _images(4000, 8, seed=3)
    out = augment(images, 8, cfg, _gen(4))
    changed = (out - deterministic_view(images, cfg)).flatten(1).abs().amax(dim=1) > 1e-4
    assert abs(float(changed.float().mean()) - 0.8) < 0.03


@pytest.mark.parametrize("field", ["brightness", "contrast", "saturation", "hue"])
def test_each_jitter_op_changes_image(field: str) -> None:
    off = {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "hue": 0.0}
    cfg = replace(IDENTITY, jitter_p=1.0, **{**off, field: getattr(CFG, field)})
    images = _images(16, 8)
    out = augment(images, 8, cfg, _gen(5))
    changed = (out - deterministic_view(images, cfg)).flatten(1).abs().amax(dim=1) > 1e-4
    assert changed.all()
    x = _unnormalise(out, cfg)
    assert x.min() >= -1e-5
    assert x.max() <= 1 + 1e-5


def test_brightness_scales_pixels() -> None:
    # With a single-valued factor range the op is exactly x * 1.4, clamped.
    cfg = replace(IDENTITY, jitter_p=1.0, brightness=0.4, contrast=0.0, saturation=0.0, hue=0.0)
    images = torch.full((2, 3, 4, 4), 100, dtype=torch.uint8)
    x = _unnormalise(augment(images, 4, cfg, _gen(0)), cfg)
    factor = x / (100 / 255)
    assert factor.min() >= 0.6 - 1e-4
    assert factor.max() <= 1.4 + 1e-4
    # One factor per image, shared by every pixel and channel.
    assert torch.allclose(factor, factor[:, :1, :1, :1].expand_as(factor), atol=1e-4)


def test_grayscale_equalises_channels() -> None:
    cfg = replace(IDENTITY, grayscale_p=1.0)
    images = _images(8, 16)
    x = _unnormalise(augment(images, 16, cfg, _gen(0)), cfg)
    torch.testing.assert_close(x[:, 0], x[:, 1], atol=1e-5, rtol=0)
    torch.testing.assert_close(x[:, 0], x[:, 2], atol=1e-5, rtol=0)
    rgb = images.float() / 255
    gray = 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]
    torch.testing.assert_close(x[:, 0], gray, atol=1e-5, rtol=0)


def test_grayscale_probability() -> None:
    cfg = replace(IDENTITY, grayscale_p=0.2)
    x = _unnormalise(augment(_images(4000, 4, seed=1), 4, cfg, _gen(2)), cfg)
    gray = ((x[:, 0] - x[:, 1]).abs() + (x[:, 0] - x[:, 2]).abs()).flatten(1).amax(dim=1) < 1e-5
    assert abs(float(gray.float().mean()) - 0.2) < 0.03


def test_hsv_round_trip() -> None:
    x = torch.rand(4, 3, 16, 16, generator=_gen(0))
    x[0] = 0.5  # grey pixels: hue undefined, must not become NaN
    x[1, :, 0, 0] = 0.0  # black
    torch.testing.assert_close(_hsv_to_rgb(_rgb_to_hsv(x)), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(_adjust_hue(x, torch.zeros(4)), x, atol=1e-5, rtol=0)


def test_hsv_known_values() -> None:
    rgb = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.5, 0.25, 0.25]])
    hsv = _rgb_to_hsv(rgb.view(4, 3, 1, 1)).view(4, 3)
    expected = torch.tensor(
        [[0.0, 1.0, 1.0], [1 / 3, 1.0, 1.0], [2 / 3, 1.0, 1.0], [0.0, 0.5, 0.5]]
    )
    torch.testing.assert_close(hsv, expected, atol=1e-6, rtol=0)


def test_hue_half_turn_red_to_cyan() -> None:
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    cyan = _adjust_hue(red, torch.tensor([0.5]))
    torch.testing.assert_close(cyan.view(3), torch.tensor([0.0, 1.0, 1.0]), atol=1e-6, rtol=0)
    # A third of a turn maps red to green; a negative shift goes the other way to blue.
    green = _adjust_hue(red, torch.tensor([1 / 3])).view(3)
    blue = _adjust_hue(red, torch.tensor([-1 / 3])).view(3)
    torch.testing.assert_close(green, torch.tensor([0.0, 1.0, 0.0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(blue, torch.tensor([0.0, 0.0, 1.0]), atol=1e-5, rtol=0)


def test_blur_kernel_size() -> None:
    assert _blur_kernel_size(224) == 23
    assert _blur_kernel_size(32) == 3
    assert _blur_kernel_size(8) == 3
    assert _blur_kernel_size(96) % 2 == 1


def test_blur_smooths() -> None:
    images = _images(16, 32)
    sharp = _unnormalise(augment(images, 32, IDENTITY, _gen(0)), IDENTITY)
    # sigma >= 1 so every image is visibly blurred; at sigma = 0.1 the kernel is nearly a delta.
    cfg = replace(IDENTITY, blur_p=1.0, blur_sigma=(1.0, 2.0))
    blurred = _unnormalise(augment(images, 32, cfg, _gen(0)), cfg)
    for i in range(images.shape[0]):
        assert _total_variation(blurred[i]) < 0.8 * _total_variation(sharp[i])
    # Blurring is a convex combination of pixels: mean and range are preserved.
    torch.testing.assert_close(blurred.mean(dim=(2, 3)), sharp.mean(dim=(2, 3)), atol=0.01, rtol=0)
    assert blurred.min() >= -1e-5
    assert blurred.max() <= 1 + 1e-5


def test_blur_keeps_constant_image_constant() -> None:
    cfg = replace(CFG, blur_p=1.0)
    images = torch.full((4, 3, 32, 32), 77, dtype=torch.uint8)
    images[:, 1] = 150
    out = augment(images, 32, cfg, _gen(0))
    spread = out.amax(dim=(2, 3)) - out.amin(dim=(2, 3))
    assert spread.max() < 1e-4


def test_cross_device_generator_params() -> None:
    # Parameters come from the generator's device; the result follows the images.
    p = sample_crop_params(5, 32, 32, CFG, _gen(0), device="cpu")
    assert all(t.device.type == "cpu" for t in p.values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_images_cpu_generator() -> None:
    images = _images(4, 32).cuda()
    out = augment(images, 32, replace(CFG, blur_p=0.5), _gen(0))
    assert out.device == images.device
    ref = augment(images.cpu(), 32, replace(CFG, blur_p=0.5), _gen(0))
    torch.testing.assert_close(out.cpu(), ref, atol=1e-4, rtol=0)


def test_shards_of_a_batch_augment_as_the_whole_batch():
    """N data-parallel processes, each drawing for the whole batch, produce its views exactly."""
    images = torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8)
    cfg = replace(CFG, blur_p=0.5)
    whole = two_views(images, 24, cfg, _gen(7))
    for shards in (2, 3):
        n = 12 // shards
        parts = [
            two_views(images[r * n : (r + 1) * n], 24, cfg, _gen(7), BatchShard(r * n, 12))
            for r in range(shards)
        ]
        for view in (0, 1):
            torch.testing.assert_close(torch.cat([p[view] for p in parts]), whole[view])
