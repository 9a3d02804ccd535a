"""The honest evaluation protocol and the few-label baselines. Taught in 05_evaluation_tsne_knn.

Hyperparameters of a reader (the kNN's k and temperature, the probe's C) are chosen on a
validation split, then the reader is refit on all training digits and the test split is scored
once (``tuned_scores``). For "how many labels does SimCLR save?", ``labelled_subset`` draws a
few labels per digit and ``few_label_study`` compares frozen readers, the supervised baseline
and fine-tuning (``finetune``) on them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from simclr_teach.evaluate import knn_accuracy, linear_probe
from simclr_teach.memo import memoised


def tune_knn(
    train_features: Tensor,
    train_labels: Tensor,
    val_features: Tensor | None,
    val_labels: Tensor | None,
    ks: Sequence[int] = (1, 5, 20, 200),
    temperatures: Sequence[float] = (0.01, 0.03, 0.1, 0.3),
) -> dict[int, tuple[float, float]]:
    """For each k, the kNN temperature with the best validation accuracy. Taught in 05.

    The honest protocol: hyperparameters are picked on the training digits, either on a
    validation split carved from them (``train.validation_split``) or, with ``val_features``
    None, by leave-one-out over all of them (every training digit a query against the others:
    8x the queries of a 50-per-class split, so about a third of its noise); the test split is
    used once, afterwards.

    Args:
        train_features: (N, D) bank; train_labels: (N,). val_features: (V, D) and val_labels:
            (V,), or both None for leave-one-out over the bank.
        ks: neighbour counts to tune for. temperatures: candidates, each > 0; ties go to the first.

    Returns:
        {k: (best temperature, its validation accuracy)}.
    """
    if not ks or not temperatures:
        raise ValueError("ks and temperatures must each hold at least one value")
    loo = val_features is None
    if loo:
        val_features, val_labels = train_features, train_labels
    best = {}
    for k in ks:
        scores = [
            knn_accuracy(
                train_features, train_labels, val_features, val_labels, k, t, leave_one_out=loo
            )
            for t in temperatures
        ]
        i = int(np.argmax(scores))  # first maximum
        best[k] = (float(temperatures[i]), scores[i])
    return best


def tune_probe(
    train_features: Tensor,
    train_labels: Tensor,
    val_features: Tensor,
    val_labels: Tensor,
    Cs: Sequence[float] = (0.01, 0.1, 1.0),
    seed: int = 0,
) -> tuple[float, dict[float, float]]:
    """The linear probe's C (inverse L2 strength) with the best validation accuracy. Taught in 05.

    Args:
        train_features: (N, D); train_labels: (N,). val_features: (V, D); val_labels: (V,).
        Cs: candidates, each > 0; ties go to the first (the strongest regularisation listed first).
        seed: passed to ``linear_probe``.

    Returns:
        (best C, {C: validation accuracy}).
    """
    if not Cs or min(Cs) <= 0:
        raise ValueError(f"Cs must be a non-empty list of values > 0, got {list(Cs)}")
    scores = {
        float(C): linear_probe(train_features, train_labels, val_features, val_labels, C, seed=seed)
        for C in Cs
    }
    return max(scores, key=scores.get), scores  # max returns the first of equal scores


@memoised
def tuned_scores(
    train_features: Tensor,
    train_labels: Tensor,
    val_mask: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    ks: Sequence[int] = (1, 5, 20, 200),
    temperatures: Sequence[float] = (0.01, 0.03, 0.1, 0.3),
    Cs: Sequence[float] | None = (0.01, 0.1, 1.0),
    seed: int = 0,
) -> tuple[dict[str, float], dict[str, float]]:
    """kNN and linear-probe test accuracy, hyperparameters chosen on validation. Taught in 05.

    The kNN's k and temperature are chosen by leave-one-out over all training digits
    (``tune_knn`` with no validation split: the least noisy choice, and a kNN needs no fitting);
    the probe's C by fitting on the training rows outside ``val_mask`` and scoring the rows
    inside it (``tune_probe``). The final readers then use every training row with the chosen
    values, and the test split is scored once.

    Args:
        train_features: (N, D); train_labels: (N,). val_mask: bool (N,), True = validation row.
        test_features: (M, D); test_labels: (M,).
        ks, temperatures: as in ``tune_knn``. Cs: as in ``tune_probe``; None skips the probe.
        seed: passed to the probe.

    Returns:
        (scores, chosen). scores: {"knn@k": test accuracy at each k, "knn": the kNN reader
        chosen by leave-one-out (its k and temperature), "linear": ...}, in [0, 1]. chosen:
        {"temperature@k": ..., "k": the k with the best leave-one-out accuracy, "val_knn": that
        accuracy, "C": ...}.
    """
    val_mask = torch.as_tensor(val_mask, dtype=torch.bool)
    if val_mask.shape != (len(train_features),) or val_mask.all() or not val_mask.any():
        raise ValueError(
            "val_mask must be a bool (N,) mask with both validation rows (True) and "
            "training rows (False); use train.validation_split(train_labels)"
        )
    split = (
        train_features[~val_mask],
        train_labels[~val_mask],
        train_features[val_mask],
        train_labels[val_mask],
    )
    final = (train_features, train_labels, test_features, test_labels)
    scores, chosen = {}, {}
    knn_choice = tune_knn(train_features, train_labels, None, None, ks, temperatures)  # LOO
    for k, (temperature, _) in knn_choice.items():
        chosen[f"temperature@{k}"] = temperature
        scores[f"knn@{k}"] = knn_accuracy(*final, k=k, temperature=temperature)
    chosen["k"] = max(knn_choice, key=lambda k: knn_choice[k][1])  # first of ties: listed first
    chosen["val_knn"] = knn_choice[chosen["k"]][1]
    scores["knn"] = scores[f"knn@{chosen['k']}"]
    if Cs is not None:
        chosen["C"], _ = tune_probe(*split, Cs, seed=seed)
        scores["linear"] = linear_probe(*final, C=chosen["C"], seed=seed)
    return scores, chosen


def evaluation_table(
    model: nn.Module,
    train_images: Tensor,
    train_labels: Tensor,
    test_images: Tensor,
    test_labels: Tensor,
    ks: Sequence[int] = (1, 5, 20, 200),
    probe: bool = True,
    seed: int = 0,
) -> tuple[list[dict[str, Any]], dict[str, dict[str, float]]]:
    """SimCLR h and z against raw pixels and the same network untrained, read honestly.

    Every source goes through ``tuned_scores``: k and the kNN temperature are chosen by
    leave-one-out over the training digits, the probe's C on ``train.validation_split`` (50
    training digits per class, fewer for tiny sets); then the test split is scored once.
    What ``python -m simclr_teach evaluate`` prints.

    Args:
        model: a SimCLR model (forward returns (h, z)).
        train_images, test_images: uint8 digits (N, 28, 28); train_labels, test_labels: (N,).
        ks: kNN neighbour counts. probe: also the linear probe. seed: random-init copy, probe.

    Returns:
        (rows, chosen): rows {"features": name, "dim": D, "knn@k": ..., "knn": the k chosen on
        validation, "linear": ...} (see ``evaluate.format_table``); chosen: name -> the values
        validation chose.
    """
    from simclr_teach.evaluate import embed, pixel_features, random_init_like
    from simclr_teach.train import validation_split

    train_labels = torch.as_tensor(train_labels)
    per_class = max(1, min(50, int(train_labels.bincount().min()) // 5))
    val = validation_split(train_labels, per_class)
    untrained = random_init_like(model, seed)
    feature_sets = {  # name -> (train features, test features)
        "SimCLR h": (embed(model, train_images, "h"), embed(model, test_images, "h")),
        "SimCLR z": (embed(model, train_images, "z"), embed(model, test_images, "z")),
        "raw pixels": (pixel_features(train_images), pixel_features(test_images)),
        "random-init encoder": (embed(untrained, train_images), embed(untrained, test_images)),
    }
    rows, chosen = [], {}
    for name, (train_f, test_f) in feature_sets.items():
        scores, chosen[name] = tuned_scores(
            train_f,
            train_labels,
            val,
            test_f,
            test_labels,
            ks,
            Cs=(0.01, 0.1, 1.0) if probe else None,
            seed=seed,
        )
        rows.append({"features": name, "dim": train_f.shape[1], **scores})
    return rows, chosen


def paired_test(
    correct_a: Tensor, correct_b: Tensor, resamples: int = 10_000, seed: int = 0
) -> dict[str, float]:
    """Is reader A really better than reader B on the *same* test digits? Taught in 05.

    Two accuracies on one test set are not independent: most digits are easy for both readers,
    and only the digits where they disagree carry information. McNemar's exact test counts
    those: ``a_only`` digits right by A alone, ``b_only`` by B alone; under "no difference"
    each disagreement goes either way with probability 1/2 (a binomial test). A paired
    bootstrap (resampling digits, both readers together) gives a 95% interval of the gap.

    Args:
        correct_a, correct_b: bool (M,), whether each test digit was classified right.
        resamples: bootstrap resamples. seed: their generator.

    Returns:
        {"gap": accuracy A - B, "a_only", "b_only", "p_value": two-sided exact McNemar,
        "low", "high": the 2.5% and 97.5% bootstrap quantiles of the gap}.
    """
    a, b = torch.as_tensor(correct_a).bool(), torch.as_tensor(correct_b).bool()
    if a.shape != b.shape or a.dim() != 1 or len(a) == 0:
        raise ValueError(
            f"correct_a and correct_b must be bool (M,) of one length, got "
            f"{tuple(a.shape)} and {tuple(b.shape)}"
        )
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    n, low_count = a_only + b_only, min(a_only, b_only)
    # two-sided exact binomial tail: P(X <= min) + P(X >= max) for X ~ Bin(n, 1/2)
    tail = sum(math.comb(n, i) for i in range(low_count + 1)) / 2**n if n else 1.0
    p_value = min(1.0, 2 * tail)
    difference = a.float() - b.float()  # (M,) in {-1, 0, 1}
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(len(a), (resamples, len(a)), generator=generator)
    gaps = difference[picks].mean(dim=1)  # (resamples,)
    return {
        "gap": difference.mean().item(),
        "a_only": a_only,
        "b_only": b_only,
        "p_value": p_value,
        "low": gaps.quantile(0.025).item(),
        "high": gaps.quantile(0.975).item(),
    }


# ---- claims against their noise ----------------------------------------------------------------
# A sentence such as "h beats z" or "MoCo is within the noise of SimCLR" is a claim about the
# recipe, not about one run: another seed, another CPU (its kernels, bf16 or float32) or another
# thread count gives another run. So a notebook checks the claim against the noise it has
# measured (a seed spread, a paired interval), and the check fails when the claim breaks, not
# when another machine moves a number by one digit.

Z_CLAIM = 2.0  # a gap counts as real beyond 2 noise units (about 95%, two-sided, for a normal)


def _claim_text(a: float, b: float, noise: float, names: tuple[str, str], z: float) -> str:
    if not (math.isfinite(a) and math.isfinite(b) and math.isfinite(noise)) or noise < 0:
        raise ValueError(f"a claim needs finite numbers and noise >= 0, got {a}, {b}, {noise}")
    return (
        f"{names[0]} {a:.4g} vs {names[1]} {b:.4g}: gap {a - b:+.3g}, "
        f"noise {noise:.3g} (x {z:g} = {z * noise:.3g})"
    )


def assert_better(
    a: float, b: float, noise: float, names: tuple[str, str] = ("A", "B"), z: float = Z_CLAIM
) -> str:
    """Check the claim "A is higher than B": the gap a - b exceeds ``z`` noise units. Taught in 05.

    Args:
        a, b: the two numbers (accuracies, ranks, ...), in one unit.
        noise: the standard deviation of the gap a - b in that unit: for two single runs,
            sqrt(2) x the seed spread of one run; for two means of k seeds, sqrt(2 / k) x it;
            for two readers on the same test digits, half the width of ``paired_test``'s 95%
            interval / 1.96.
        names: what A and B are, for the message. z: noise units the gap must clear.

    Returns:
        One line with both numbers, the gap and the noise (print it: the claim's evidence).

    Raises:
        AssertionError naming both numbers and the noise when the claim does not hold.
    """
    text = _claim_text(a, b, noise, names, z)
    assert a - b > z * noise, f"claim '{names[0]} beats {names[1]}' fails: {text}"
    return f"{text}: {names[0]} is ahead beyond the noise"


def assert_not_worse(
    a: float, b: float, noise: float, names: tuple[str, str] = ("A", "B"), z: float = Z_CLAIM
) -> str:
    """Check the claim "A is at least as good as B": a does not fall ``z`` noise units below b.

    The one-sided claim for "A matches B" or "A is no worse": it allows A ahead by any amount.
    Args as in ``assert_better``.
    """
    text = _claim_text(a, b, noise, names, z)
    assert a - b >= -z * noise, f"claim '{names[0]} is no worse than {names[1]}' fails: {text}"
    return f"{text}: {names[0]} is not behind beyond the noise"


def assert_tied(
    a: float, b: float, noise: float, names: tuple[str, str] = ("A", "B"), z: float = Z_CLAIM
) -> str:
    """Check the claim "A and B are within the noise": |a - b| is at most ``z`` noise units.

    Args as in ``assert_better``. Such a claim says the data cannot tell A from B at this
    noise; it never says they are equal.
    """
    text = _claim_text(a, b, noise, names, z)
    assert abs(a - b) <= z * noise, f"claim '{names[0]} ties {names[1]}' fails: {text}"
    return f"{text}: within the noise"


def paired_noise(test: dict[str, float]) -> float:
    """The standard deviation of a gap, from ``paired_test``'s 95% bootstrap interval.

    A 95% interval of a normal gap is 2 x 1.96 standard deviations wide.
    """
    return (test["high"] - test["low"]) / (2 * 1.96)


def labelled_subset(labels: Tensor, per_class: int, seed: int = 0) -> Tensor:
    """Indices of ``per_class`` digits of every class, drawn at random: a few-label training set.

    Args:
        labels: (N,) integer classes. per_class: >= 1 and at most the size of the smallest class.
        seed: which digits are drawn; the same seed draws the same ones.

    Returns:
        int64 (C * per_class,) indices into ``labels``, sorted.
    """
    labels = torch.as_tensor(labels)
    smallest = int(labels.unique(return_counts=True)[1].min())
    if not 1 <= per_class <= smallest:
        raise ValueError(
            f"per_class must be in [1, {smallest}] (the smallest class), got {per_class}"
        )
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for digit in labels.unique():
        members = torch.nonzero(labels == digit).flatten()
        chosen.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    return torch.cat(chosen).sort().values


FEW_LABEL_BUDGETS = (1, 10, 50, 400)  # labelled digits per class; 400 = every training label
FEW_LABEL_METHODS = ("kNN on h", "linear probe on h", "supervised CNN", "fine-tuned SimCLR")
STRENGTHS = (0.5, 1.0, 1.5)  # BatchAugment strengths the classifiers choose from
STEPS, EVAL_EVERY = 800, 100  # classifier schedule; validation every 100 steps
BN_DIGITS = 1000  # clean training digits that recalibrate BatchNorm
FEW_LABEL_COLUMNS = (
    "per_class",
    "seed",
    "method",
    "labels",
    "strength",
    "steps",
    "choice",
    "val_accuracy",
    "test_accuracy",
    "seconds",
)


def check_few_label_arguments(
    budgets: Sequence[int],
    seeds: Sequence[int],
    strengths: Sequence[float] = STRENGTHS,
    steps: int = STEPS,
    eval_every: int = EVAL_EVERY,
) -> None:
    """Raise ValueError for an argument ``few_label_study`` would fail on only after some rows.

    It checks them first; ``python -m simclr_teach few-labels`` too, before training a model.
    """
    from simclr_teach.augment import AugmentParams
    from simclr_teach.utils import MAX_SEED

    def whole(value: object, low: int, high: float = math.inf) -> bool:
        is_int = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
        return is_int and low <= value <= high

    if not budgets or not all(whole(b, 1) for b in budgets):
        raise ValueError(
            f"budgets must be labelled digits per class, integers >= 1, got {list(budgets)}; "
            f"pass e.g. {' '.join(map(str, FEW_LABEL_BUDGETS))}"
        )
    if not seeds or not all(whole(s, 0, MAX_SEED) for s in seeds):
        raise ValueError(
            f"seeds must be integers in [0, 2**32 - 1], got {list(seeds)}; pass e.g. 0 1 2"
        )
    if not (whole(steps, 1) and whole(eval_every, 1)):
        raise ValueError(
            f"steps and eval_every must be integers >= 1, got steps={steps}, "
            f"eval_every={eval_every}; the defaults are {STEPS} and {EVAL_EVERY}"
        )
    if not strengths:
        raise ValueError(f"strengths must hold at least one value, e.g. {list(STRENGTHS)}")
    for strength in strengths:
        AugmentParams.at_strength(strength)  # a strength out of range raises here, naming it


@memoised
def few_label_study(
    model: nn.Module,
    train_images: Tensor,
    train_labels: Tensor,
    test_images: Tensor,
    test_labels: Tensor,
    budgets: Sequence[int] = FEW_LABEL_BUDGETS,
    seeds: Sequence[int] = (0, 1, 2),
    strengths: Sequence[float] = STRENGTHS,
    steps: int = STEPS,
    eval_every: int = EVAL_EVERY,
    width: int | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """How many labels SimCLR saves: four readers of a few labelled digits. Taught in 05.

    For every budget (labelled digits per class) and seed, ``labelled_subset`` draws the labels
    from the training digits outside the validation split (``train.validation_split``), and:

    - "kNN on h", "linear probe on h": frozen SimCLR features h; k, temperature and C chosen on
      the validation split (``tune_knn``, ``tune_probe``);
    - "supervised CNN": ``finetune.train_classifier`` from scratch, the same ``ConvEncoder``
      and width as ``model``'s encoder;
    - "fine-tuned SimCLR": ``train_classifier`` starting from ``model``'s encoder (paper, sec. 6).

    Both classifiers train with ``BatchAugment`` views whose strength is chosen on validation
    (with the first seed, per budget and method; other seeds reuse it) and stop at the step with
    the best validation accuracy; their BatchNorm statistics are recalibrated on ``BN_DIGITS``
    clean training digits (no labels: fair to both). A budget larger than what lies outside the
    validation split (400 per class) means "every training label": its step count is chosen as
    above, then the classifier is retrained on all training digits for that many steps, as
    ``tuned_scores`` refits its readers. The test split is scored once per row, after every
    choice is made.

    Args:
        model: a trained SimCLR model (``forward(x) -> (h, z)``, ``.encoder`` with ``out_dim``).
        train_images, train_labels: uint8 (N, 28, 28) digits and their classes.
        test_images, test_labels: the test split, scored once per row.
        budgets: labelled digits per class. seeds: draws of the labels (and of the training).
        strengths: BatchAugment strengths to choose from. steps, eval_every: as in
            ``train_classifier``. width: encoder width from scratch (default: ``model``'s,
            read from its encoder's ``out_dim`` = 4 * width).
        progress: called with each finished row.

    Returns:
        One dict per (budget, seed, method) with the keys of FEW_LABEL_COLUMNS (accuracies in
        [0, 1]; ``choice`` names what validation chose; ``steps`` the classifier's kept step).
    """
    import time

    from simclr_teach.evaluate import embed
    from simclr_teach.finetune import classifier_accuracy, train_classifier
    from simclr_teach.train import validation_split

    check_few_label_arguments(budgets, seeds, strengths, steps, eval_every)  # before any row
    train_labels, test_labels = torch.as_tensor(train_labels).long(), torch.as_tensor(test_labels)
    width = width or model.encoder.out_dim // 4
    val = validation_split(train_labels)
    pool = torch.nonzero(~val).flatten()  # labels are drawn from these rows
    val_x, val_y = train_images[val], train_labels[val]
    h_train, h_test = embed(model, train_images), embed(model, test_images)  # (N, D), (M, D)
    largest = int(train_labels[pool].bincount().min())
    pick = torch.randperm(len(train_images), generator=torch.Generator().manual_seed(0))
    bn_images = train_images[pick[:BN_DIGITS]]  # unlabelled, any class
    chosen_strength: dict[tuple[int, str], float] = {}
    rows: list[dict[str, Any]] = []

    def add(row: dict[str, Any]) -> None:
        rows.append(row)
        if progress is not None:
            progress(row)

    for per_class in budgets:
        everything = per_class >= largest  # "every training label"
        for seed in seeds:
            picked = (
                pool if everything else pool[labelled_subset(train_labels[pool], per_class, seed)]
            )
            x, y = train_images[picked], train_labels[picked]
            final = torch.arange(len(train_labels)) if everything else picked  # refit rows
            base = {"per_class": per_class, "seed": seed, "labels": len(final)}
            start = time.perf_counter()
            ks = [k for k in (1, 5, 20, 50) if k <= len(picked)]
            knn_choice = tune_knn(h_train[picked], y, h_train[val], val_y, ks)  # {k: (t, acc)}
            k = max(knn_choice, key=lambda k: knn_choice[k][1])  # first of ties: smallest k
            temperature, val_acc = knn_choice[k]
            test = knn_accuracy(
                h_train[final], train_labels[final], h_test, test_labels, k, temperature
            )
            add(
                {
                    **base,
                    "method": "kNN on h",
                    "strength": "",
                    "steps": "",
                    "choice": f"k={k} temperature={temperature:g}",
                    "val_accuracy": val_acc,
                    "test_accuracy": test,
                    "seconds": time.perf_counter() - start,
                }
            )
            start = time.perf_counter()
            C, scores = tune_probe(h_train[picked], y, h_train[val], val_y, seed=seed)
            test = linear_probe(
                h_train[final], train_labels[final], h_test, test_labels, C, seed=seed
            )
            add(
                {
                    **base,
                    "method": "linear probe on h",
                    "strength": "",
                    "steps": "",
                    "choice": f"C={C:g}",
                    "val_accuracy": scores[C],
                    "test_accuracy": test,
                    "seconds": time.perf_counter() - start,
                }
            )
            for method, encoder in (("supervised CNN", None), ("fine-tuned SimCLR", model.encoder)):
                start = time.perf_counter()
                fit_args = dict(
                    encoder=encoder,
                    width=width,
                    steps=steps,
                    eval_every=eval_every,
                    seed=seed,
                    bn_images=bn_images,
                )
                candidates = (
                    [chosen_strength[per_class, method]]
                    if (per_class, method) in chosen_strength
                    else list(strengths)
                )
                fits = {
                    s: train_classifier(x, y, val_x, val_y, strength=s, **fit_args)
                    for s in candidates
                }
                strength = max(fits, key=lambda s: fits[s].val_accuracy)  # first of ties
                chosen_strength[per_class, method] = strength
                fit = fits[strength]
                if everything:  # refit on every training label
                    fit_final = train_classifier(
                        train_images,
                        train_labels,
                        val_x,
                        val_y,
                        strength=strength,
                        stop_at=fit.best_step,
                        **fit_args,
                    )
                    classifier = fit_final.classifier
                else:
                    classifier = fit.classifier
                add(
                    {
                        **base,
                        "method": method,
                        "strength": strength,
                        "steps": fit.best_step,
                        "choice": f"strength={strength:g} steps={fit.best_step}",
                        "val_accuracy": fit.val_accuracy,
                        "test_accuracy": classifier_accuracy(classifier, test_images, test_labels),
                        "seconds": time.perf_counter() - start,
                    }
                )
    return rows
