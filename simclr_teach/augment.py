"""The views of SimCLR for MNIST digits: one family of random transforms, two engines.

SimCLR (Chen et al., 2020, sec. 3, appendix A) makes two random views of a picture agree.
For 28x28 digits we keep random resized crop, a small affine warp, elastic deformation
(Simard et al., 2003), blur, Gaussian noise and random erasing. No flips (a mirrored 2 is
not a 2) and no colour jitter. `view_transform` is the per-image torchvision pipeline a
DataLoader runs; `BatchAugment` draws the same family for a whole batch at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2

SIDE = 28                              # MNIST digits are 28x28
CROP_RATIO = (3 / 4, 4 / 3)            # aspect-ratio range of the crop, as in SimCLR
ERASE_AREA = (0.02, 0.15)              # erased fraction of the area; more can hide the digit
ERASE_RATIO = (0.3, 3.3)               # aspect-ratio range of the erased rectangle
ELASTIC_SIGMA = 4.0                    # px; smoothing of the elastic field (Simard et al.)

# Allowed range of each field; `at_strength` saturates there. Widgets may use them for sliders.
PARAM_RANGES: dict[str, tuple[float, float]] = {
    "crop_scale": (0.08, 1.0), "rotation": (0.0, 180.0), "translate": (0.0, 0.5),
    "shear": (0.0, 45.0), "elastic": (0.0, 8.0), "noise": (0.0, 1.0), "blur": (0.0, 4.0),
    "erase_p": (0.0, 1.0),
}
_OFF = {name: 1.0 if name == "crop_scale" else 0.0 for name in PARAM_RANGES}  # the identity


@dataclass(frozen=True)
class AugmentParams:
    """Every knob of the view family (Chen et al., 2020, appendix A). Taught in 01_augmentations.

    A field at its "off" value (crop_scale 1.0, any other 0) switches that transform off.
    Ranges are in PARAM_RANGES; out-of-range values raise ValueError.
    """

    crop_scale: float = 0.6    # crop keeps a fraction in [crop_scale, 1] of the area, resized to
    #                            28x28; ImageNet SimCLR uses 0.08, a digit needs most of its strokes
    rotation: float = 15.0     # max degrees, uniform in [-r, r]; far more turns a 6 into a 9
    translate: float = 0.1     # max shift as a fraction of the side (0.1 = 2.8 px)
    shear: float = 10.0        # max x-shear in degrees, uniform in [-s, s]; slanted handwriting
    elastic: float = 0.0       # RMS displacement in px of a smooth random field (sigma 4 px);
    #                            Simard's alpha 34 is ~1.5 px; off: slow in torchvision
    noise: float = 0.1         # std of additive Gaussian noise on [0, 1] pixels, then clamped
    blur: float = 0.0          # max Gaussian blur sigma in px, sigma ~ U[0.1, blur]; off: a
    #                            28 px digit is already soft, blur mostly erases thin strokes
    erase_p: float = 0.25      # probability of erasing one rectangle of 2-15 % of the area

    def __post_init__(self) -> None:
        for name, (low, high) in PARAM_RANGES.items():
            value = getattr(self, name)
            if not low <= value <= high:       # also rejects NaN
                raise ValueError(f"AugmentParams.{name} must be in [{low}, {high}], got {value}")

    @classmethod
    def at_strength(cls, strength: float, base: AugmentParams | None = None) -> AugmentParams:
        """Scale the family from the identity (0) to `base` (1). Taught in 01_augmentations.

        Call it on the class: `AugmentParams.at_strength(2.0, params)`.

        Args:
            strength: >= 0. Each field moves linearly from its off value (crop_scale 1.0, the
                others 0) to its value in `base`; 2 is twice as strong, saturating at the end
                of the field's range (crop_scale >= 0.08, erase_p <= 1, ...).
            base: the family at strength 1; default AugmentParams().

        Returns:
            New AugmentParams; strength 0 gives exactly the identity.
        """
        if not strength >= 0 or math.isinf(strength):           # also rejects NaN
            raise ValueError(f"strength must be a finite number >= 0 (0 = no augmentation), "
                             f"got {strength}")
        base = cls() if base is None else base
        if strength == 1:
            return base
        values = {}
        for name, (low, high) in PARAM_RANGES.items():
            off = _OFF[name]
            values[name] = min(max(off + strength * (getattr(base, name) - off), low), high)
        return cls(**values)

    def disabled(self, *names: str) -> AugmentParams:
        """A copy with the named transforms off, for ablations. Taught in 01_augmentations.

        Args:
            names: field names, or "crop" for crop_scale.
        """
        valid = ["crop", *PARAM_RANGES]
        unknown = [name for name in names if name not in valid]
        if unknown:
            raise ValueError(f"unknown transform(s) {unknown}; valid names are {valid}")
        fields_off = ["crop_scale" if name == "crop" else name for name in names]
        return replace(self, **{name: _OFF[name] for name in fields_off})


def _to_unit_image(image: Tensor) -> tv_tensors.Image:
    """(1, 28, 28) uint8 -> float32 x / 255 exactly (bit-equal to BatchAugment); float kept."""
    if tuple(image.shape) != (1, SIDE, SIDE):
        raise ValueError(f"view_transform expects one digit of shape (1, 28, 28) or a 28x28 "
                         f"PIL image, got shape {tuple(image.shape)}")
    scale = 255.0 if image.dtype == torch.uint8 else 1.0    # float input is taken as [0, 1]
    return tv_tensors.Image(image.float() / scale)


def view_transform(strength: float = 1.0, params: AugmentParams | None = None) -> v2.Compose:
    """One random SimCLR view of one digit, per sample (torchvision v2). Taught in 01_augmentations.

    Order: to float, random resized crop, random affine (rotation, translate, shear), elastic,
    Gaussian blur, Gaussian noise, random erasing. Transforms at strength 0 are left out, so
    strength 0 is exactly x / 255. Randomness comes from torch's global RNG (that is how
    torchvision works); DataLoader workers seed it per worker.

    Args:
        strength: >= 0, scales `params` through AugmentParams.at_strength.
        params: the family at strength 1; default AugmentParams().

    Returns:
        A callable: uint8 tensor (1, 28, 28) or PIL image (mode "L") -> float32 (1, 28, 28)
        in [0, 1]. A float tensor input is taken to be in [0, 1] already.
    """
    p = AugmentParams.at_strength(strength, params)
    bilinear = v2.InterpolationMode.BILINEAR
    steps: list[v2.Transform] = [v2.ToImage(), v2.Lambda(_to_unit_image)]
    if p.crop_scale < 1:
        steps.append(v2.RandomResizedCrop(SIDE, scale=(p.crop_scale, 1.0), ratio=CROP_RATIO,
                                          interpolation=bilinear, antialias=True))
    if p.rotation or p.translate or p.shear:     # nearest is torchvision's default: too jaggy
        steps.append(v2.RandomAffine(p.rotation, (p.translate,) * 2 if p.translate else None,
                                     shear=p.shear or None, interpolation=bilinear))
    if p.elastic:                                # torchvision's alpha: px = alpha / 2 * field
        alpha = 2 * p.elastic / _field_std(SIDE)
        steps.append(v2.ElasticTransform(alpha=alpha, sigma=ELASTIC_SIGMA))
    if p.blur:
        steps.append(v2.GaussianBlur(2 * math.ceil(3 * p.blur) + 1, (min(0.1, p.blur), p.blur)))
    if p.noise:
        steps.append(v2.GaussianNoise(sigma=p.noise, clip=True))
    if p.erase_p:
        steps.append(v2.RandomErasing(p.erase_p, scale=ERASE_AREA, ratio=ERASE_RATIO, value=0.0))
    return v2.Compose(steps)


def _blur(x: Tensor, sigma: Tensor, radius: int) -> Tensor:
    """Separable Gaussian blur, one sigma per image: x (B, C, H, W), sigma (B,), reflect padding."""
    b, c, h, w = x.shape
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)       # (k,)
    kernel = torch.exp(-0.5 * (t / sigma[:, None]) ** 2)                          # (B, k)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)      # (B*C, k)
    y = F.pad(x.reshape(1, b * c, h, w), (radius,) * 4, mode="reflect")
    y = F.conv2d(y, kernel[:, None, None, :], groups=b * c)     # along rows, one kernel each
    y = F.conv2d(y, kernel[:, None, :, None], groups=b * c)     # along columns
    return y.reshape(b, c, h, w)


def _field_radius(side: int) -> int:
    return min(4 * int(ELASTIC_SIGMA), side - 1)      # kernel 8 sigma + 1 wide, as torchvision


def _field_std(side: int) -> float:
    """RMS of U(-1, 1) noise after the elastic smoothing, reflect edges included: with M the
    smoothing matrix of one axis, pixel (i, j) has variance |M_i|^2 |M_j|^2 / 3."""
    eye = torch.eye(side)[None, None]                                  # (1, 1, S, S)
    norms = _blur(eye, torch.tensor([ELASTIC_SIGMA]), _field_radius(side))[0, 0].diagonal()
    return float((norms[:, None] * norms[None, :]).mean().sqrt() / math.sqrt(3))


def _affine_grid(theta: Tensor, side: int) -> Tensor:
    """F.affine_grid(theta, (B, 1, S, S), align_corners=False) as one broadcast add.

    Grid point (i, j) is theta @ (x_j, y_i, 1): a part that varies along rows plus one that
    varies along columns, so we add a (B, S, 1, 2) and a (B, 1, S, 2); 2x faster on CPU.
    """
    coords = (2 * torch.arange(side, device=theta.device) + 1) / side - 1       # pixel centres
    along_x = coords[None, :, None] * theta[:, None, :, 0]                      # (B, S, 2)
    along_y = coords[None, :, None] * theta[:, None, :, 1] + theta[:, None, :, 2]
    return along_y[:, :, None, :] + along_x[:, None, :, :]                     # (B, S, S, 2)


Draw = Callable[..., Tensor]    # draw(*shape, normal=False) -> U[0, 1) or N(0, 1) numbers


def _log_uniform(u: Tensor, bounds: tuple[float, float]) -> Tensor:
    """Map U[0, 1) numbers to log-uniform numbers in `bounds` (aspect ratios, as torchvision)."""
    low, high = math.log(bounds[0]), math.log(bounds[1])
    return torch.exp(low + (high - low) * u)


def _affine_matrices(p: AugmentParams, n: int, draw: Draw) -> Tensor:
    """Crop, then rotation, x-shear and shift, as one sampling matrix per image (B, 2, 3).

    Maps output to input coordinates in grid_sample's normalised units (the side is 2).
    """
    # Crop as torchvision: up to 10 tries of (area, ratio); the first that fits wins.
    area = p.crop_scale + (1 - p.crop_scale) * draw(n, 10)                # (B, 10)
    ratio = _log_uniform(draw(n, 10), CROP_RATIO)                         # width / height
    size = torch.stack([(area * ratio).sqrt(), (area / ratio).sqrt()], 2)  # (B, 10, 2) of side
    fits = (size <= 1).all(2)                                             # (B, 10)
    first = fits.float().argmax(1)                                        # (B,) first True
    size = torch.where(fits.any(1, keepdim=True), size[torch.arange(n), first], 1.0)  # (B, 2)
    centre = (2 * draw(n, 2) - 1) * (1 - size)                            # (B, 2) inside [-1, 1]
    angle = math.radians(p.rotation) * (2 * draw(n) - 1)                  # (B,)
    shear = torch.tan(math.radians(p.shear) * (2 * draw(n) - 1))          # (B,)
    shift = 2 * p.translate * (2 * draw(n, 2) - 1)                        # (B, 2)
    cos, sin = angle.cos(), angle.sin()
    warp = torch.stack([cos, cos * shear - sin, sin, sin * shear + cos], 1)  # rotation @ shear
    warp = size[:, :, None] * warp.view(n, 2, 2)                          # (B, 2, 2) then crop
    return torch.cat([warp, (size * shift + centre)[:, :, None]], 2)      # (B, 2, 3)


def _erase_mask(p: AugmentParams, n: int, side: int, draw: Draw) -> Tensor:
    """Random erasing as torchvision: one rectangle per image with prob erase_p, (B, 1, S, S)."""
    area = side * side * (ERASE_AREA[0] + (ERASE_AREA[1] - ERASE_AREA[0]) * draw(n))
    ratio = _log_uniform(draw(n), ERASE_RATIO)
    height = (area * ratio).sqrt().round().clamp(1, side - 1)[:, None]   # (B, 1) px
    width = (area / ratio).sqrt().round().clamp(1, side - 1)[:, None]
    top = (draw(n, 1) * (side - height + 1)).floor()                      # (B, 1)
    left = (draw(n, 1) * (side - width + 1)).floor()
    pixels = torch.arange(side, device=area.device)                       # (S,)
    rows = (pixels >= top) & (pixels < top + height)                      # (B, S)
    cols = (pixels >= left) & (pixels < left + width)
    chosen = (draw(n) < p.erase_p)[:, None, None]                         # (B, 1, 1)
    return (chosen & rows[:, :, None] & cols[:, None, :])[:, None]


class BatchAugment:
    """SimCLR views of a whole batch at once, vectorised. Taught in 01_augmentations.

    The same family as `view_transform` with the same params, each image with its own random
    parameters. The speed trick: crop, rotation, translation and shear are composed into one
    affine matrix per image (B, 2, 3), the elastic field is added to that sampling grid, and
    ONE `F.grid_sample` resamples the batch (torchvision resamples once per transform, per
    image). Blur is a grouped separable conv, noise and erasing are broadcast masks.

    Random numbers come from `generator` (torch's default CPU generator when None) on the
    generator's device and are then moved to x's device, so a CPU generator serves CUDA
    batches too and a seed gives bit-identical output.

    Args:
        strength: >= 0, scales `params` through AugmentParams.at_strength; 0 = identity.
        params: the family at strength 1; default AugmentParams().
    """

    def __init__(self, strength: float = 1.0, params: AugmentParams | None = None) -> None:
        self.params = AugmentParams.at_strength(strength, params)

    def __repr__(self) -> str:
        return f"BatchAugment({self.params})"

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augment a batch.

        Args:
            x: (B, 1, S, S) or (B, S, S) square images, float in [0, 1] or uint8 (then / 255).
            generator: source of randomness; None = torch's default generator.

        Returns:
            float32 (B, 1, S, S) in [0, 1] on x's device.
        """
        x = _as_unit_batch(x)
        p, (n, _, side, _) = self.params, x.shape
        gen_device = generator.device if generator is not None else torch.device("cpu")

        def draw(*shape: int, normal: bool = False) -> Tensor:
            sample = torch.randn if normal else torch.rand
            return sample(shape, generator=generator, device=gen_device).to(x.device)

        if p.crop_scale < 1 or p.rotation or p.translate or p.shear or p.elastic:
            theta = _affine_matrices(p, n, draw)                              # (B, 2, 3)
            grid = _affine_grid(theta, side)                                  # (B, S, S, 2)
            if p.elastic:   # a smooth field in output px, through the same matrix as the grid
                sigma = torch.full((n,), ELASTIC_SIGMA, device=x.device)
                field = _blur(2 * draw(n, 2, side, side) - 1, sigma, _field_radius(side))
                field = field * (p.elastic / _field_std(side) * 2 / side)  # RMS px -> normalised
                grid = grid + torch.einsum("bjhw,bij->bhwi", field, theta[:, :, :2])
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if p.blur:
            low = min(0.1, p.blur)
            sigma = low + (p.blur - low) * draw(n)                             # (B,) px
            x = _blur(x, sigma, min(math.ceil(3 * p.blur), side - 1))
        if p.noise:
            x = (x + p.noise * draw(n, 1, side, side, normal=True)).clamp(0, 1)
        if p.erase_p:
            x = x.masked_fill(_erase_mask(p, n, side, draw), 0.0)
        return x


def _as_unit_batch(x: Tensor) -> Tensor:
    """(B, 1, S, S) or (B, S, S), uint8 or float -> float32 (B, 1, S, S) in [0, 1]."""
    if not isinstance(x, Tensor):
        raise ValueError(f"BatchAugment expects a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 3:
        x = x.unsqueeze(1)                                   # (B, S, S) -> (B, 1, S, S)
    if x.dim() != 4 or x.shape[1] != 1 or x.shape[2] != x.shape[3]:
        raise ValueError(f"BatchAugment expects square grayscale images (B, 1, S, S) or "
                         f"(B, S, S), got shape {tuple(x.shape)}; for one image use x[None]")
    if x.dtype == torch.uint8:
        return x.float() / 255
    if not x.is_floating_point():
        raise ValueError(f"BatchAugment expects float in [0, 1] or uint8, got {x.dtype}")
    return x.float()
