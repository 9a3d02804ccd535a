"""What SimCLR needs, and what came after it: the losses and models of 08_what_simclr_needs.

SimCLR's loss pulls the two views of a digit together (the numerator of NT-Xent) and pushes
every other view away (its denominator, the negatives). This module holds the experiments that
take it apart, each trained by the course's own loop (``train.train_one_epoch``), which knows
none of them: ``build_method`` makes the model of ``TrainConfig.method``, and every such model
has ``model.SimCLR``'s interface (``model(x) -> (h, z)``; ``model(x1, x2, temperature=tau) ->
(loss, z1, z2)``, the step's loss from two views; ``model.after_step()`` after the optimizer's
step; ``trains_in_parallel``), so a new method is a class here and a name in ``METHODS``:

- ``"positives"``: the numerator alone, ``positives_only_loss`` (``PositivesOnly``). Nothing
  keeps the digits apart, so the representation collapses; ``effective_rank``,
  ``singular_spectrum`` and ``normalized_std`` measure it (Roy & Vetterli, 2007; Jing et al.,
  2022, "Understanding Dimensional Collapse in Contrastive Self-supervised Learning"; Chen &
  He, 2021).
- ``"moco"``: MoCo (He et al., 2020): the negatives come from a FIFO queue (``KeyQueue``) of
  keys made by a momentum copy of the network (``momentum_update``), so a small batch still
  sees thousands of negatives.
- ``"simsiam"``: SimSiam (Chen & He, 2021): no negatives at all; a predictor and a
  stop-gradient (``negative_cosine``) are what keep it from collapsing.
- ``"byol"``: BYOL (Grill et al., 2020): a predictor and a momentum target network
  (``normalized_mse``), the step between MoCo's momentum encoder and SimSiam.
- ``"barlow_twins"``: Barlow Twins (Zbontar et al., 2021): no negatives and no asymmetry; the
  loss decorrelates z's dimensions (``cross_correlation``, ``barlow_twins_loss``).

Every model here returns ``(h, z)`` from ``forward(x)`` like ``model.SimCLR``, so ``embed``, the
kNN and the probes read it unchanged.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.transforms.v2 import functional as TF

from simclr_teach.loss import check_temperature
from simclr_teach.model import SimCLR, preprocess

METHODS = ("simclr", "positives", "moco", "simsiam", "byol", "barlow_twins")  # TrainConfig.method


def _check_pairs(a: Tensor, b: Tensor, names: str) -> None:
    """Raise TypeError or ValueError unless a and b are tensors of one (N, D) shape, N >= 1."""
    if not (isinstance(a, Tensor) and isinstance(b, Tensor)):
        kinds = f"{type(a).__name__} and {type(b).__name__}"
        raise TypeError(f"{names} must be torch tensors of shape (N, D), got {kinds}")
    if a.dim() != 2 or a.shape != b.shape or len(a) == 0:
        raise ValueError(
            f"{names} must be (N, D) of one shape with N >= 1 (row i of each is a pair), got "
            f"{tuple(a.shape)} and {tuple(b.shape)}"
        )


def positives_only_loss(z1: Tensor, z2: Tensor, temperature: float = 0.5) -> Tensor:
    """NT-Xent without its negatives: the mean of -sim(z_i, z_j) / tau over the 2N anchors.

    NT-Xent's term for anchor i is -sim(i, j) / tau + log sum_k exp(sim(i, k) / tau); this is
    the first part alone (Wang & Isola's alignment, up to constants). Its minimum, -1 / tau, is
    reached by mapping every digit to one point: nothing here asks digits to differ.

    Args:
        z1, z2: (N, D) projections of the two views; row i of each is a positive pair.
        temperature: tau > 0, only a scale here.

    Returns:
        Scalar in [-1 / tau, 1 / tau].
    """
    _check_pairs(z1, z2, "z1 and z2")
    check_temperature(temperature)  # as nt_xent: tau = 0 would give -inf
    cosine = F.cosine_similarity(z1.float(), z2.float(), dim=1)  # (N,) one per positive pair
    return -cosine.mean() / temperature  # both anchors of a pair have the same cosine


class PositivesOnly(SimCLR):
    """SimCLR trained on NT-Xent's numerator alone (``positives_only_loss``): it collapses.

    The same encoder and head as ``SimCLR`` (the same weights' names), another loss.
    """

    trains_in_parallel = False  # one process, as every method of 08

    def loss(self, z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
        """The positives' term of NT-Xent for (N, D_z) projections: no negatives."""
        return positives_only_loss(z1, z2, temperature)


def singular_spectrum(features: Tensor, center: bool = False) -> Tensor:
    """Singular values of the features on the unit sphere, largest first, summing to 1.

    Args:
        features: (M, D) finite features, M >= 2 (e.g. h or z of some digits).
        center: subtract the mean feature first, so the spectrum is that of the covariance
            (Jing et al., 2022); without it a representation collapsed onto one point has one
            non-zero value (rank 1), which is what the collapse curves measure.

    Returns:
        float32 (min(M, D),) non-negative values, descending, normalised to sum to 1 (all zeros
        only for all-zero centred features).
    """
    if features.dim() != 2 or len(features) < 2:
        raise ValueError(f"need (M, D) features with M >= 2, got {tuple(features.shape)}")
    if not torch.isfinite(features).all():  # the SVD would fail with LinAlgError
        raise ValueError(
            "features contain NaN or inf; check the model that made them (a diverged run?)"
        )
    x = F.normalize(features.detach().float(), dim=1)  # unit rows: the sphere the loss sees
    if center:
        x = x - x.mean(dim=0)
    s = torch.linalg.svdvals(x)  # (min(M, D),) descending
    total = s.sum()
    return s / total if total > 0 else s


def effective_rank(features: Tensor, center: bool = False) -> float:
    """exp(entropy of the normalised singular values) (Roy & Vetterli, 2007; RankMe, 2023).

    1 when the features span one direction (collapse), D when they fill D directions evenly:
    how many dimensions the representation really uses. Garrido et al. (2023, "RankMe") use
    it, uncentred as here, to judge SSL representations without labels.

    Args:
        features: (M, D) finite features, M >= 2.
        center: as in ``singular_spectrum``.

    Returns:
        In [1, min(M, D)].
    """
    p = singular_spectrum(features, center)
    p = p[p > 0]
    if len(p) == 0:
        return 1.0  # centred features that are all equal: one point
    return torch.exp(-(p * p.log()).sum()).item()


def normalized_std(features: Tensor) -> float:
    """Mean over the D channels of the std of the l2-normalised features (Chen & He, 2021,
    sec. 4.1, Figure 2): 0 when every digit maps to one point (collapse), about 1 / sqrt(D) when
    the unit vectors spread over the sphere; unlike the uncentred ``effective_rank``, a narrow
    random start that is not one point scores above 0.

    Args:
        features: (M, D) finite features, M >= 2.

    Returns:
        In [0, 1].
    """
    if features.dim() != 2 or len(features) < 2:
        raise ValueError(f"need (M, D) features with M >= 2, got {tuple(features.shape)}")
    unit = F.normalize(features.detach().float(), dim=1)  # (M, D) on the sphere
    return unit.std(dim=0, unbiased=False).mean().item()


@torch.no_grad()
def momentum_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """theta_target <- m theta_target + (1 - m) theta_online (He et al., 2020, eq. 2).

    Parameters move by the exponential moving average; buffers (BatchNorm statistics) are
    copied. m = 0 makes the target a copy of the online network; m = 1 freezes it.

    Args:
        target, online: two modules of one architecture; ``target`` changes in place.
        momentum: m in [0, 1].
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    _check_same_architecture(list(target.parameters()), list(online.parameters()), "parameter")
    _check_same_architecture(list(target.buffers()), list(online.buffers()), "buffer")
    for t, o in zip(target.parameters(), online.parameters(), strict=True):
        t.mul_(momentum).add_(o.detach(), alpha=1.0 - momentum)
    for t, o in zip(target.buffers(), online.buffers(), strict=True):
        t.copy_(o)


def _check_same_architecture(target: list[Tensor], online: list[Tensor], kind: str) -> None:
    """Raise ValueError naming the first tensor where target and online differ."""
    fix = "make the target with copy.deepcopy(online)"
    if len(target) != len(online):
        raise ValueError(
            f"target and online must be one architecture, but they have {len(target)} and "
            f"{len(online)} {kind} tensors; {fix}"
        )
    for i, (t, o) in enumerate(zip(target, online, strict=True)):
        if t.shape != o.shape:
            raise ValueError(
                f"target and online must be one architecture, but {kind} {i} has shape "
                f"{tuple(t.shape)} in target and {tuple(o.shape)} in online; {fix}"
            )


class KeyQueue(nn.Module):
    """MoCo's dictionary: a FIFO queue of the last K keys, the negatives of every query.

    The keys are unit vectors, stored detached (no gradient flows into old keys: they came from
    an earlier network). It starts full of random unit vectors, as in MoCo, and is a buffer, so
    checkpoints save it and a resumed run goes on with the same negatives.

    Args:
        size: K, the number of keys.
        dim: D, the size of a key.
        generator: draws the initial random keys (default: torch's global RNG).
    """

    def __init__(self, size: int, dim: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"queue size and dim must be >= 1, got {size}, {dim}")
        keys = F.normalize(torch.randn(size, dim, generator=generator), dim=1)  # (K, D)
        self.register_buffer("keys", keys)
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))  # next slot to write

    def enqueue(self, keys: Tensor) -> None:
        """Write B new keys (B, D) over the oldest B (FIFO), detached and normalised; B <= K."""
        size = len(self.keys)
        if keys.dim() != 2 or keys.shape[1] != self.keys.shape[1] or len(keys) > size:
            raise ValueError(
                f"need (B, {self.keys.shape[1]}) keys with B <= {size}, got "
                f"{tuple(keys.shape)}; use a queue at least 2N long"
            )
        slots = (self.pointer + torch.arange(len(keys), device=keys.device)) % size  # wraps
        self.keys[slots] = F.normalize(keys.detach().float(), dim=1)
        self.pointer.copy_((self.pointer + len(keys)) % size)


class MoCo(nn.Module):
    """MoCo (He et al., 2020) with SimCLR's encoder and head: queries q against a queue of keys.

    The online network (``online``: f and g) makes the queries and is trained by gradients; the
    key network is a momentum copy of it (``momentum_update`` after every step), so keys in the
    queue, made over the last K / 2N steps, come from nearly the same network. The loss is
    InfoNCE of each query against its positive key (the other view's, from the key network) and
    the K queued keys; both views serve as queries (symmetrised), and all 2N keys are enqueued.

    Args:
        online: the SimCLR model trained by gradients.
        queue_size: K, the number of negatives.
        momentum: m of the key network.
    """

    def __init__(self, online: SimCLR, queue_size: int = 4096, momentum: float = 0.99) -> None:
        super().__init__()
        self.online = online
        self.key_network = copy.deepcopy(online).requires_grad_(False)  # trained by momentum
        dim = _z_size(online)
        self.queue = KeyQueue(queue_size, dim)
        self.momentum = momentum
        self._new_keys: Tensor | None = None  # this step's keys, enqueued after the backward

    trains_in_parallel = False  # its queue and key network live in one process

    def forward(
        self, x1: Tensor, x2: Tensor | None = None, temperature: float = 0.2
    ) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, Tensor]:
        """x1: (N, 1, 28, 28) -> (h, z) of the online network (what training leaves us).

        With the second view ``x2``: InfoNCE of the 2N queries against their keys and the
        queue, as (scalar loss, z1, z2), z1 and z2 the online (N, D) projections of the views;
        ``temperature`` is tau of the logits.
        """
        if x2 is None:
            return self.online(x1)
        n = len(x1)
        _, z = self.online(torch.cat([x1, x2]))  # (2N, D)
        q = F.normalize(z.float(), dim=1)
        with torch.no_grad():  # keys carry no gradient: the key network moves by momentum only
            _, k = self.key_network(torch.cat([x2, x1]))  # row i: the other view of q's digit
            k = F.normalize(k.float(), dim=1)  # (2N, D)
        positive = (q * k).sum(dim=1, keepdim=True)  # (2N, 1)
        negatives = q @ self.queue.keys.T  # (2N, K)
        logits = torch.cat([positive, negatives], dim=1) / temperature  # the positive is class 0
        target = torch.zeros(len(q), dtype=torch.long, device=q.device)
        self._new_keys = k
        return F.cross_entropy(logits, target), z[:n], z[n:]

    @torch.no_grad()
    def after_step(self) -> None:
        """After the optimizer step: move the key network, then enqueue this step's keys.

        The queue is read by this step's backward (the negatives' gradient into q), so the
        keys are written only now.
        """
        momentum_update(self.key_network, self.online, self.momentum)
        if self._new_keys is not None:
            self.queue.enqueue(self._new_keys)
            self._new_keys = None


@torch.no_grad()
def moco_batch_leak(
    moco: MoCo, x1: Tensor, x2: Tensor, other1: Tensor, other2: Tensor
) -> tuple[float, float]:
    """How much MoCo's contrastive top-1 rests on BatchNorm's batch statistics (He et al.,
    2020, sec. 3.3, "shuffling BN").

    In training (one process) the queries of a batch and their positive keys are computed on
    the same 2N views, so they share BatchNorm's batch statistics, while every queued negative
    was computed on an older batch: the positive can be found by that signature. This scores
    the top-1 of the positive among it and the queue's keys (chance: 1 / (K + 1)) twice, the
    networks in train mode as in training (on copies: running statistics untouched): with the
    keys computed as in training, and with each key computed in a batch half of whose views
    are other digits' (``other1``, ``other2``), as shuffling BN does across GPUs.

    Args:
        moco: a trained ``MoCo``.
        x1, x2: (N, 1, 28, 28) two views of N digits, N >= 2.
        other1, other2: (N, 1, 28, 28) two views of N other digits.

    Returns:
        (top-1 with the keys' statistics shared with the queries, top-1 with them shuffled).
    """
    n = len(x1)
    if n < 2 or not x1.shape == x2.shape == other1.shape == other2.shape:
        raise ValueError(
            f"need four (N, 1, 28, 28) batches with N >= 2, got {tuple(x1.shape)}, "
            f"{tuple(x2.shape)}, {tuple(other1.shape)}, {tuple(other2.shape)}"
        )
    online = copy.deepcopy(moco.online).train()
    key_network = copy.deepcopy(moco.key_network).train()
    _, z = online(torch.cat([x1, x2]))
    q = F.normalize(z.float(), dim=1)  # (2N, D): the queries, as in training

    def top1(k: Tensor) -> float:  # k: (2N, D) keys, row i the positive of query i
        k = F.normalize(k.float(), dim=1)
        logits = torch.cat([(q * k).sum(dim=1, keepdim=True), q @ moco.queue.keys.T], dim=1)
        return (logits.argmax(dim=1) == 0).float().mean().item()

    _, shared = key_network(torch.cat([x2, x1]))  # the training's keys: the queries' batch
    h, parts = n // 2, []
    for part in (slice(0, h), slice(h, n)):  # each half of the digits with other digits' views
        _, k = key_network(torch.cat([x2[part], other2[part], x1[part], other1[part]]))
        size = len(x2[part])
        parts.append((k[:size], k[2 * size : 3 * size]))  # keys of x2[part], x1[part]
    shuffled = torch.cat([parts[0][0], parts[1][0], parts[0][1], parts[1][1]])  # [x2; x1]
    return top1(shared), top1(shuffled)


def negative_cosine(p: Tensor, z: Tensor, stop_gradient: bool = True) -> Tensor:
    """D(p, z) = -cos(p, stopgrad(z)), averaged over the batch (Chen & He, 2021, eq. 1 and 3).

    Args:
        p: (N, D) predictions of one view.
        z: (N, D) projections of the other view: the target.
        stop_gradient: detach z (SimSiam); False lets the gradient into the target, and the
            two branches then agree by collapsing.

    Returns:
        Scalar in [-1, 1].
    """
    _check_pairs(p, z, "p and z")
    target = z.detach() if stop_gradient else z
    return -F.cosine_similarity(p.float(), target.float(), dim=1).mean()


class SimSiam(nn.Module):
    """SimSiam (Chen & He, 2021): two views, one network, a predictor, a stop-gradient.

    z = g(f(x)) as in SimCLR (with BatchNorm on z, as the paper's projector has); p = q(z)
    predicts the other view's z. Loss: (D(p1, z2) + D(p2, z1)) / 2 with ``negative_cosine``.
    No negatives and no momentum network: the stop-gradient alone prevents collapse.

    Args:
        simclr: its encoder f and head g are used; the head's output gets a BatchNorm.
        predictor_hidden: hidden width of the predictor (a bottleneck, as in the paper).
        stop_gradient: False is the ablation of the paper's Figure 2 (it collapses).
    """

    def __init__(
        self, simclr: SimCLR, predictor_hidden: int = 32, stop_gradient: bool = True
    ) -> None:
        super().__init__()
        dim = _z_size(simclr)
        self.encoder = simclr.encoder
        self.head = nn.Sequential(simclr.head, nn.BatchNorm1d(dim))
        self.predictor = predictor(dim, predictor_hidden)
        self.stop_gradient = stop_gradient

    trains_in_parallel = False  # one process, as every method of 08

    def forward(
        self, x1: Tensor, x2: Tensor | None = None, temperature: float = 0.5
    ) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, Tensor]:
        """x1: (N, 1, 28, 28) -> (h (N, D_h), z (N, D_z)).

        With the second view ``x2``: the symmetrised negative cosine of predictions and
        (stopped) projections, as (scalar loss in [-1, 1], z1, z2), z1 and z2 the (N, D)
        projections of the views; ``temperature`` is unused (SimSiam has no softmax).
        """
        if x2 is None:
            h = self.encoder(x1)
            return h, self.head(h)
        n = len(x1)
        _, z = self(torch.cat([x1, x2]))  # (2N, D)
        p = self.predictor(z)  # (2N, D)
        z1, z2, p1, p2 = z[:n], z[n:], p[:n], p[n:]
        stop = self.stop_gradient
        loss = (negative_cosine(p1, z2, stop) + negative_cosine(p2, z1, stop)) / 2
        return loss, z1, z2

    def after_step(self) -> None:
        """Nothing: the stop-gradient needs no update beyond the optimizer's."""


def predictor(dim: int, hidden: int = 32) -> nn.Sequential:
    """q: z (N, dim) -> a prediction of the other view's z (N, dim), an MLP with a bottleneck
    (SimSiam and BYOL: Linear, BatchNorm, ReLU, Linear)."""
    return nn.Sequential(
        nn.Linear(dim, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, dim),
    )


def normalized_mse(p: Tensor, z: Tensor) -> Tensor:
    """BYOL's loss: || p / |p| - z / |z| ||^2 = 2 - 2 cos(p, z), averaged over the batch
    (Grill et al., 2020, eq. 2). The target z carries no gradient.

    Args:
        p: (N, D) predictions of one view by the online network.
        z: (N, D) the target network's projections of the other view.

    Returns:
        Scalar in [0, 4].
    """
    return 2.0 + 2.0 * negative_cosine(p, z, stop_gradient=True)


class BYOL(nn.Module):
    """BYOL (Grill et al., 2020): a predictor and a momentum target, no negatives.

    The online network (``online``: f and g) and a predictor q predict, for each view, the
    other view's projection by the target network, a momentum copy of the online one (as
    MoCo's key network, moved by ``momentum_update`` after every step, with no gradient). Loss:
    ``normalized_mse`` of q(z) against the target's z, both views both ways. It sits between
    MoCo (the momentum network) and SimSiam (the predictor, without the momentum network).

    Args:
        online: the SimCLR model trained by gradients.
        momentum: m of the target network (the paper starts at 0.996 and raises it to 1).
        predictor_hidden: hidden width of q.
    """

    trains_in_parallel = False  # one process, as every method of 08

    def __init__(self, online: SimCLR, momentum: float = 0.99, predictor_hidden: int = 32) -> None:
        super().__init__()
        self.online = online
        self.target = copy.deepcopy(online).requires_grad_(False)  # trained by momentum only
        self.predictor = predictor(_z_size(online), predictor_hidden)
        self.momentum = momentum

    def forward(
        self, x1: Tensor, x2: Tensor | None = None, temperature: float = 0.5
    ) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, Tensor]:
        """x1: (N, 1, 28, 28) -> (h, z) of the online network (what training leaves us).

        With the second view ``x2``: (scalar loss in [0, 4], z1, z2), z1 and z2 the online
        (N, D) projections of the views; ``temperature`` is unused (no softmax).
        """
        if x2 is None:
            return self.online(x1)
        n = len(x1)
        _, z = self.online(torch.cat([x1, x2]))  # (2N, D)
        p = self.predictor(z)  # (2N, D)
        with torch.no_grad():  # the target moves by momentum only
            _, target = self.target(torch.cat([x2, x1]))  # row i: the other view of p's digit
        return normalized_mse(p, target), z[:n], z[n:]

    @torch.no_grad()
    def after_step(self) -> None:
        """After the optimizer's step: the target network moves toward the online one."""
        momentum_update(self.target, self.online, self.momentum)


def cross_correlation(z1: Tensor, z2: Tensor) -> Tensor:
    """C_ij = sum_b z1n_bi z2n_bj / N, each dimension standardised over the batch first.

    Barlow Twins' matrix (Zbontar et al., 2021, eq. 2): 1 on the diagonal when the two views
    agree in every dimension, 0 off it when the dimensions are decorrelated.

    Args:
        z1, z2: (N, D) projections of the two views, N >= 2.

    Returns:
        float32 (D, D).
    """
    _check_pairs(z1, z2, "z1 and z2")
    if len(z1) < 2:
        raise ValueError(f"need N >= 2 pairs to standardise over the batch, got {len(z1)}")

    def standardised(z: Tensor) -> Tensor:  # (N, D): mean 0, std 1 per dimension
        z = z.float()
        return (z - z.mean(dim=0)) / (z.std(dim=0, unbiased=False) + 1e-5)

    return standardised(z1).T @ standardised(z2) / len(z1)


def barlow_twins_loss(z1: Tensor, z2: Tensor, redundancy_weight: float = 5e-3) -> Tensor:
    """sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2 of ``cross_correlation`` (eq. 1).

    The first term makes the views agree (invariance), the second decorrelates the dimensions
    (redundancy reduction): with it a collapsed z, whose dimensions all say the same, costs a
    lot. No negatives, no asymmetry.

    Args:
        z1, z2: (N, D) projections of the two views, N >= 2.
        redundancy_weight: lambda >= 0 (the paper: 5e-3 for D = 8192).

    Returns:
        Scalar >= 0.
    """
    if not redundancy_weight >= 0:
        raise ValueError(f"redundancy_weight must be >= 0, got {redundancy_weight}")
    c = cross_correlation(z1, z2)  # (D, D)
    on_diagonal = (1 - c.diagonal()).pow(2).sum()
    off_diagonal = c.pow(2).sum() - c.diagonal().pow(2).sum()
    return on_diagonal + redundancy_weight * off_diagonal


class BarlowTwins(SimCLR):
    """Barlow Twins (Zbontar et al., 2021): SimCLR's encoder and head, ``barlow_twins_loss``.

    The same weights' names as ``SimCLR``; the loss decorrelates z's dimensions instead of
    pushing negatives apart.

    Args:
        encoder, head: as ``SimCLR``.
        redundancy_weight: lambda of ``barlow_twins_loss``.
    """

    trains_in_parallel = False  # its batch statistics are one process's

    def __init__(self, encoder: nn.Module, head: nn.Module, redundancy_weight: float = 5e-3):
        super().__init__(encoder, head)
        self.redundancy_weight = redundancy_weight

    def loss(self, z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
        """``barlow_twins_loss`` of the (N, D_z) projections; ``temperature`` is unused."""
        return barlow_twins_loss(z1, z2, self.redundancy_weight)


def _z_size(simclr: SimCLR) -> int:
    # the size of z: the head's out_dim, or h's size when there is no head (nn.Identity)
    return getattr(simclr.head, "out_dim", None) or getattr(
        simclr.head, "out_features", simclr.encoder.out_dim
    )


def queue_holds_a_step(method: str, queue_size: int, batch_size: int) -> bool:
    """Whether a run's key queue fits one step's keys: MoCo enqueues 2N of them every step."""
    return method != "moco" or queue_size >= 2 * batch_size


def build_method(
    method: str,
    simclr: SimCLR,
    queue_size: int = 4096,
    momentum: float = 0.99,
    stop_gradient: bool = True,
    redundancy_weight: float = 5e-3,
) -> nn.Module:
    """The model a method trains, around a freshly built SimCLR model.

    Args:
        method: one of ``METHODS``; "simclr" trains ``simclr`` itself, "positives" and
            "barlow_twins" its encoder and head with another loss.
        simclr: encoder f and head g.
        queue_size: MoCo's K. momentum: m of MoCo's key network and BYOL's target.
        stop_gradient: SimSiam's stop-gradient (False: the collapsing ablation).
        redundancy_weight: Barlow Twins' lambda.
    """
    if method == "simclr":
        return simclr
    if method == "positives":
        return PositivesOnly(simclr.encoder, simclr.head)
    if method == "moco":
        return MoCo(simclr, queue_size, momentum)
    if method == "simsiam":
        return SimSiam(simclr, stop_gradient=stop_gradient)
    if method == "byol":
        return BYOL(simclr, momentum)
    if method == "barlow_twins":
        return BarlowTwins(simclr.encoder, simclr.head, redundancy_weight)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def rotated_digits(
    images: Tensor, angles: tuple[float, ...] = (0.0, 90.0, 180.0, 270.0)
) -> tuple[Tensor, Tensor]:
    """Digit i turned by ``angles[i % len(angles)]`` degrees (anticlockwise); its label is i % A.

    A task to ask of h and of z: the paper (Chen et al., 2020, sec. 4.2, Table 3) predicts such
    transformations from h and from z and finds h keeps far more about them than z: the head
    throws away what the loss does not need.

    Args:
        images: uint8 (M, 28, 28) digits.
        angles: the A turns, in degrees.

    Returns:
        (float (M, 1, 28, 28) turned digits in [0, 1], long (M,) labels in [0, A)).
    """
    x = preprocess(torch.as_tensor(images))  # (M, 1, 28, 28)
    label = torch.arange(len(x)) % len(angles)
    turned = x.clone()
    for i, angle in enumerate(angles):
        turned[label == i] = TF.rotate(x[label == i], float(angle))
    return turned, label
