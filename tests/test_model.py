"""Shapes of the encoders, the head and SimCLR; preprocess."""

from pathlib import Path

import pytest
import torch

from simclr_teach.model import (
    ConvEncoder,
    MLPEncoder,
    ProjectionHead,
    SimCLR,
    build_simclr,
    preprocess,
)


def test_preprocess_converts_uint8_to_unit_floats():
    images = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    x = preprocess(images)
    assert x.shape == (5, 1, 28, 28) and x.dtype == torch.float32
    assert torch.equal(x[:, 0], images.float() / 255)
    with pytest.raises(ValueError, match=r"\(N, 28, 28\)"):
        preprocess(torch.zeros(5, 3, 28, 28))


@pytest.mark.parametrize("encoder", [ConvEncoder(8), MLPEncoder(hidden=64, out_dim=32)])
def test_simclr_returns_h_and_z(encoder):
    model = SimCLR(encoder, ProjectionHead(encoder.out_dim, 16, 8))
    h, z = model(torch.rand(4, 1, 28, 28))
    assert h.shape == (4, encoder.out_dim) and z.shape == (4, 8)


def test_build_simclr_names():
    assert build_simclr("conv", width=8).encoder.out_dim == 32
    assert isinstance(build_simclr("mlp", width=8).encoder, MLPEncoder)
    with pytest.raises(ValueError, match="'conv' or 'mlp'"):
        build_simclr("resnet")


def test_conv_encoder_is_channels_last_and_keeps_it():
    model = build_simclr("conv", width=4)
    conv = model.encoder.net[1][0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    copy = build_simclr("conv", width=4)
    copy.load_state_dict(model.state_dict())
    assert copy.encoder.net[1][0].weight.is_contiguous(memory_format=torch.channels_last)
    h, z = model(torch.rand(3, 1, 28, 28))  # any input layout works
    assert h.shape == (3, 16) and z.shape[0] == 3


def test_autocast_dtype_per_device(monkeypatch):
    from simclr_teach.utils import autocast_dtype

    assert autocast_dtype(torch.device("cpu"), enabled=False) is None
    assert autocast_dtype(torch.device("mps")) is None
    for avx512_bf16, amx, expected in [
        (False, False, None),
        (True, False, torch.bfloat16),
        (False, True, torch.bfloat16),
    ]:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        assert autocast_dtype(torch.device("cpu")) is expected


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="reads the CPU flags of Linux")
def test_autocast_dtype_on_this_cpu_follows_its_flags():
    """bfloat16 exactly where the CPU computes it natively (AVX512-BF16 or AMX tiles)."""
    from simclr_teach.utils import autocast_dtype

    flags = set(Path("/proc/cpuinfo").read_text().split())
    expected = torch.bfloat16 if flags & {"avx512_bf16", "amx_tile"} else None
    assert autocast_dtype(torch.device("cpu")) is expected


@pytest.mark.parametrize(
    "images,message",
    [
        (
            torch.full((2, 28, 28), 255.0),
            r"float digits must lie in \[0, 1\], got values in "
            r"\[255, 255\]; for pixels in 0..255 pass images / 255.0",
        ),
        (torch.full((2, 28, 28), float("nan")), r"float digits must lie in \[0, 1\]"),
        (torch.full((2, 28, 28), 200, dtype=torch.int64), r"torch.int64 are ambiguous; pass uint8"),
        (torch.zeros(2, 28, 28, dtype=torch.bool), r"dtype torch.bool are ambiguous"),
        (
            torch.zeros(2, 28, 29, dtype=torch.uint8),
            r"got \(2, 28, 29\); crop or resize them to 28",
        ),
        (torch.zeros(2, 1, 14, 14, dtype=torch.uint8), r"got \(2, 1, 14, 14\)"),
    ],
)
def test_preprocess_rejects_what_it_would_misread(images, message):
    with pytest.raises(ValueError, match=message):
        preprocess(images)


def test_embed_rejects_digits_in_0_to_255_as_floats():
    from simclr_teach.evaluate import embed

    model = build_simclr("conv", 4, 8, 4)
    with pytest.raises(ValueError, match=r"float digits must lie in \[0, 1\]"):
        embed(model, torch.full((3, 28, 28), 255.0))
    floats = torch.rand(3, 28, 28)  # already in [0, 1]: used as they are
    assert torch.equal(preprocess(floats)[:, 0], floats)
