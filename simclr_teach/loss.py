"""The NT-Xent loss of SimCLR (Chen et al., 2020, eq. 1). Taught in 02_nt_xent_loss.

For N pairs of views there are 2N embeddings. Anchor i's partner is j = i + N (or i - N); the
other 2N - 2 embeddings are its negatives. With s = cosine similarity and tau the temperature:

    l(i, j) = -log( exp(s_ij / tau) / sum_{k != i} exp(s_ik / tau) )
    L = 1/(2N) * sum over all 2N anchors of l(i, j)

``nt_xent`` is that formula as a cross-entropy over the masked similarity matrix, plain autograd
(second derivatives, ``torch.func``); ``nt_xent_fused`` is the same loss with the backward
written out, faster and lighter for large N. ``temperature_state`` takes one anchor apart:
its softmax over the candidates and the gradient weight of each negative.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import FunctionCtx


def check_temperature(temperature: float) -> None:
    """Raise ValueError unless the temperature tau is a finite number > 0 (tau divides logits)."""
    if not (
        isinstance(temperature, numbers.Real) and math.isfinite(temperature) and temperature > 0
    ):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")


class NonFiniteError(ValueError):
    """Projections hold NaN or inf: the model diverged (``train`` names the fix)."""


def _check_pair(z1: Tensor, z2: Tensor, temperature: float) -> None:
    """Raise ValueError with the fix when the inputs cannot be a batch of view pairs."""
    if not isinstance(z1, Tensor) or not isinstance(z2, Tensor):
        raise ValueError("z1 and z2 must be torch tensors of shape (N, D)")
    if z1.dim() != 2 or z2.dim() != 2:
        raise ValueError(
            f"z1 and z2 must be 2-D (N, D), got shapes {tuple(z1.shape)} and {tuple(z2.shape)}; "
            "flatten the projections first"
        )
    if z1.shape != z2.shape:
        raise ValueError(
            f"z1 and z2 must have the same shape (one row per image in both views), "
            f"got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    if z1.shape[0] == 0 or z1.shape[1] == 0:
        raise ValueError(
            f"empty batch: shape {tuple(z1.shape)}; pass at least one pair with D >= 1"
        )
    check_temperature(temperature)
    if not (torch.isfinite(z1).all() and torch.isfinite(z2).all()):
        raise NonFiniteError(
            "z1 or z2 contains NaN or inf; check the model's output and learning rate"
        )


def similarity_logits(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """Cosine similarities of all 2N views divided by tau, self-similarity masked out.

    Args:
        z1, z2: projections of the first and second views, shape (N, D).
        temperature: tau > 0.

    Returns:
        float32 logits (float64 for float64 input), shape (2N, 2N); the diagonal is -inf (a view
        is not its own candidate).
    """
    # At least float32, even under autocast: at tau = 0.01 a bf16 cosine is off by ~0.4 logits.
    dtype = torch.promote_types(torch.promote_types(z1.dtype, z2.dtype), torch.float32)
    with torch.autocast(device_type=z1.device.type, enabled=False):
        z = F.normalize(torch.cat([z1, z2]).to(dtype), dim=1)  # (2N, D), unit rows
        logits = z @ z.T / temperature  # (2N, 2N), in [-1/tau, 1/tau]
        self_pairs = torch.eye(len(z), dtype=torch.bool, device=z.device)
        return logits.masked_fill(self_pairs, float("-inf"))  # out of place: torch.func works


def positive_index(n: int, device: torch.device | None = None) -> Tensor:
    """Index of each anchor's partner among the 2N views: i + N for the first half, i - N after.

    Returns:
        int64 tensor of shape (2N,): [N, ..., 2N-1, 0, ..., N-1].
    """
    return torch.arange(2 * n, device=device).roll(n)


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.5) -> Tensor:
    """NT-Xent loss of SimCLR (Chen et al., 2020, eq. 1). Taught in 02_nt_xent_loss.

    Each of the 2N views is an anchor with 2N - 1 candidates: its partner (the positive) and
    2N - 2 negatives. Row i of the masked similarity matrix is a classification over candidates
    whose correct class is the partner, so the loss is a cross-entropy, which uses the
    log-sum-exp trick and stays finite at tau = 0.01. Logits are float32 even under autocast.

    Args:
        z1: projections of the first views, shape (N, D).
        z2: projections of the second views, shape (N, D); row i is the partner of z1[i].
        temperature: softmax temperature tau, > 0.

    Returns:
        Scalar loss, averaged over all 2N anchors; float32 (float64 for float64 input). Equals
        log(2N - 1) when all embeddings point the same way; 0 for N = 1 (one candidate).
    """
    _check_pair(z1, z2, temperature)
    logits = similarity_logits(z1, z2, temperature)  # (2N, 2N), diagonal -inf
    targets = positive_index(z1.shape[0], z1.device)  # partner of i is i +- N
    return F.cross_entropy(logits, targets)


class _FusedNTXent(torch.autograd.Function):
    """NT-Xent of unit rows z (2N, D) with the cross-entropy gradient written out; for speed.

    Autograd through cross_entropy keeps several (2N, 2N) matrices (logits, log-softmax, their
    gradients). Here one matrix E = exp(logits - shift) serves forward and backward: with
    softmax P = E / rowsum(E) and Y the partner one-hot, dL/dlogits = (P - Y) / 2N and, as
    logits = z z^T / tau, dL/dz = (P + P^T - 2Y) z / (2N tau). Y z is z rolled by N.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, z: Tensor, temperature: float) -> Tensor:
        two_n = z.shape[0]
        if temperature > 0.025:  # cosines are in [-1, 1]: with shift 1/tau, exp(>= -2/tau) > 1e-35
            shift = torch.full((two_n,), 1 / temperature, dtype=z.dtype, device=z.device)
            exp = torch.addmm(shift[:, None], z / temperature, z.T, beta=-1)  # logits - shift
        else:  # low tau: shift each row by its max, the log-sum-exp trick
            exp = (z / temperature) @ z.T  # (2N, 2N) logits
            shift = exp.fill_diagonal_(float("-inf")).amax(dim=1)  # (2N,)
            exp.sub_(shift[:, None])
        row_sum = exp.exp_().fill_diagonal_(0.0).sum(dim=1)  # (2N,); the diagonal is no candidate
        positive = (z * z.roll(two_n // 2, 0)).sum(dim=1) / temperature  # (2N,) partner logits
        ctx.save_for_backward(z, exp, row_sum)
        ctx.temperature = temperature
        return (shift + row_sum.log() - positive).mean()  # mean of log-sum-exp - positive logit

    @staticmethod
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor, None]:
        z, exp, row_sum = ctx.saved_tensors
        two_n = z.shape[0]
        with torch.no_grad():  # written out, not traced: autograd cannot differentiate it again
            scale = (1 / row_sum)[:, None]  # (2N, 1): P = scale * E
            grad_z = (exp @ z).mul_(scale).addmm_(exp.T, scale * z)  # P z + P^T z
            grad_z.sub_(2 * z.roll(two_n // 2, 0))  # - 2 Y z
            grad_z.mul_(grad / (two_n * ctx.temperature))
        if torch.is_grad_enabled():  # create_graph=True: a second derivative may follow
            grad_z = _NoSecondDerivative.apply(grad_z, z)
        return grad_z, None


class _NoSecondDerivative(torch.autograd.Function):
    """Passes nt_xent_fused's gradient (2N, D) on unchanged; differentiating it raises.

    ``once_differentiable`` raises only when the incoming gradient requires grad, so a
    Hessian-vector product through ``nt_xent_fused`` came out silently wrong. Tied to z, this
    node lies on every path of a second derivative, so any double backward reaches it.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, grad_z: Tensor, z: Tensor) -> Tensor:
        return grad_z.clone()

    @staticmethod
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[None, None]:
        raise NotImplementedError(
            "nt_xent_fused has no second derivatives (its backward is written by hand); use "
            "nt_xent for Hessians, Hessian-vector products or gradient penalties"
        )


def nt_xent_fused(z1: Tensor, z2: Tensor, temperature: float = 0.5) -> Tensor:
    """``nt_xent`` with the cross-entropy gradient written out: same values, less time and memory.

    Autograd through ``nt_xent`` keeps several (2N, 2N) matrices; this keeps one, which pays
    off for large N (benchmarks/loss_speed.py, benchmarks/results/summary.md). It has no second
    derivatives (a double backward raises NotImplementedError) and does not work under
    ``torch.func``: use ``nt_xent`` for those.

    Args:
        z1, z2: projections of the two views, shape (N, D); row i of z2 is the partner of z1[i].
        temperature: tau > 0.

    Returns:
        Scalar float32 loss, averaged over all 2N anchors.
    """
    _check_pair(z1, z2, temperature)
    with torch.autocast(device_type=z1.device.type, enabled=False):  # float32, as nt_xent
        z = F.normalize(torch.cat([z1, z2]).float(), dim=1)  # (2N, D), unit rows
        return _FusedNTXent.apply(z, float(temperature))


@torch.no_grad()
def contrastive_accuracy(z1: Tensor, z2: Tensor) -> float:
    """Fraction of the 2N anchors whose most similar candidate is their partner (top-1).

    The "accuracy" of the pretext task: does the model pick its other view out of 2N - 1?
    Chance is 1 / (2N - 1).

    Args:
        z1, z2: projections of the two views, shape (N, D), finite.
    """
    _check_pair(z1, z2, 1.0)  # the errors of nt_xent for shapes and values
    logits = similarity_logits(z1.detach(), z2.detach(), 1.0)  # tau does not change the argmax
    target = positive_index(z1.shape[0], z1.device)
    return (logits.argmax(dim=1) == target).float().mean().item()


def nt_xent_reference(z1: Tensor, z2: Tensor, temperature: float = 0.5) -> Tensor:
    """NT-Xent straight from the formula, one anchor at a time, in float64. For teaching and tests.

    Slow (O(N^2) Python steps) and obvious on purpose: it is the oracle ``nt_xent`` is checked
    against.

    Args:
        z1, z2: projections of the two views, shape (N, D).
        temperature: tau > 0.

    Returns:
        Scalar float64 loss.
    """
    _check_pair(z1, z2, temperature)
    z = torch.cat([z1, z2]).double()  # (2N, D)
    two_n = z.shape[0]
    n = two_n // 2

    def sim(a: Tensor, b: Tensor) -> Tensor:  # cosine similarity of two vectors
        return (a @ b) / (a.norm() * b.norm())

    total = torch.zeros((), dtype=torch.float64)
    for i in range(two_n):
        j = (i + n) % two_n  # the partner of i
        numerator = torch.exp(sim(z[i], z[j]) / temperature)
        denominator = sum(torch.exp(sim(z[i], z[k]) / temperature) for k in range(two_n) if k != i)
        total = total - torch.log(numerator / denominator)
    return total / two_n


def loss_floor(n: int, temperature: float) -> float:
    """NT-Xent with aligned positives and orthogonal negatives. Taught in 02_nt_xent_loss.

    With s_ij = 1 for the partner and s_ik = 0 for the 2N - 2 negatives, every anchor scores
    -log(e^{1/tau} / (e^{1/tau} + 2N - 2)) = log(1 + (2N - 2) e^{-1/tau}). It grows with N and
    tau, which is one reason loss values of different batch sizes or temperatures do not
    compare. Negatives spread further apart than orthogonal (a regular simplex, cosine
    -1/(N-1)) go slightly lower.

    Args:
        n: number of pairs N >= 1 (2N views).
        temperature: tau > 0.

    Returns:
        The loss value, a Python float.
    """
    if not (isinstance(n, int) and n >= 1):
        raise ValueError(f"n must be the number of pairs, an int >= 1, got {n!r}")
    check_temperature(temperature)
    return math.log1p((2 * n - 2) * math.exp(-1 / temperature))


def temperature_state(
    z1: Tensor, z2: Tensor, temperature: float, anchor: int = 0, n: int | None = None
) -> dict:
    """What NT-Xent does to one anchor at one temperature. Taught in 02_nt_xent_loss.

    Uses the first `n` pairs. Anchor i (of 2n views, z1 rows first) has 2n - 1 candidates;
    the softmax of their cosines / tau is p, and the anchor's loss l_i = -log p_partner.
    Its gradient with respect to each cosine s_ik is p_ik / tau for a negative and
    (p_ij - 1) / tau for the positive: every negative is pushed away in proportion to p.

    Args:
        z1, z2: (N, D) projections of the two views.
        temperature: tau > 0.
        anchor: 0 <= anchor < 2n.
        n: pairs used, 1 <= n <= N (None: all).

    Returns:
        dict with "n", "temperature", "anchor", "candidates" (2n - 1,) indices among the 2n
        views, "positive" (position of the partner among them), "similarity" (2n - 1,)
        cosines, "probabilities" (2n - 1,), "weights" (2n - 1,) dl_i/ds, "anchor_loss" l_i,
        "loss" (nt_xent of the n pairs) and "log_2n_minus_1"; tensors are float64 on the CPU.
    """
    n = len(z1) if n is None else n
    if not 1 <= n <= len(z1):
        raise ValueError(f"n must be in [1, {len(z1)}] (pairs in the batch), got {n}")
    if not 0 <= anchor < 2 * n:
        raise ValueError(f"anchor must be in [0, {2 * n - 1}] (one of the 2n views), got {anchor}")
    z1, z2 = z1[:n].detach().cpu(), z2[:n].detach().cpu()
    loss = nt_xent(z1, z2, temperature).item()  # also validates the inputs
    z = F.normalize(torch.cat([z1, z2]).double(), dim=1)  # (2n, D), float64 for display
    candidates = torch.tensor([k for k in range(2 * n) if k != anchor])
    similarity = z[candidates] @ z[anchor]  # (2n - 1,) cosines
    log_probabilities = torch.log_softmax(similarity / temperature, dim=0)  # finite at tiny tau
    probabilities = log_probabilities.exp()
    partner = int(positive_index(n)[anchor])
    positive = partner - int(partner > anchor)  # skipping the anchor itself
    weights = probabilities / temperature
    weights[positive] -= 1 / temperature
    return {
        "n": n,
        "temperature": temperature,
        "anchor": anchor,
        "candidates": candidates,
        "positive": positive,
        "similarity": similarity,
        "probabilities": probabilities,
        "weights": weights,
        "anchor_loss": -log_probabilities[positive].item(),
        "loss": loss,
        "log_2n_minus_1": math.log(2 * n - 1),
    }
