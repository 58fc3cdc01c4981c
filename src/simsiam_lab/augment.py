"""Batched SimSiam augmentations on uint8 image tensors, on the images' own device.

Mirrors the paper's torchvision pipeline but draws every per-sample parameter as a tensor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .config import RunConfig

__all__ = [
    "Augmentation",
    "augment",
    "augmentation",
    "deterministic_view",
    "photometric",
    "sample_crop_params",
    "two_views",
]

_GRAY_WEIGHTS = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class Augmentation:
    """The paper's augmentation. The first four come from a run's config (`augmentation`: its
    `augment` section and its dataset's statistics), so they have no defaults here; the rest
    are the paper's fixed recipe (main_simsiam.py), not config keys."""

    crop_scale: tuple[float, float]  # RandomResizedCrop area scale: (augment.crop_scale_min, 1)
    blur_p: float  # paper: 0.5 on ImageNet, 0 on CIFAR
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    grayscale_p: float = 0.2
    blur_sigma: tuple[float, float] = (0.1, 2.0)


CIFAR_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def augmentation(cfg: RunConfig) -> Augmentation:
    """A run config's augmentation, normalised with its dataset's channel statistics."""
    mean, std = CIFAR_STATS if cfg.data.dataset.startswith("cifar") else IMAGENET_STATS
    aug = cfg.augment
    return Augmentation(crop_scale=(aug.crop_scale_min, 1.0), blur_p=aug.blur_p, mean=mean, std=std)


# ---------------------------------------------------------------------------- randomness


@dataclass(frozen=True)
class BatchShard:
    """This process's rows [start, start + n) of a batch of `total` images.

    Every process draws the random parameters of the whole batch and keeps its own rows, so N
    data-parallel processes augment their shards exactly as one process augments the batch.
    """

    start: int
    total: int


def _draw(
    n: int,
    generator: torch.Generator | None,
    device: torch.device,
    shard: BatchShard | None,
    cols: int | None = None,
) -> torch.Tensor:
    """Uniform [0, 1) numbers of shape (n,) or (n, cols): this process's rows of the batch's."""
    dev = _gen_device(generator, device)
    total = n if shard is None else shard.total
    shape = (total,) if cols is None else (total, cols)
    drawn = torch.rand(shape, generator=generator, device=dev)
    return drawn if shard is None else drawn[shard.start : shard.start + n]


def _gen_device(generator: torch.Generator | None, fallback: torch.device) -> torch.device:
    # A generator can only fill tensors on its own device.
    return generator.device if generator is not None else fallback


def _uniform(
    n: int,
    low: float,
    high: float,
    generator: torch.Generator | None,
    device: torch.device,
    shard: BatchShard | None = None,
    cols: int | None = None,
) -> torch.Tensor:
    return (low + (high - low) * _draw(n, generator, device, shard, cols)).to(device)


def _bernoulli(
    n: int,
    p: float,
    generator: torch.Generator | None,
    device: torch.device,
    shard: BatchShard | None = None,
) -> torch.Tensor:
    return (_draw(n, generator, device, shard) < p).to(device)


CROP_ATTEMPTS = 10  # torchvision's RandomResizedCrop.get_params


def sample_crop_params(
    n: int,
    height: int,
    width: int,
    cfg: Augmentation,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    shard: BatchShard | None = None,
) -> dict[str, torch.Tensor]:
    """Per-sample RandomResizedCrop + flip parameters, as fractions of the image size.

    Drawn as torchvision draws them: up to 10 (area, aspect ratio) candidates per image, the
    first that fits inside the image wins, and an image with none falls back to the largest
    centre crop within the ratio range. Clamping an oversized candidate instead would give
    larger crops than the paper's (more of them spanning a full side).

    Returns float tensors ``x0``, ``y0`` (top-left corner), ``w``, ``h`` (crop size), all in
    [0, 1] with ``x0 + w <= 1`` and ``y0 + h <= 1``, and a bool tensor ``flip``; shape (n,).
    """
    device = (
        torch.device(device) if device is not None else _gen_device(generator, torch.device("cpu"))
    )
    k = CROP_ATTEMPTS
    area = _uniform(n, *cfg.crop_scale, generator, device, shard, cols=k) * (height * width)
    log_lo, log_hi = math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1])
    ratio = torch.exp(_uniform(n, log_lo, log_hi, generator, device, shard, cols=k))
    # Whole pixels, as torchvision rounds them: at 32 px half a pixel is 1.6% of a side.
    w_try = torch.round(torch.sqrt(area * ratio))
    h_try = torch.round(torch.sqrt(area / ratio))
    fits = (w_try >= 1) & (w_try <= width) & (h_try >= 1) & (h_try <= height)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # the first candidate that fits
    fallback = ~fits.any(dim=1)
    w_fb, h_fb = _centre_crop_fallback(height, width, cfg.crop_ratio)
    w = torch.where(fallback, w_fb, w_try.gather(1, first).squeeze(1))
    h = torch.where(fallback, h_fb, h_try.gather(1, first).squeeze(1))
    left = torch.floor(_uniform(n, 0.0, 1.0, generator, device, shard) * (width - w + 1))
    top = torch.floor(_uniform(n, 0.0, 1.0, generator, device, shard) * (height - h + 1))
    left = torch.where(fallback, torch.div(width - w, 2, rounding_mode="floor"), left)
    top = torch.where(fallback, torch.div(height - h, 2, rounding_mode="floor"), top)
    x0, y0, w, h = left / width, top / height, w / width, h / height
    flip = _bernoulli(n, cfg.flip_p, generator, device, shard)
    return {"x0": x0, "y0": y0, "w": w, "h": h, "flip": flip}


def _centre_crop_fallback(
    height: int, width: int, ratio: tuple[float, float]
) -> tuple[float, float]:
    """(w, h) in pixels: the whole image, cut to the nearest aspect ratio in range."""
    image_ratio = width / height
    if image_ratio < ratio[0]:
        return float(width), float(round(width / ratio[0]))
    if image_ratio > ratio[1]:
        return float(round(height * ratio[1])), float(height)
    return float(width), float(height)


# ---------------------------------------------------------------------------- geometry


def _to_float(images: torch.Tensor) -> torch.Tensor:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    # Float input is taken to be already in [0, 1].
    return images.float()


def _crop_flip_resize(x: torch.Tensor, size: int, params: dict[str, torch.Tensor]) -> torch.Tensor:
    n = x.shape[0]
    # With align_corners=False, -1 and +1 are the outer pixel edges, so a crop covering the
    # fraction [x0, x0 + w] maps to centre 2 * x0 + w - 1 and half-extent w.
    sx = torch.where(params["flip"], -params["w"], params["w"])
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = sx
    theta[:, 0, 2] = 2.0 * params["x0"] + params["w"] - 1.0
    theta[:, 1, 1] = params["h"]
    theta[:, 1, 2] = 2.0 * params["y0"] + params["h"] - 1.0
    grid = F.affine_grid(theta, [n, 3, size, size], align_corners=False)
    # Sampling the full image (not a cut-out crop) lets edge taps read the real neighbouring
    # pixels, where torchvision's crop-then-resize repeats the crop's edge; only the outermost
    # output row/column differs. Border padding keeps taps past the image edge off zeros.
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


# ---------------------------------------------------------------------------- colour


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(dim=1)
    return (_GRAY_WEIGHTS[0] * r + _GRAY_WEIGHTS[1] * g + _GRAY_WEIGHTS[2] * b).unsqueeze(1)


def _blend(x: torch.Tensor, other: torch.Tensor | float, factor: torch.Tensor) -> torch.Tensor:
    f = factor.view(-1, 1, 1, 1)
    # In place after the first product: the same arithmetic, one batch-sized allocation, not
    # three (on a CPU each is page-faulted in again, and that, not the math, set the pace).
    return (f * x).add_((1.0 - f) * other).clamp_(0.0, 1.0)


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(dim=1)
    # amax/amin rather than max/min: skipping the argmax is ~20x faster on CPU.
    maxc = x.amax(dim=1)
    minc = x.amin(dim=1)
    chroma = maxc - minc
    sat = chroma / torch.where(maxc > 0, maxc, torch.ones_like(maxc))
    # Grey pixels have no defined hue; the safe divisor makes it 0 instead of NaN.
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    hue = torch.where(
        maxc == r,
        (g - b) / safe,
        torch.where(maxc == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe),
    )
    return torch.stack((hue.div_(6.0).remainder_(1.0), sat, maxc), dim=1)


def _hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    hue, sat, val = x.unbind(dim=1)
    # Closed form f(n) = V - V*S*clamp(min(k, 4 - k), 0, 1) with k = (n + 6H) mod 6 and
    # n = 5, 3, 1 for R, G, B: branch-free, so it vectorises without sector indexing.
    n = torch.tensor([5.0, 3.0, 1.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    k = (n + 6.0 * hue.unsqueeze(1)).remainder_(6.0)
    ramp = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    # 1 - S*ramp, then times V, in place: the same roundings (a product commutes, and -t + 1
    # is 1 - t exactly), without three more batch-sized allocations.
    return ramp.mul_(sat.unsqueeze(1)).neg_().add_(1.0).mul_(val.unsqueeze(1))


def _adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    hsv = _rgb_to_hsv(x)
    hsv[:, 0].add_(shift.view(-1, 1, 1)).remainder_(1.0)
    return _hsv_to_rgb(hsv).clamp_(0.0, 1.0)


def _color_jitter(
    x: torch.Tensor, cfg: Augmentation, generator: torch.Generator | None, shard: BatchShard | None
) -> torch.Tensor:
    n, device = x.shape[0], x.device
    apply = _bernoulli(n, cfg.jitter_p, generator, device, shard)
    ops = []
    # Factor ranges follow torchvision: [max(0, 1 - s), 1 + s] and hue shift in [-h, h].
    if cfg.brightness > 0:
        f_b = _uniform(
            n, max(0.0, 1 - cfg.brightness), 1 + cfg.brightness, generator, device, shard
        )
        ops.append(lambda t: _blend(t, 0.0, f_b))
    if cfg.contrast > 0:
        f_c = _uniform(n, max(0.0, 1 - cfg.contrast), 1 + cfg.contrast, generator, device, shard)
        ops.append(lambda t: _blend(t, _grayscale(t).mean(dim=(1, 2, 3), keepdim=True), f_c))
    if cfg.saturation > 0:
        f_s = _uniform(
            n, max(0.0, 1 - cfg.saturation), 1 + cfg.saturation, generator, device, shard
        )
        ops.append(lambda t: _blend(t, _grayscale(t), f_s))
    if cfg.hue > 0:
        shift = _uniform(n, -cfg.hue, cfg.hue, generator, device, shard)
        ops.append(lambda t: _adjust_hue(t, shift))
    if not ops:
        return x
    # Deviation: torchvision shuffles the op order per sample; one order per batch keeps this a
    # fixed sequence of whole-batch ops, and the order still varies from batch to batch.
    order = torch.randperm(len(ops), generator=generator, device=_gen_device(generator, device))
    out = x
    for i in order.tolist():
        out = ops[i](out)
    return torch.where(apply.view(-1, 1, 1, 1), out, x)


def _random_grayscale(
    x: torch.Tensor, p: float, generator: torch.Generator | None, shard: BatchShard | None
) -> torch.Tensor:
    apply = _bernoulli(x.shape[0], p, generator, x.device, shard)
    return torch.where(apply.view(-1, 1, 1, 1), _grayscale(x).expand_as(x), x)


# ---------------------------------------------------------------------------- blur


def _blur_kernel_size(size: int) -> int:
    # The paper uses 23 px at 224 px, i.e. about 10% of the side, rounded down to odd.
    return max(3, int(0.1 * size) // 2 * 2 + 1)


def _random_blur(
    x: torch.Tensor, cfg: Augmentation, generator: torch.Generator | None, shard: BatchShard | None
) -> torch.Tensor:
    n, c, hgt, wid = x.shape
    apply = _bernoulli(n, cfg.blur_p, generator, x.device, shard)
    sigma = _uniform(n, *cfg.blur_sigma, generator, x.device, shard)
    k = _blur_kernel_size(hgt)
    taps = torch.arange(k, device=x.device, dtype=x.dtype) - (k - 1) / 2
    kernel = torch.exp(-(taps**2) / (2 * sigma.view(-1, 1) ** 2))
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)
    # Folding the batch into channels lets one grouped conv apply a different kernel per image.
    flat = F.pad(x.reshape(1, n * c, hgt, wid), [k // 2] * 4, mode="reflect")
    flat = F.conv2d(flat, kernel.view(n * c, 1, 1, k), groups=n * c)
    flat = F.conv2d(flat, kernel.view(n * c, 1, k, 1), groups=n * c)
    return torch.where(apply.view(-1, 1, 1, 1), flat.view(n, c, hgt, wid), x)


# ---------------------------------------------------------------------------- public API


def _standardise(x: torch.Tensor, cfg: Augmentation) -> torch.Tensor:
    mean = torch.tensor(cfg.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


def augment(
    images: torch.Tensor,
    size: int,
    cfg: Augmentation,
    generator: torch.Generator | None = None,
    shard: BatchShard | None = None,
) -> torch.Tensor:
    """images: uint8 (N, 3, H, W) on any device -> float32 (N, 3, size, size), normalised,
    one independent random view per image (`shard`: these images are rows of a larger batch)."""
    x = _to_float(images)
    n, _, hgt, wid = x.shape
    params = sample_crop_params(n, hgt, wid, cfg, generator, x.device, shard)
    return photometric(_crop_flip_resize(x, size, params), cfg, generator, shard)


def photometric(
    crops: torch.Tensor,
    cfg: Augmentation,
    generator: torch.Generator | None = None,
    shard: BatchShard | None = None,
) -> torch.Tensor:
    """`augment` after its crop: colour jitter, grayscale, blur and normalisation of views
    already cropped, resized and flipped (the streaming path crops in its DataLoader workers,
    from the full images). uint8 or [0, 1] float (N, 3, H, W) -> float32, normalised."""
    x = _to_float(crops)
    if cfg.jitter_p > 0:
        x = _color_jitter(x, cfg, generator, shard)
    if cfg.grayscale_p > 0:
        x = _random_grayscale(x, cfg.grayscale_p, generator, shard)
    if cfg.blur_p > 0:
        x = _random_blur(x, cfg, generator, shard)
    return _standardise(x, cfg)


def two_views(
    images: torch.Tensor,
    size: int,
    cfg: Augmentation,
    generator: torch.Generator | None = None,
    shard: BatchShard | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independently augmented views of the same batch."""
    first = augment(images, size, cfg, generator, shard)
    return first, augment(images, size, cfg, generator, shard)


def deterministic_view(
    images_uint8: torch.Tensor, cfg: Augmentation, size: int | None = None
) -> torch.Tensor:
    """Deterministic eval-time transform: uint8 -> float, optional resize to size (bilinear,
    antialias), normalised with cfg.mean/std."""
    x = _to_float(images_uint8)
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(
            x, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        ).clamp(0.0, 1.0)
    return _standardise(x, cfg)
