"""What SimCLR needs, and what came after it: the losses and models of 08_what_simclr_needs.

SimCLR's loss pulls the two views of a digit together (the numerator of NT-Xent) and pushes
every other view away (its denominator, the negatives). This module holds the experiments that
take it apart, each trained by the course's own loop (``train.train_one_epoch``, where only the
loss line differs, chosen by ``TrainConfig.method``):

- ``"positives"``: the numerator alone, ``positives_only_loss``. Nothing keeps the digits
  apart, so the representation collapses; ``effective_rank`` and ``singular_spectrum`` measure
  it (Roy & Vetterli, 2007; Jing et al., 2022, "Understanding Dimensional Collapse in
  Contrastive Self-supervised Learning").
- ``"moco"``: MoCo (He et al., 2020): the negatives come from a FIFO queue (``KeyQueue``) of
  keys made by a momentum copy of the network (``momentum_update``), so a small batch still
  sees thousands of negatives.
- ``"simsiam"``: SimSiam (Chen & He, 2021): no negatives at all; a predictor and a
  stop-gradient (``negative_cosine``) are what keep it from collapsing.

Every model here returns ``(h, z)`` from ``forward`` like ``model.SimCLR``, so ``embed``, the kNN
and the probes read it unchanged; its ``loss(x1, x2, temperature)`` is one training step's loss.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from simclr_teach.loss import check_temperature
from simclr_teach.model import SimCLR

METHODS = ("simclr", "positives", "moco", "simsiam")  # TrainConfig.method


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

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: (N, 1, 28, 28) -> (h, z) of the online network (what training leaves us)."""
        return self.online(x)

    def loss(self, x1: Tensor, x2: Tensor, temperature: float) -> tuple[Tensor, Tensor, Tensor]:
        """InfoNCE of the 2N queries against their keys and the queue.

        Args:
            x1, x2: the two views, (N, 1, 28, 28) each.
            temperature: tau of the logits.

        Returns:
            (scalar loss, z1, z2), z1 and z2 the online (N, D) projections of the two views.
        """
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
        self.predictor = nn.Sequential(
            nn.Linear(dim, predictor_hidden),
            nn.BatchNorm1d(predictor_hidden),
            nn.ReLU(inplace=True),
            nn.Linear(predictor_hidden, dim),
        )
        self.stop_gradient = stop_gradient

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: (N, 1, 28, 28) -> (h (N, D_h), z (N, D_z))."""
        h = self.encoder(x)
        return h, self.head(h)

    def loss(self, x1: Tensor, x2: Tensor, temperature: float) -> tuple[Tensor, Tensor, Tensor]:
        """Symmetrised negative cosine of predictions and (stopped) projections.

        Args:
            x1, x2: the two views, (N, 1, 28, 28) each.
            temperature: unused (SimSiam has no softmax); kept so every method has one signature.

        Returns:
            (scalar loss in [-1, 1], z1, z2), z1 and z2 the (N, D) projections of the views.
        """
        n = len(x1)
        _, z = self(torch.cat([x1, x2]))  # (2N, D)
        p = self.predictor(z)  # (2N, D)
        z1, z2, p1, p2 = z[:n], z[n:], p[:n], p[n:]
        stop = self.stop_gradient
        loss = (negative_cosine(p1, z2, stop) + negative_cosine(p2, z1, stop)) / 2
        return loss, z1, z2


def _z_size(simclr: SimCLR) -> int:
    # the size of z: the head's out_dim, or h's size when there is no head (nn.Identity)
    return getattr(simclr.head, "out_dim", None) or getattr(
        simclr.head, "out_features", simclr.encoder.out_dim
    )


def build_method(
    method: str,
    simclr: SimCLR,
    queue_size: int = 4096,
    momentum: float = 0.99,
    stop_gradient: bool = True,
) -> nn.Module:
    """The model a method trains, around a freshly built SimCLR model.

    Args:
        method: one of ``METHODS``; "simclr" and "positives" train ``simclr`` itself.
        simclr: encoder f and head g.
        queue_size, momentum: MoCo's K and m.
        stop_gradient: SimSiam's stop-gradient (False: the collapsing ablation).
    """
    if method in ("simclr", "positives"):
        return simclr
    if method == "moco":
        return MoCo(simclr, queue_size, momentum)
    if method == "simsiam":
        return SimSiam(simclr, stop_gradient=stop_gradient)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def readout(model: nn.Module, images: Tensor, labels: Tensor, val: Tensor) -> dict[str, float]:
    """How well h and z of a trained model classify digits, without touching the test split.

    kNN: weighted kNN@20 with each training digit left out of its own vote (``lab.score``'s
    reader). Linear probe: fitted on the training digits outside ``val``, scored on ``val``.

    Args:
        model: returns (h, z) from ``forward``.
        images: uint8 (M, 28, 28) training digits; labels: (M,).
        val: bool (M,) validation mask (``train.validation_split``).

    Returns:
        {"kNN h", "kNN z", "probe h", "probe z"}: accuracies in [0, 1].
    """
    from simclr_teach.evaluate import embed, knn_accuracy, linear_probe

    scores = {}
    for use in ("h", "z"):
        x = embed(model, images, use)  # (M, D)
        scores[f"kNN {use}"] = knn_accuracy(x, labels, x, labels, leave_one_out=True)
        scores[f"probe {use}"] = linear_probe(x[~val], labels[~val], x[val], labels[val])
    return {name: scores[name] for name in ("kNN h", "kNN z", "probe h", "probe z")}


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
    from torchvision.transforms.v2 import functional as TF

    from simclr_teach.model import preprocess

    x = preprocess(torch.as_tensor(images))  # (M, 1, 28, 28)
    label = torch.arange(len(x)) % len(angles)
    turned = x.clone()
    for i, angle in enumerate(angles):
        turned[label == i] = TF.rotate(x[label == i], float(angle))
    return turned, label
