"""The views of SimCLR for MNIST digits: one family of random transforms, two engines.

SimCLR (Chen et al., 2020, sec. 3, appendix A) makes two random views of a picture agree.
For 28x28 digits we keep random resized crop, a small affine warp, elastic deformation
(Simard et al., 2003), blur, Gaussian noise and random erasing. No flips (a mirrored 2 is
not a 2) and no colour jitter. `view_transform` is the per-image torchvision pipeline a
DataLoader runs; `BatchAugment` draws the same family for a whole batch at once. The last
section holds what 01's explorer shows: views of one digit and how alike two views are.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2

from simclr_teach.loss import contrastive_accuracy
from simclr_teach.model import unit_pixels
from simclr_teach.utils import check_seed

SIDE = 28  # MNIST digits are 28x28
CROP_RATIO = (3 / 4, 4 / 3)  # aspect-ratio range of the crop, as in SimCLR
ERASE_AREA = (0.02, 0.15)  # erased fraction of the area; more can hide the digit
ERASE_RATIO = (0.3, 3.3)  # aspect-ratio range of the erased rectangle
ELASTIC_SIGMA = 4.0  # px; smoothing of the elastic field (Simard et al.)
ELASTIC_RADIUS = 16  # px; kernel 8 sigma + 1 wide, as torchvision

# Allowed range of each field; `at_strength` saturates there. Widgets may use them for sliders.
PARAM_RANGES: dict[str, tuple[float, float]] = {
    "crop_scale": (0.08, 1.0),
    "rotation": (0.0, 180.0),
    "translate": (0.0, 0.5),
    "shear": (0.0, 45.0),
    "elastic": (0.0, 8.0),
    "noise": (0.0, 1.0),
    "blur": (0.0, 4.0),
    "erase_p": (0.0, 1.0),
}
OFF_VALUES = {name: 1.0 if name == "crop_scale" else 0.0 for name in PARAM_RANGES}  # identity


@dataclass(frozen=True)
class AugmentParams:
    """Every knob of the view family (Chen et al., 2020, appendix A). Taught in 01_augmentations.

    A field at its "off" value (crop_scale 1.0, any other 0) switches that transform off.
    Ranges are in PARAM_RANGES; out-of-range values raise ValueError.
    """

    crop_scale: float = 0.6  # crop [crop_scale, 1] of the area, aspect 3/4-4/3, resize to 28;
    #                            ImageNet SimCLR uses 0.08, a digit needs most of its strokes
    rotation: float = 15.0  # max degrees, uniform in [-r, r]; 180 would make a 6 a 9
    translate: float = 0.1  # max shift as a fraction of the side (0.1 = 2.8 px)
    shear: float = 10.0  # max x-shear in degrees, uniform in [-s, s]; slanted handwriting
    elastic: float = 0.0  # RMS displacement in px of a smooth random field (sigma 4 px);
    #                            Simard's alpha 34 is ~1.5 px; off: slow in torchvision
    noise: float = 0.1  # std of additive Gaussian noise on [0, 1] pixels, then clamped
    blur: float = 0.0  # max Gaussian blur sigma in px, sigma ~ U[0.1, blur]; off: a
    #                            28 px digit is already soft, blur mostly erases thin strokes
    erase_p: float = 0.25  # probability of erasing one rectangle of 2-15 % of the area

    def __post_init__(self) -> None:
        for name, (low, high) in PARAM_RANGES.items():
            value = getattr(self, name)
            if not low <= value <= high:  # also rejects NaN
                raise ValueError(f"AugmentParams.{name} must be in [{low}, {high}], got {value}")

    @classmethod
    def at_strength(cls, strength: float, base: AugmentParams | None = None) -> AugmentParams:
        """Scale the family from the identity (0) to `base` (1). Taught in 01_augmentations.

        Call it on the class: `AugmentParams.at_strength(2.0, params)`. Returns new params.

        Args:
            strength: >= 0. Each field moves linearly from its off value (crop_scale 1.0, the
                others 0; strength 0 is exactly the identity) to its value in `base` (1) and
                beyond (2 = twice as strong), saturating at the ends of PARAM_RANGES.
            base: the family at strength 1; default AugmentParams().
        """
        if not strength >= 0 or math.isinf(strength):  # also rejects NaN
            raise ValueError(
                f"strength must be a finite number >= 0 (0 = no augmentation), got {strength}"
            )
        base = cls() if base is None else base
        if strength == 1:
            return base
        values = {}
        for name, (low, high) in PARAM_RANGES.items():
            off = OFF_VALUES[name]
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
        return replace(self, **{name: OFF_VALUES[name] for name in fields_off})


def _to_unit_image(image: Tensor) -> tv_tensors.Image:
    """(1, 28, 28) uint8 -> float32 x / 255 exactly (bit-equal to BatchAugment); float in [0, 1]
    kept, float in 0..255 refused (``model.unit_pixels``)."""
    if tuple(image.shape) != (1, SIDE, SIDE):
        raise ValueError(
            f"view_transform expects one digit of shape (1, 28, 28) or a 28x28 "
            f"PIL image, got shape {tuple(image.shape)}"
        )
    return tv_tensors.Image(unit_pixels(image))


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
        in [0, 1]. A float tensor input must be in [0, 1] already (0..255 is refused).
    """
    p = AugmentParams.at_strength(strength, params)
    bilinear = v2.InterpolationMode.BILINEAR
    steps: list[v2.Transform] = [v2.ToImage(), v2.Lambda(_to_unit_image)]
    if p.crop_scale < 1:
        steps.append(
            v2.RandomResizedCrop(
                SIDE,
                scale=(p.crop_scale, 1.0),
                ratio=CROP_RATIO,
                interpolation=bilinear,
                antialias=True,
            )
        )
    if p.rotation or p.translate or p.shear:  # nearest is torchvision's default: too jaggy
        steps.append(
            v2.RandomAffine(
                p.rotation,
                (p.translate,) * 2 if p.translate else None,
                shear=p.shear or None,
                interpolation=bilinear,
            )
        )
    if p.elastic:  # torchvision's alpha: px = alpha / 2 * field
        alpha = 2 * p.elastic / _field_std(SIDE)
        steps.append(v2.ElasticTransform(alpha=alpha, sigma=ELASTIC_SIGMA))
    if p.blur:
        steps.append(v2.GaussianBlur(2 * math.ceil(3 * p.blur) + 1, (min(0.1, p.blur), p.blur)))
    if p.noise:
        steps.append(v2.GaussianNoise(sigma=p.noise, clip=True))
    if p.erase_p:
        steps.append(v2.RandomErasing(p.erase_p, scale=ERASE_AREA, ratio=ERASE_RATIO, value=0.0))
    return v2.Compose(steps)


def _blur_matrices(sigma: Tensor, radius: int, side: int) -> Tensor:
    """Gaussian blur along one axis, reflect padding, as a matrix (B, S, S) per sigma (B,)."""
    taps = torch.arange(-radius, radius + 1, device=sigma.device)  # (k,)
    kernel = torch.exp(-0.5 * (taps / sigma[:, None]) ** 2)  # (B, k)
    kernel = kernel / kernel.sum(1, keepdim=True)
    source = (torch.arange(side, device=sigma.device)[:, None] + taps).abs()  # (S, k), -1 -> 1
    source = torch.where(source > side - 1, 2 * (side - 1) - source, source)  # S -> S - 2
    matrices = torch.zeros(len(sigma), side, side, device=sigma.device)
    return matrices.scatter_add_(
        2, source.expand(len(sigma), -1, -1), kernel[:, None, :].expand(-1, side, -1)
    )


def _blur(x: Tensor, sigma: Tensor, radius: int) -> Tensor:
    """Separable Gaussian blur of x (B, C, S, S), one sigma per image (B,) or one for all (1,).

    Blurring the rows and columns of a picture is M @ x @ M^T; two batched (S, S) matmuls
    beat a grouped convolution on CPU, most for the wide elastic kernel
    (benchmarks/augment_throughput.py).
    """
    matrices = _blur_matrices(sigma, radius, x.shape[-1])[:, None]  # (B, 1, S, S)
    return matrices @ x @ matrices.transpose(-1, -2)


def _field_std(side: int) -> float:
    """RMS of U(-1, 1) noise after the elastic smoothing M @ u @ M^T, reflect edges included:
    pixel (i, j) has variance |M_i|^2 |M_j|^2 / 3."""
    matrix = _blur_matrices(torch.tensor([ELASTIC_SIGMA]), min(ELASTIC_RADIUS, side - 1), side)[0]
    norms = matrix.pow(2).sum(1)  # (S,) |M_i|^2
    return float((norms[:, None] * norms[None, :]).mean().sqrt() / math.sqrt(3))


def _affine_grid(theta: Tensor, side: int) -> Tensor:
    """F.affine_grid(theta, (B, 1, S, S), align_corners=False) as one broadcast add.

    Grid point (i, j) is theta @ (x_j, y_i, 1): a part that varies along rows plus one that
    varies along columns, so we add a (B, S, 1, 2) and a (B, 1, S, 2): fewer operations than
    F.affine_grid's batched matmul over all S * S points.
    """
    coords = (2 * torch.arange(side, device=theta.device) + 1) / side - 1  # pixel centres
    along_x = coords[None, :, None] * theta[:, None, :, 0]  # (B, S, 2)
    along_y = coords[None, :, None] * theta[:, None, :, 1] + theta[:, None, :, 2]
    return along_y[:, :, None, :] + along_x[:, None, :, :]  # (B, S, S, 2)


Draw = Callable[..., Tensor]  # draw(*shape, normal=False) -> U[0, 1) or N(0, 1) numbers


def _log_uniform(u: Tensor, bounds: tuple[float, float]) -> Tensor:
    """Map U[0, 1) numbers to log-uniform numbers in `bounds` (aspect ratios, as torchvision)."""
    low, high = math.log(bounds[0]), math.log(bounds[1])
    return torch.exp(low + (high - low) * u)


def _affine_matrices(p: AugmentParams, n: int, draw: Draw) -> Tensor:
    """Crop, then rotation, x-shear and shift, as one sampling matrix per image (B, 2, 3).

    Maps output to input coordinates in grid_sample's normalised units (the side is 2).
    """
    # Crop as torchvision: up to 10 tries of (area, ratio); the first that fits wins.
    area = p.crop_scale + (1 - p.crop_scale) * draw(n, 10)  # (B, 10)
    ratio = _log_uniform(draw(n, 10), CROP_RATIO)  # width / height
    size = torch.stack([(area * ratio).sqrt(), (area / ratio).sqrt()], 2)  # (B, 10, 2) of side
    fits = (size <= 1).all(2)  # (B, 10)
    first = size[torch.arange(n, device=size.device), fits.float().argmax(1)]  # (B, 2)
    size = torch.where(fits.any(1, keepdim=True), first, 1.0)  # none fits: all
    centre = (2 * draw(n, 2) - 1) * (1 - size)  # (B, 2) inside [-1, 1]
    angle = math.radians(p.rotation) * (2 * draw(n) - 1)  # (B,)
    shear = torch.tan(math.radians(p.shear) * (2 * draw(n) - 1))  # (B,)
    shift = 2 * p.translate * (2 * draw(n, 2) - 1)  # (B, 2)
    cos, sin = angle.cos(), angle.sin()
    warp = torch.stack([cos, cos * shear - sin, sin, sin * shear + cos], 1)  # rotation @ shear
    warp = size[:, :, None] * warp.view(n, 2, 2)  # (B, 2, 2) then crop
    return torch.cat([warp, (size * shift + centre)[:, :, None]], 2)  # (B, 2, 3)


def _erase(x: Tensor, erase_p: float, draw: Draw) -> Tensor:
    """Random erasing as torchvision: with prob erase_p one rectangle of x (B, 1, S, S) -> 0."""
    n, side = x.shape[0], x.shape[-1]
    area = side * side * (ERASE_AREA[0] + (ERASE_AREA[1] - ERASE_AREA[0]) * draw(n))
    ratio = _log_uniform(draw(n), ERASE_RATIO)
    height = (area * ratio).sqrt().round().clamp(1, side - 1)[:, None]  # (B, 1) px
    width = (area / ratio).sqrt().round().clamp(1, side - 1)[:, None]
    top = (draw(n, 1) * (side - height + 1)).floor()  # (B, 1)
    left = (draw(n, 1) * (side - width + 1)).floor()
    pixels = torch.arange(side, device=x.device)  # (S,)
    chosen = draw(n, 1) < erase_p  # (B, 1)
    rows = ((pixels >= top) & (pixels < top + height) & chosen).float()  # (B, S)
    cols = ((pixels >= left) & (pixels < left + width)).float()
    # a float multiply rather than indexing with a bool mask: faster on CPU
    return x * (1 - rows[:, :, None] * cols[:, None, :])[:, None]


class BatchAugment:
    """SimCLR views of a whole batch at once, vectorised. Taught in 01_augmentations.

    The family of `view_transform`, each image with its own random parameters. The speed
    trick: crop, rotation, shift and shear become one affine matrix per image (B, 2, 3), the
    elastic field is added to its sampling grid, and ONE `F.grid_sample` resamples the batch
    (torchvision resamples per transform, per image). Blur is two batched matmuls; noise and
    erasing are broadcast arithmetic. Random numbers come from `generator` (torch's default
    CPU generator if None) on its device, then move to x's device: a CPU generator serves a
    CUDA batch too, and a seed repeats bit for bit.

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
            x: (B, 1, S, S) or (B, S, S) square images, float in [0, 1] or uint8 (then / 255);
                float in 0..255 is refused, as ``preprocess`` refuses it.
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
            theta = _affine_matrices(p, n, draw)  # (B, 2, 3)
            grid = _affine_grid(theta, side)  # (B, S, S, 2)
            if p.elastic:  # a smooth field in output px, through the same matrix as the grid
                sigma = torch.tensor([ELASTIC_SIGMA], device=x.device)  # one for all
                field = _blur(2 * draw(n, 2, side, side) - 1, sigma, min(ELASTIC_RADIUS, side - 1))
                field = field * (p.elastic / _field_std(side) * 2 / side)  # RMS px -> normalised
                grid = grid + torch.einsum("bjhw,bij->bhwi", field, theta[:, :, :2])
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if p.blur:
            low = min(0.1, p.blur)
            sigma = low + (p.blur - low) * draw(n)  # (B,) px
            x = _blur(x, sigma, min(math.ceil(3 * p.blur), side - 1))
        if p.noise:
            x = draw(n, 1, side, side, normal=True).mul_(p.noise).add_(x).clamp_(0, 1)
        if p.erase_p:
            x = _erase(x, p.erase_p, draw)
        return x


def _as_unit_batch(x: Tensor) -> Tensor:
    """(B, 1, S, S) or (B, S, S), uint8 or float in [0, 1] -> float32 (B, 1, S, S) in [0, 1]."""
    if x.dim() == 3:
        x = x.unsqueeze(1)  # (B, S, S) -> (B, 1, S, S)
    if x.dim() != 4 or x.shape[1] != 1 or x.shape[2] != x.shape[3]:
        raise ValueError(
            f"BatchAugment expects square grayscale images (B, 1, S, S) or "
            f"(B, S, S), got shape {tuple(x.shape)}; for one image use x[None]"
        )
    return unit_pixels(x)  # uint8 / 255, float in [0, 1] kept; anything else a ValueError


# --- views to look at (01_augmentations) -------------------------------------------------------


def params_from_controls(values: Mapping[str, float | bool]) -> AugmentParams:
    """The view family the explorer's controls describe. Taught in 01_augmentations.

    Args:
        values: field name (e.g. "rotation") -> slider value; "<field>_on" -> checkbox, False
            switches that transform off; "strength" -> the global knob of
            AugmentParams.at_strength (default 1). Missing keys keep AugmentParams() values;
            the explorer's "index" and "seed" are ignored.

    Returns:
        AugmentParams at the given strength.
    """
    unknown = set(values) - {
        *PARAM_RANGES,
        *(f"{n}_on" for n in PARAM_RANGES),
        "strength",
        "index",
        "seed",
    }
    if unknown:
        raise ValueError(
            f"unknown control(s) {sorted(unknown)}; use field names of "
            f"AugmentParams, '<field>_on' or 'strength'"
        )
    base = AugmentParams(**{n: float(values[n]) for n in PARAM_RANGES if n in values})
    off = [n for n in PARAM_RANGES if values.get(f"{n}_on", True) is False]
    return AugmentParams.at_strength(float(values.get("strength", 1.0)), base.disabled(*off))


def augmentation_views(
    images: Tensor, index: int, params: AugmentParams, seed: int = 0, n_views: int = 8
) -> Tensor:
    """`n_views` random views of one digit, seeded. Taught in 01_augmentations.

    Args:
        images: (B, 28, 28) or (B, 1, 28, 28), uint8 or float in [0, 1].
        index: which digit, 0 <= index < B.
        params: the view family (BatchAugment at strength 1).
        seed: the same seed gives the same views.
        n_views: how many views.

    Returns:
        float32 (n_views, 1, 28, 28) in [0, 1].
    """
    if not 0 <= index < len(images):
        raise ValueError(f"index must be in [0, {len(images) - 1}], got {index}")
    digit = images[index].reshape(1, 1, *images.shape[-2:])  # (1, 1, 28, 28)
    generator = torch.Generator().manual_seed(check_seed(seed))
    return BatchAugment(1.0, params)(digit.expand(n_views, -1, -1, -1), generator)


def view_similarities(
    images: Tensor,
    params: AugmentParams | None = None,
    generator: torch.Generator | None = None,
    strength: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """Pixel cosine of two views of one digit, and of views of two different digits.

    Taught in 01_augmentations: a measure of how strong the views are. Both views come from
    BatchAugment(strength, params); "different" pairs view 1 of digit i with view 2 of digit
    i - 1 (the previous image in the batch, the last one for i = 0).

    Args:
        images: (B, 28, 28) or (B, 1, 28, 28), B >= 2, uint8 or float in [0, 1].
        params, strength: the view family, as in BatchAugment.
        generator: source of randomness (None: torch's default).

    Returns:
        (same, different): float32 (B,) cosines in [0, 1] each.
    """
    if len(images) < 2:
        raise ValueError(f"need at least 2 images to pair different digits, got {len(images)}")
    augment = BatchAugment(strength, params)
    x1 = augment(images, generator).flatten(1)  # (B, 784)
    x2 = augment(images, generator).flatten(1)
    same = F.cosine_similarity(x1, x2, dim=1)
    different = F.cosine_similarity(x1, x2.roll(1, dims=0), dim=1)
    return same, different


def mean_view_cosine(views: Tensor) -> float:
    """Mean pixel cosine over the pairs of distinct views of one digit (1.0 for a single view).

    Args:
        views: (V, 1, 28, 28) or (V, 28, 28) views, e.g. ``augmentation_views``.
    """
    unit = F.normalize(views.flatten(1).float(), dim=1)  # (V, 784)
    cosine = unit @ unit.T  # (V, V)
    pairs = ~torch.eye(len(views), dtype=torch.bool)  # the diagonal is a view with itself
    return cosine[pairs].mean().item() if len(views) > 1 else 1.0


def pixel_matching_top1(
    images: Tensor,
    params: AugmentParams | None = None,
    generator: torch.Generator | None = None,
    strength: float = 1.0,
) -> float:
    """How often raw pixels solve SimCLR's pretext task: the contrastive top-1 of two views' pixels.

    Each of the 2B views picks its nearest of the other 2B - 1 by pixel cosine; chance is
    1 / (2B - 1). Views that pixel matching pairs up easily teach little (01_augmentations).

    Args:
        images: (B, 28, 28) or (B, 1, 28, 28) digits, uint8 or float in [0, 1].
        params, strength: the view family, as in BatchAugment.
        generator: source of randomness (None: torch's default).

    Returns:
        A fraction in [0, 1].
    """
    augment = BatchAugment(strength, params)
    x1 = augment(images, generator).flatten(1)  # (B, 784)
    x2 = augment(images, generator).flatten(1)
    return contrastive_accuracy(x1, x2)
