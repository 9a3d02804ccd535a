"""NT-Xent against the loop from the paper, an independent library and its closed forms."""

import math

import pytest
import torch
from pytorch_metric_learning.losses import NTXentLoss

from simclr_teach.loss import contrastive_accuracy, nt_xent, nt_xent_fused, nt_xent_reference


def pml_nt_xent(z1, z2, temperature):
    """pytorch-metric-learning's NTXentLoss: pairs are the embeddings that share a label."""
    labels = torch.arange(len(z1)).repeat(2)
    return NTXentLoss(temperature=temperature)(torch.cat([z1, z2]), labels)


@pytest.mark.parametrize("n,d", [(1, 3), (2, 2), (5, 8), (16, 32), (33, 7)])
@pytest.mark.parametrize("temperature", [0.05, 0.1, 0.5, 1.0])
def test_matches_reference_and_pytorch_metric_learning(n, d, temperature):
    g = torch.Generator().manual_seed(n * 100 + d)
    z1, z2 = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    ours = nt_xent(z1, z2, temperature)
    reference = nt_xent_reference(z1, z2, temperature)
    assert ours.dtype == torch.float32 and reference.dtype == torch.float64
    assert ours.item() == pytest.approx(reference.item(), abs=1e-5, rel=1e-5)
    assert ours.item() == pytest.approx(pml_nt_xent(z1, z2, temperature).item(), abs=1e-5, rel=1e-5)


@pytest.mark.parametrize("n", [1, 2, 10, 128])
def test_identical_directions_give_log_2n_minus_1(n):
    z = torch.ones(n, 4)
    assert nt_xent(z, 3 * z, 0.5).item() == pytest.approx(math.log(2 * n - 1), rel=1e-6)


def test_symmetric_and_scale_invariant():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    loss = nt_xent(z1, z2, 0.2)
    assert torch.allclose(loss, nt_xent(z2, z1, 0.2), atol=1e-6)
    assert torch.allclose(loss, nt_xent(10 * z1, 0.01 * z2, 0.2), atol=1e-5)


def test_perfect_alignment_beats_random():
    z = torch.eye(6)  # orthogonal directions, each view equal to its partner
    aligned = nt_xent(z, z, 0.1)
    # floor: positives at cos 1, all 2N-2 negatives at cos 0
    floor = -math.log(math.exp(10) / (math.exp(10) + 10 * math.exp(0)))
    assert aligned.item() == pytest.approx(floor, abs=1e-6)
    assert contrastive_accuracy(z, z) == 1.0


def test_gradients_are_finite_and_reach_both_views():
    g = torch.Generator().manual_seed(1)
    z1 = torch.randn(16, 8, generator=g, requires_grad=True)
    z2 = torch.randn(16, 8, generator=g, requires_grad=True)
    nt_xent(z1, z2, 0.01).backward()
    for grad in (z1.grad, z2.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_stable_at_low_temperature_and_under_autocast():
    g = torch.Generator().manual_seed(2)
    z1, z2 = 50 * torch.randn(64, 32, generator=g), 50 * torch.randn(64, 32, generator=g)
    loss = nt_xent(z1, z2, 0.01)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(nt_xent_reference(z1, z2, 0.01).item(), rel=1e-4)
    for dtype in (torch.bfloat16, torch.float16):
        with torch.autocast("cpu", dtype=dtype):
            low = nt_xent(z1.to(dtype), z2.to(dtype), 0.01)
        assert low.dtype == torch.float32 and torch.isfinite(low)


@pytest.mark.parametrize(
    "z1,z2,temperature,message",
    [
        (torch.zeros(4, 3), torch.zeros(5, 3), 0.5, "same shape"),
        (torch.zeros(4), torch.zeros(4), 0.5, "2-D"),
        (torch.zeros(0, 3), torch.zeros(0, 3), 0.5, "empty batch"),
        (torch.ones(4, 3), torch.ones(4, 3), 0.0, "temperature"),
        (torch.ones(4, 3), torch.ones(4, 3), -1.0, "temperature"),
        (torch.full((4, 3), float("nan")), torch.ones(4, 3), 0.5, "NaN"),
    ],
)
def test_bad_input_names_the_problem(z1, z2, temperature, message):
    with pytest.raises(ValueError, match=message):
        nt_xent(z1, z2, temperature)


@pytest.mark.parametrize("n", [1, 24])
@pytest.mark.parametrize("temperature", [0.5, 0.1, 0.02])
def test_fused_version_equals_nt_xent_in_value_and_gradient(n, temperature):
    # the hand-written backward of nt_xent_fused against autograd through the textbook formula
    torch.manual_seed(1)
    z1, z2 = torch.randn(n, 16, requires_grad=True), torch.randn(n, 16, requires_grad=True)
    fused = nt_xent_fused(z1, z2, temperature)
    fused.backward()
    fast = z1.grad.clone(), z2.grad.clone()
    z1.grad = z2.grad = None
    plain = nt_xent(z1, z2, temperature)
    plain.backward()
    torch.testing.assert_close(fused, plain, atol=1e-6, rtol=1e-6)
    for got, want in zip(fast, (z1.grad, z2.grad), strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="temperature"):
        nt_xent_fused(z1, z2, float("nan"))


def test_fused_version_refuses_second_derivatives_and_points_to_nt_xent():
    # A Hessian-vector product: the gradient with create_graph=True, then the gradient of
    # <gradient, v>. nt_xent_fused's backward is written by hand, so it must refuse, not
    # return the wrong curvature (it once gave 0.28 where nt_xent gives the true value).
    g = torch.Generator().manual_seed(6)
    z1, z2 = torch.randn(4, 3, generator=g, requires_grad=True), torch.randn(4, 3, generator=g)
    v = torch.randn(4, 3, generator=g)
    (grad,) = torch.autograd.grad(nt_xent_fused(z1, z2, 0.5), z1, create_graph=True)
    (plain,) = torch.autograd.grad(nt_xent(z1, z2, 0.5), z1, create_graph=True)
    torch.testing.assert_close(grad, plain, atol=1e-6, rtol=1e-5)  # first order still right
    assert torch.isfinite(torch.autograd.grad((plain * v).sum(), z1)[0]).all()  # nt_xent can
    with pytest.raises(NotImplementedError, match="no second derivatives.*use nt_xent"):
        torch.autograd.grad((grad * v).sum(), z1)
    with pytest.raises(NotImplementedError, match="use nt_xent"):  # torch's own HVP
        torch.autograd.functional.hvp(lambda z: nt_xent_fused(z, z2, 0.5), z1.detach(), v)


@pytest.mark.parametrize(
    "z1,z2,message",
    [
        (torch.zeros(4, 3), torch.zeros(5, 3), "same shape"),
        (torch.ones(4, 3), torch.ones(4, 2), "same shape"),
        (torch.zeros(4), torch.zeros(4), "2-D"),
        (torch.zeros(0, 3), torch.zeros(0, 3), "empty batch"),
        (torch.full((4, 3), float("nan")), torch.ones(4, 3), "NaN"),
    ],
)
def test_contrastive_accuracy_names_the_problem(z1, z2, message):
    with pytest.raises(ValueError, match=message):  # not a RuntimeError from deep inside
        contrastive_accuracy(z1, z2)


def test_is_the_cross_entropy_of_the_masked_logits():
    from simclr_teach.loss import positive_index, similarity_logits

    g = torch.Generator().manual_seed(4)
    z1, z2 = torch.randn(12, 8, generator=g), torch.randn(12, 8, generator=g)
    logits = similarity_logits(z1, z2, 0.3)
    assert torch.isinf(logits.diagonal()).all()
    expected = torch.nn.functional.cross_entropy(logits, positive_index(12))
    assert torch.equal(nt_xent(z1, z2, 0.3), expected)


def test_one_pair_gives_zero_loss_and_zero_gradient():
    z1, z2 = torch.randn(1, 5, requires_grad=True), torch.randn(1, 5, requires_grad=True)
    loss = nt_xent(z1, z2, 0.1)  # the partner is the only candidate
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(z1.grad, torch.zeros(1, 5)) and torch.equal(z2.grad, torch.zeros(1, 5))


def test_second_derivatives_match_the_reference_loop():
    g = torch.Generator().manual_seed(5)
    z1, z2 = torch.randn(3, 4, generator=g).double(), torch.randn(3, 4, generator=g).double()
    hessian = torch.autograd.functional.hessian
    ours = hessian(lambda a, b: nt_xent(a, b, 0.3), (z1, z2))
    oracle = hessian(lambda a, b: nt_xent_reference(a, b, 0.3), (z1, z2))
    for row_ours, row_oracle in zip(ours, oracle, strict=True):
        for got, want in zip(row_ours, row_oracle, strict=True):
            torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-8)
    assert torch.autograd.gradgradcheck(
        lambda a, b: nt_xent(a, b, 0.3), (z1.requires_grad_(), z2.requires_grad_())
    )


def test_works_under_torch_func_grad():
    g = torch.Generator().manual_seed(6)
    z1 = torch.randn(6, 4, generator=g, requires_grad=True)
    z2 = torch.randn(6, 4, generator=g)
    functional = torch.func.grad(nt_xent)(z1.detach(), z2, 0.2)
    nt_xent(z1, z2, 0.2).backward()
    torch.testing.assert_close(functional, z1.grad)


def test_bf16_autocast_computes_the_logits_in_float32():
    g = torch.Generator().manual_seed(7)
    z1, z2 = torch.randn(32, 16, generator=g), torch.randn(32, 16, generator=g)
    z1_bf16, z2_bf16 = z1.bfloat16().requires_grad_(), z2.bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = nt_xent(z1_bf16, z2_bf16, 0.01)
    loss.backward()
    # the same bf16 numbers, in float64: a bf16 similarity matrix would be off by ~0.4 logits
    oracle = nt_xent_reference(z1_bf16.detach().double(), z2_bf16.detach().double(), 0.01)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(oracle.item(), rel=1e-5)
    assert z1_bf16.grad.dtype == torch.bfloat16 and torch.isfinite(z1_bf16.grad.float()).all()
