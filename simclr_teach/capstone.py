"""The capstone's grading (09_capstone): a student's SimCLR judged by what it does, not its code.

Each ``check_*`` calls the student's function on inputs it makes, compares what comes back with
an oracle written here independently of ``loss`` and ``train`` (NT-Xent anchor by anchor, in
float64; a training step by hand), and raises AssertionError naming what is wrong and how to
mend it. The checks of the views, the loss and the step refuse answers that call the package's
own implementation (``calls_into``): the capstone is written from empty cells. The test digits
sit in a ``TestVault``: one counted call, so an evaluation that looks at them twice, or chooses
anything on them, is caught.

Reference: Chen, Kornblith, Norouzi and Hinton, "A Simple Framework for Contrastive Learning of
Visual Representations", ICML 2020 (eq. 1: NT-Xent; sec. 2.1: the framework).
"""

from __future__ import annotations

import copy
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from simclr_teach.evaluate import embed, knn_accuracy, knn_predict, pixel_features


class TestVault:
    """The test digits behind one counted call: evaluate everything else first, then ``open()``.

    Args:
        images: (M, 28, 28) or (M, 1, 28, 28) test digits. labels: (M,) their classes.
    """

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} test images but {len(labels)} labels")
        self._images, self._labels = images, labels
        self.opened = 0  # calls to open(), the second one included

    def __repr__(self) -> str:
        return f"TestVault({len(self._labels)} digits, opened {self.opened} time(s))"

    def open(self) -> tuple[Tensor, Tensor]:
        """(images, labels) of the test digits, once; a second call raises RuntimeError."""
        self.opened += 1
        if self.opened > 1:
            raise RuntimeError(
                "the test digits were already looked at once: choose every setting on "
                "validation digits, then open the vault once, at the end (to start over, "
                "run the cell that made the vault again)"
            )
        return self._images.clone(), self._labels.clone()


@contextmanager
def calls_into(package: str = "simclr_teach") -> Iterator[set[str]]:
    """Record the Python functions of ``package`` called inside the block: {"module.function"}.

    A profile hook (``sys.setprofile``) sees every Python call of this thread; functions of this
    module (the checks themselves) are not recorded.
    """
    found: set[str] = set()
    here = __name__

    def hook(frame, event, _arg) -> None:  # noqa: ANN001 - sys.setprofile's signature
        if event == "call":
            module = frame.f_globals.get("__name__", "")
            if module.startswith(package) and module != here:
                found.add(f"{module}.{frame.f_code.co_name}")

    previous = sys.getprofile()
    sys.setprofile(hook)
    try:
        yield found
    finally:
        sys.setprofile(previous)


def _own_work(found: set[str], what: str) -> None:
    assert not found, (
        f"{what} calls the course package ({', '.join(sorted(found))}): the capstone asks you to "
        "write it yourself from torch operations"
    )


def nt_xent_by_anchor(
    z1: Tensor,
    z2: Tensor,
    temperature: float,
    include_self: bool = False,
    normalise: bool = True,
    both_views: bool = True,
) -> Tensor:
    """NT-Xent (Chen et al., 2020, eq. 1) written out one anchor at a time, in float64: the oracle.

    z1, z2: (N, D) projections of the two views; row i of each is the same image. Every one of
    the 2N views is an anchor; its positive is its partner, its denominator the other 2N - 1
    views. The flags give the usual mistakes instead (to name them in a check's message):
    ``include_self`` adds the anchor to its own denominator (the blog post's sum over all 2N),
    ``normalise=False`` uses dot products instead of cosines, ``both_views=False`` averages over
    the N anchors of the first view only.

    Returns: the mean loss, a 0-dim float64 tensor that carries gradients to z1 and z2.
    """
    z = torch.cat([z1, z2]).double()  # (2N, D)
    if normalise:
        z = z / z.norm(dim=1, keepdim=True)
    n = len(z1)
    losses = []
    for i in range(2 * n if both_views else n):
        partner = (i + n) % (2 * n)
        others = [j for j in range(2 * n) if include_self or j != i]
        logits = torch.stack([z[i] @ z[j] for j in others]) / temperature
        losses.append(torch.logsumexp(logits, dim=0) - z[i] @ z[partner] / temperature)
    return torch.stack(losses).mean()


LOSS_CASES = ((2, 3, 0.5), (5, 8, 0.1), (16, 4, 1.0), (7, 32, 0.07))  # (N, D, tau)
LOSS_MISTAKES = {  # the variant of eq. 1 that each flag set computes -> what it means
    (("include_self", True),): "the anchor is in its own denominator (a sum over all 2N views)",
    (("normalise", False),): "dot products instead of cosine similarities (normalise z first)",
    (("both_views", False),): "only the first view's anchors are averaged (use all 2N)",
}


def _named_mistake(value: float, z1: Tensor, z2: Tensor, temperature: float) -> str:
    for flags, meaning in LOSS_MISTAKES.items():
        wrong = nt_xent_by_anchor(z1.detach(), z2.detach(), temperature, **dict(flags)).item()
        if math.isclose(value, wrong, rel_tol=1e-4, abs_tol=1e-6):
            return f" It matches a known mistake: {meaning}."
    return ""


def check_loss(nt_xent: Callable[[Tensor, Tensor, float], Tensor], seed: int = 0) -> None:
    """nt_xent(z1 (N, D), z2 (N, D), temperature) -> 0-dim loss: value and gradient of eq. 1."""
    g = torch.Generator().manual_seed(seed)
    for n, d, tau in LOSS_CASES:
        z1 = (3 * torch.randn(n, d, generator=g, dtype=torch.float64)).requires_grad_()
        z2 = (z1.detach() + torch.randn(n, d, generator=g, dtype=torch.float64)).requires_grad_()
        with calls_into() as found:
            loss = nt_xent(z1, z2, tau)
        _own_work(found, "nt_xent")
        case = f"N = {n}, D = {d}, temperature = {tau}"
        assert isinstance(loss, Tensor) and loss.dim() == 0, (
            f"{case}: nt_xent must return a 0-dim tensor (the mean over anchors), got "
            f"{type(loss).__name__} {tuple(getattr(loss, 'shape', ()))}"
        )
        expected = nt_xent_by_anchor(z1, z2, tau)
        assert math.isclose(loss.item(), expected.item(), rel_tol=1e-4, abs_tol=1e-6), (
            f"{case}: nt_xent gave {loss.item():.6f}, NT-Xent is {expected.item():.6f}."
            + _named_mistake(loss.item(), z1, z2, tau)
        )
        grads = torch.autograd.grad(loss, (z1, z2), allow_unused=True)
        wanted = torch.autograd.grad(expected, (z1, z2))
        for got, want, name in zip(grads, wanted, ("z1", "z2"), strict=True):
            assert got is not None, f"{case}: no gradient reaches {name} (a .detach() or .item()?)"
            assert torch.allclose(got.double(), want, rtol=1e-3, atol=1e-6), (
                f"{case}: the value is right but the gradient with respect to {name} is not; "
                "is something computed outside autograd (numpy, .item(), .data)?"
            )


def check_views(
    make_views: Callable[[Tensor, torch.Generator], tuple[Tensor, Tensor]],
    images: Tensor,
) -> float:
    """make_views(images (B, 1, 28, 28) float in [0, 1], generator) -> two views (B, 1, 28, 28).

    Checks shape, dtype and range, that the two views of a digit differ, that a seed repeats
    them and another seed does not, that the input is left alone, and that the views still look
    like their digit: a view's pixels are closer (cosine) to its own digit than to the others.

    Returns: that margin, the mean cosine to its own digit minus that to the other digits.
    """
    x = images.float()
    kept = x.clone()
    with calls_into() as found:
        views = make_views(x, torch.Generator().manual_seed(0))
    _own_work(found, "make_views")
    assert isinstance(views, tuple | list) and len(views) == 2, "return the two views: (x1, x2)"
    for name, view in zip(("x1", "x2"), views, strict=True):
        assert isinstance(view, Tensor) and view.shape == x.shape, (
            f"{name} must be a tensor shaped like the batch {tuple(x.shape)}, got "
            f"{tuple(getattr(view, 'shape', ()))}"
        )
        assert view.is_floating_point() and torch.isfinite(view).all(), f"{name}: finite floats"
        assert view.min() >= 0 and view.max() <= 1, (
            f"{name} has pixels in [{view.min():.2f}, {view.max():.2f}]: keep views in [0, 1] "
            "(clamp after adding noise)"
        )
    x1, x2 = views
    assert torch.equal(x, kept), "make_views changed its input: work on a copy"
    differ = (x1 - x2).abs().flatten(1).mean(1) > 1e-3  # (B,)
    assert differ.float().mean() >= 0.9, (
        f"the two views of a digit are the same for {(~differ).sum().item()} of {len(x)} "
        "digits: draw each view's augmentation separately"
    )
    again = make_views(x, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(views, again, strict=True)), (
        "the same seed gave other views: take every random number from `generator`"
    )
    other = make_views(x, torch.Generator().manual_seed(1))
    assert not torch.equal(other[0], x1), "another seed gave the same views"
    similarity = F.normalize(x1.flatten(1), dim=1) @ F.normalize(x.flatten(1), dim=1).T  # (B, B)
    own = similarity.diag().mean().item()  # a view against its own digit
    others = ((similarity.sum() - similarity.diag().sum()) / (len(x) ** 2 - len(x))).item()
    assert own - others >= 0.05, (
        f"a view is about as close to other digits (cosine {others:.2f}) as to its own "
        f"({own:.2f}): the views no longer show their digit; weaken the augmentations"
    )
    return own - others


class _TinyModel(nn.Module):
    """(B, 1, 28, 28) -> (h (B, 8), z (B, 4)) with no BatchNorm: one pass or two give the same."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(784, 8), nn.Tanh())
        self.head = nn.Linear(8, 4)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.encoder(x)
        return h, self.head(h)


def _steps_by_hand(model: nn.Module, pairs: list[tuple[Tensor, Tensor]], lr: float) -> list[float]:
    """Plain SGD on the oracle loss, one fresh gradient per pair: the reference training steps."""
    losses = []
    for x1, x2 in pairs:
        loss = nt_xent_by_anchor(model(x1)[1], model(x2)[1], 0.5)
        grads = torch.autograd.grad(loss, list(model.parameters()))
        with torch.no_grad():
            for parameter, grad in zip(model.parameters(), grads, strict=True):
                parameter -= lr * grad
        losses.append(loss.item())
    return losses


def check_train_steps(
    train_steps: Callable[..., list[float]], steps: int = 3, lr: float = 0.5, seed: int = 0
) -> None:
    """train_steps(model, optimizer, view_pairs, loss_fn) -> one float loss per pair.

    Runs it with plain SGD (no momentum) on a small float64 model without BatchNorm and compares
    the weights after ``steps`` steps with steps taken by hand: each step must use the gradient
    of its own batch only (optimizer.zero_grad before backward), then step.
    """
    torch.manual_seed(seed)
    model = _TinyModel().double()
    reference = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    pairs = [
        tuple(torch.rand(6, 1, 28, 28, generator=g, dtype=torch.float64) for _ in range(2))
        for _ in range(steps)
    ]
    model.eval()  # as after an evaluation: train_steps must put it back in training mode
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    with calls_into() as found:
        losses = train_steps(
            model, optimizer, iter(pairs), lambda z1, z2: nt_xent_by_anchor(z1, z2, 0.5)
        )
    _own_work(found, "train_steps")
    assert isinstance(losses, list) and len(losses) == steps, (
        f"return a list with one loss per pair of views: {steps} pairs, got {losses!r}"[:300]
    )
    assert all(type(loss) is float for loss in losses), (
        "each loss must be a Python float (loss.item()): a tensor keeps its whole graph alive"
    )
    assert model.training, "call model.train() first: BatchNorm and dropout must train"
    wanted = _steps_by_hand(reference, pairs, lr)
    for (name, got), want in zip(model.named_parameters(), reference.parameters(), strict=True):
        assert torch.allclose(got, want, rtol=1e-6, atol=1e-9), (
            f"after {steps} steps {name} is not where {steps} SGD steps put it: each step needs "
            "optimizer.zero_grad(), loss.backward(), optimizer.step(), in that order"
        )
    assert all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(losses, wanted, strict=True)), (
        f"the losses {[round(v, 4) for v in losses]} should be {[round(v, 4) for v in wanted]}: "
        "each is loss_fn(z1, z2) of its pair, before that pair's step"
    )


def check_pretrain(
    pretrain: Callable[..., object],
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    epochs: int,
    min_knn: float,
    seed: int = 0,
) -> dict[str, float]:
    """pretrain(model, images (N, 1, 28, 28), epochs, generator) trains ``model`` in place.

    The budget is counted, not timed: at most two views of each digit per epoch go through the
    model. Then the encoder's h must reach ``min_knn`` leave-one-out kNN accuracy over the
    training digits, and beat the same encoder untrained.

    Returns: {"untrained": kNN before, "trained": kNN after, "views seen": views per digit}.
    """
    x = images.float()
    before = _loo_knn_of_h(model, x, labels)
    budget, seen = 2 * epochs * len(x), [0]

    def count(_module: nn.Module, args: tuple) -> None:  # stops an over-budget run at once
        seen[0] += len(args[0])
        assert seen[0] <= budget, (
            f"more than {budget} views went through the model in {epochs} epochs of {len(x)} "
            "digits: the budget is two views of each digit per epoch"
        )

    hook = model.register_forward_pre_hook(count)
    try:
        pretrain(model, x, epochs, torch.Generator().manual_seed(seed))
    finally:
        hook.remove()
    views = seen[0] / len(x)
    assert views > 0, "no digit went through the model: pretrain must train it"
    after = _loo_knn_of_h(model, x, labels)
    assert after >= min_knn and after > before, (
        f"h reaches {after:.1%} leave-one-out kNN accuracy after training ({before:.1%} "
        f"untrained); it should reach {min_knn:.0%} in this budget"
    )
    return {"untrained": before, "trained": after, "views seen": views}


def _loo_knn_of_h(model: nn.Module, x: Tensor, labels: Tensor) -> float:
    """Leave-one-out kNN accuracy of the model's h over the digits x (N, 1, 28, 28), in [0, 1]."""
    h = embed(model, x)  # (N, D_h), in eval mode, the modes put back after
    return knn_accuracy(h, labels, h, labels, leave_one_out=True)


def knn_correct(
    train_features: Tensor, train_labels: Tensor, test_features: Tensor, test_labels: Tensor, k: int
) -> Tensor:
    """(M,) bool: whether the weighted kNN of all the training digits gets each test digit right."""
    return knn_predict(train_features, train_labels, test_features, k=k) == test_labels


def noisy(images: Tensor, sigma: float, seed: int = 0) -> Tensor:
    """Digits (M, 28, 28) uint8 or float in [0, 1] with Gaussian pixel noise: float, clamped."""
    x = pixel_features(images).view(len(images), 1, 28, 28)
    g = torch.Generator().manual_seed(seed)
    return (x + sigma * torch.randn(x.shape, generator=g)).clamp(0, 1)


EVALUATION_KS = (1, 3, 10, 30, 100)  # k the check offers; clean digits favour a small one
TEST_NOISE = 0.7  # the check's test digits: noisy enough that the largest k wins on them


def check_evaluation(
    evaluate: Callable[..., dict[str, dict]],
    train_images: Tensor,
    train_labels: Tensor,
    test_images: Tensor,
    test_labels: Tensor,
    ks: tuple[int, ...] = EVALUATION_KS,
) -> dict[str, int]:
    """evaluate(representations, train_images, train_labels, vault, ks) -> {name: result}.

    Each result: {"k": the k chosen on validation digits, "val_accuracy": {k: accuracy},
    "test_correct": (M,) bool, kNN of all the training digits at that k}. The check's test digits
    are noisy (``TEST_NOISE``), so on them a large k wins while clean validation digits choose a
    small one: an evaluation that chooses on test digits chooses another k than its validation
    scores do. The vault must be opened exactly once.

    Returns: {name: chosen k}.
    """
    x, noisy_test = train_images.float(), noisy(test_images, TEST_NOISE)
    representations = {
        "raw pixels": pixel_features,
        "pixels squared": lambda v: pixel_features(v) ** 2,
    }
    vault = TestVault(noisy_test, test_labels)
    results = evaluate(dict(representations), x, train_labels, vault, ks)
    assert vault.opened == 1, (
        f"open the vault exactly once, after every choice (opened {vault.opened} times)"
    )
    assert isinstance(results, dict) and set(results) == set(representations), (
        f"return one result per representation, keyed by name: {sorted(representations)}"
    )
    test = (noisy_test, test_labels)
    return {
        name: _check_one_evaluation(name, results[name], represent, x, train_labels, test, ks)
        for name, represent in representations.items()
    }


def _check_one_evaluation(
    name: str,
    result: dict,
    represent: Callable[[Tensor], Tensor],
    x: Tensor,
    train_labels: Tensor,
    test: tuple[Tensor, Tensor],
    ks: tuple[int, ...],
) -> int:
    """One representation's result of ``check_evaluation``: its k, scores and test answers."""
    bank, test_features = represent(x), represent(test[0])
    test_accuracy = {
        j: knn_correct(bank, train_labels, test_features, test[1], j).float().mean().item()
        for j in ks
    }
    val = result.get("val_accuracy")
    assert isinstance(val, dict) and set(val) == set(ks), (
        f"{name}: val_accuracy must give every k of {ks}"
    )
    k = result.get("k")
    assert k in ks and val[k] == max(val.values()), (
        f"{name}: the chosen k = {k} is not the best on validation ({val}): choose the k "
        "that validation digits score best"
    )
    honest = any(abs(val[j] - test_accuracy[j]) > 1e-4 for j in ks)
    assert honest and val[k] > test_accuracy[k] + 0.1, (
        f"{name}: the 'validation' accuracies {val} are those of the test digits "
        f"{test_accuracy}: score k on digits held out of the training digits"
    )
    correct = result.get("test_correct")
    assert isinstance(correct, Tensor) and correct.dtype == torch.bool, (
        f"{name}: test_correct must be a bool tensor"
    )
    assert correct.shape == test[1].shape, (
        f"{name}: test_correct needs one entry per test digit {tuple(test[1].shape)}"
    )
    wanted = knn_correct(bank, train_labels, test_features, test[1], k)
    agree = (correct == wanted).float().mean().item()
    assert agree >= 0.99, (
        f"{name}: test_correct agrees with the kNN of all {len(x)} training digits at k = {k} "
        f"on {agree:.1%} of the test digits: after choosing k, refit on every training digit"
    )
    return k


def paired_difference_oracle(correct_a: Tensor, correct_b: Tensor) -> tuple[float, float]:
    """Mean of a - b over the same (M,) test digits, and its standard error sd(a - b) / sqrt(M)."""
    d = correct_a.double() - correct_b.double()  # (M,) each in {-1, 0, 1}
    return d.mean().item(), (d.std() / math.sqrt(len(d))).item()


def check_paired_difference(
    paired_difference: Callable[[Tensor, Tensor], tuple[float, float]],
) -> None:
    """paired_difference(correct_a (M,) bool, correct_b (M,) bool) -> (difference, its s.e.)."""
    g = torch.Generator().manual_seed(0)
    for m, p_a, p_b in ((1000, 0.93, 0.91), (10, 0.7, 0.6), (300, 0.5, 0.8)):
        a = torch.rand(m, generator=g) < p_a
        b = torch.where(torch.rand(m, generator=g) < 0.7, a, torch.rand(m, generator=g) < p_b)
        got = paired_difference(a, b)
        assert isinstance(got, tuple) and len(got) == 2 and all(type(v) is float for v in got), (
            f"return two Python floats (difference, standard error), got {got!r}"[:200]
        )
        want = paired_difference_oracle(a, b)
        assert math.isclose(got[0], want[0], rel_tol=1e-6, abs_tol=1e-12), (
            f"M = {m}: the difference should be mean(a) - mean(b) = {want[0]:.4f}, got {got[0]:.4f}"
        )
        assert math.isclose(got[1], want[1], rel_tol=1e-6, abs_tol=1e-12), (
            f"M = {m}: the standard error should be {want[1]:.5f}, got {got[1]:.5f}: the sample "
            "standard deviation (M - 1) of the per-digit differences a - b, over sqrt(M); the "
            "same digits are tested twice, so the two accuracies are not independent"
        )
    same = torch.rand(50, generator=g) < 0.8
    assert paired_difference(same, same) == (0.0, 0.0), "identical results differ by 0 +- 0"


def check_study(
    study: dict[str, dict],
    comparisons: dict[str, tuple[float, float]],
    vault: TestVault,
    seeds: int,
) -> None:
    """The capstone's study: raw pixels and ``seeds`` SimCLR encoders, one look at the vault,
    and each encoder's paired difference against raw pixels."""
    assert vault.opened == 1, f"the study opens the vault once (opened {vault.opened} times)"
    assert "raw pixels" in study, "evaluate raw pixels too, under the name 'raw pixels'"
    encoders = [name for name in study if name != "raw pixels"]
    assert len(encoders) >= seeds, f"{seeds} trained encoders (one per seed), got {encoders}"
    assert set(comparisons) == set(encoders), "one comparison against raw pixels per encoder"
    pixels = study["raw pixels"]["test_correct"]
    for name in encoders:
        want = paired_difference_oracle(study[name]["test_correct"], pixels)
        got = comparisons[name]
        assert all(
            math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12) for a, b in zip(got, want, strict=True)
        ), (
            f"{name}: the comparison {got} is not the paired difference of its test_correct "
            f"against raw pixels' {want}"
        )
    distinct = {tuple(study[name]["test_correct"].tolist()) for name in encoders}
    assert len(distinct) == len(encoders), "two seeds gave the same results: seed each run"
