"""The honest evaluation protocol and the few-label baselines. Taught in 05_evaluation_tsne_knn.

Hyperparameters of a reader (the kNN's k and temperature, the probe's C) are chosen on a
validation split, then the reader is refit on all training digits and the test split is scored
once (``tuned_scores``). For "how many labels does SimCLR save?", ``labelled_subset`` draws a
few labels per digit and ``few_label_study`` compares frozen readers, the supervised baseline
and fine-tuning (``finetune``) on them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from simclr_teach import finetune
from simclr_teach.evaluate import (
    embed,
    knn_accuracy,
    linear_probe,
    pixel_features,
    random_init_like,
)
from simclr_teach.memo import memoised
from simclr_teach.train import validation_split
from simclr_teach.utils import MAX_SEED


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
BN_DIGITS = 1000  # clean training digits that recalibrate BatchNorm

# The classifiers' recipe search (``tune_classifier``): from CLASSIFIER_START, one coordinate at a
# time, each value trained and scored on validation; a value replaces the current one only when
# it scores higher. Fine-tuning also searches how gently the pretrained encoder is trained.
# A coordinate of EXTEND_BEYOND whose best value is an end of the values tried is tried again
# beyond that end (times or divided by its factor, at most EXTENSIONS times per end), so the
# learning rate and weight decay chosen lie inside the range tried. Then the schedule length:
# every length of STEP_GRID, doubled while the longest wins (up to MAX_STEPS), so that the
# chosen length lies inside the range tried; ties go to the longer.
CLASSIFIER_START = {"strength": 1.0, "lr": 2e-3, "weight_decay": 1e-4, "steps": 500}
CLASSIFIER_SEARCH: tuple[tuple[str, tuple[float, ...]], ...] = (
    ("strength", (0.5, 1.0, 1.5)),  # BatchAugment strength of the labelled views
    ("lr", (5e-4, 2e-3, 8e-3)),  # AdamW's peak learning rate
    ("weight_decay", (1e-4, 5e-2)),  # AdamW's (decoupled) weight decay
)
FINETUNE_STYLES: tuple[dict[str, Any], ...] = (  # (encoder's share of lr, LP-FT)
    {"encoder_lr_scale": 1.0, "probe_first": False},  # every layer at lr (paper, sec. 6)
    {"encoder_lr_scale": 0.1, "probe_first": False},  # the pretrained encoder at lr / 10
    {"encoder_lr_scale": 1.0, "probe_first": True},  # LP-FT: the linear layer fitted first
    {"encoder_lr_scale": 0.1, "probe_first": True},  # both
)
EXTEND_BEYOND, EXTENSIONS = {"lr": 4.0, "weight_decay": 4.0}, 6  # strength: a fixed range
STEP_GRID, MAX_STEPS = (250, 500, 1000, 2000), 8000
RECIPE_KEYS = ("strength", "lr", "weight_decay", "steps", "encoder_lr_scale", "probe_first")
FEW_LABEL_COLUMNS = (
    "per_class",
    "seed",
    "pretrain_seed",
    "method",
    "labels",
    *RECIPE_KEYS,
    "candidates",
    "range_ends",
    "choice",
    "val_accuracy",
    "test_accuracy",
    "seconds",
)


def check_few_label_arguments(budgets: Sequence[int], seeds: Sequence[int]) -> None:
    """Raise ValueError for an argument ``few_label_study`` would fail on only after some rows.

    It checks them first; ``python -m simclr_teach few-labels`` too, before training a model.
    """

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


def recipe_from_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """The recipe of a classifier row of ``few_label_study`` (e.g. read back from its CSV).

    Blank fields (NaN or "") are left out; types are restored ("True" -> True, 1000.0 -> 1000),
    so that ``finetune.train_classifier(**recipe)`` trains what the row trained.
    """
    types: dict[str, Callable[[Any], Any]] = {
        "strength": float,
        "lr": float,
        "weight_decay": float,
        "steps": lambda v: int(float(v)),
        "encoder_lr_scale": float,
        "probe_first": lambda v: v if isinstance(v, bool) else str(v).strip() == "True",
    }
    blank = lambda v: v is None or v == "" or (isinstance(v, float) and math.isnan(v))  # noqa: E731
    return {k: cast(row[k]) for k, cast in types.items() if k in row and not blank(row[k])}


def recipe_text(recipe: dict[str, Any]) -> str:
    """A recipe of ``tune_classifier`` in one line, e.g. "strength=1 lr=0.002 wd=0.0001 ..."."""
    short = {"weight_decay": "wd", "encoder_lr_scale": "encoder_lr"}
    parts = [f"{short.get(k, k)}={recipe[k]:g}" for k in RECIPE_KEYS[:5] if k in recipe]
    return " ".join(parts + (["LP-FT"] if recipe.get("probe_first") else []))


class TunedClassifier(NamedTuple):
    """What ``tune_classifier`` chose: the recipe, its fit, and how far the search went."""

    recipe: dict[str, Any]  # keyword arguments of ``finetune.train_classifier``
    fit: Any  # its ``finetune.Fit`` on validation
    candidates: int  # recipes trained
    range_ends: list[str]  # settings chosen at an end of the values tried for them


def tune_classifier(
    images: Tensor,
    labels: Tensor,
    val_images: Tensor,
    val_labels: Tensor,
    encoder: nn.Module | None = None,
    *,
    seed: int = 0,
    width: int = 32,
    bn_images: Tensor | None = None,
    search: Sequence[tuple[str, Sequence[Any]]] = CLASSIFIER_SEARCH,
    step_grid: Sequence[int] = STEP_GRID,
    max_steps: int = MAX_STEPS,
) -> TunedClassifier:
    """A classifier's recipe chosen on validation, as SimCLR's was chosen (04's frontier).

    Coordinate search from ``CLASSIFIER_START`` (its schedule length clamped into the range of
    ``step_grid``): for each (name, values) of ``search`` in turn,
    and for a pretrained ``encoder`` then ``FINETUNE_STYLES``, every value is trained
    (``finetune.train_classifier``, scored once at the end of its schedule) with the others at
    their current best; the current value is kept unless another scores strictly higher. A
    coordinate of ``EXTEND_BEYOND`` whose best is an end of the values tried is tried beyond
    that end, by its factor, up to ``EXTENSIONS`` times per end. Last,
    the schedule length: each of ``step_grid``, then the longest doubled while it wins (at
    most ``max_steps``), ties to the longer: the chosen length is inside the range tried unless
    it reached ``max_steps``. Identical recipes are trained once.

    Args:
        images, labels: uint8 (N, 28, 28) labelled digits and their classes.
        val_images, val_labels: the validation split that chooses (never the test split).
        encoder: None (a CNN from scratch) or a pretrained encoder to fine-tune.
        seed, width, bn_images: as in ``train_classifier``.
        search: the coordinates and their candidate values, searched in order.
        step_grid: schedule lengths, increasing. max_steps: the longest schedule tried.

    Returns:
        ``TunedClassifier``: the chosen keyword arguments of ``train_classifier`` (keys of
        ``RECIPE_KEYS``), its ``Fit``, how many recipes were trained, and which numeric
        settings were chosen at an end of the values tried for them.
    """
    grid = sorted(step_grid)
    recipe: dict[str, Any] = dict(CLASSIFIER_START)  # its length clamped into the grid's range
    recipe["steps"] = min(max(recipe["steps"], grid[0]), grid[-1])
    if encoder is not None:
        recipe.update(FINETUNE_STYLES[0])
    fits: dict[tuple, Any] = {}

    def accuracy(candidate: dict[str, Any]) -> float:
        key = tuple(sorted(candidate.items()))
        if key not in fits:
            fits[key] = finetune.train_classifier(
                images, labels, val_images, val_labels, encoder, width=width, seed=seed,
                eval_every=candidate["steps"], bn_images=bn_images, **candidate,
            )  # fmt: skip
        return fits[key].val_accuracy

    coordinates = [[{name: v} for v in values] for name, values in search]
    if encoder is not None:
        coordinates.append(list(FINETUNE_STYLES))
    tried: dict[str, list[float]] = {}  # numeric coordinate -> values tried, increasing
    for changes in coordinates:
        best = recipe
        for change in changes:
            candidate = {**recipe, **change}
            if accuracy(candidate) > accuracy(best):  # strictly higher: ties keep the current
                best = candidate
        name = next(iter(changes[0])) if len(changes[0]) == 1 else None  # None: styles
        if name is not None:
            values = sorted({change[name] for change in changes} | {recipe[name]})
            for _ in range(EXTENSIONS if name in EXTEND_BEYOND and len(values) > 1 else 0):
                if values[0] < best[name] < values[-1]:
                    break  # inside the range tried
                up = best[name] == values[-1]
                beyond = best[name] * (EXTEND_BEYOND[name] if up else 1 / EXTEND_BEYOND[name])
                values = sorted([*values, beyond])
                candidate = {**recipe, name: beyond}
                if not accuracy(candidate) > accuracy(best):
                    break
                best = candidate
            tried[name] = values
        recipe = best
    while True:
        by_length = {n: accuracy({**recipe, "steps": n}) for n in grid}
        chosen = max(grid, key=lambda n: (by_length[n], n))  # ties to the longer schedule
        if chosen < grid[-1] or 2 * grid[-1] > max_steps:
            break
        grid.append(2 * grid[-1])  # the longest won: the range did not hold the choice yet
    recipe = {**recipe, "steps": chosen}
    tried["steps"] = grid
    ends = [k for k, v in tried.items() if len(v) > 1 and recipe[k] in (v[0], v[-1])]
    return TunedClassifier(recipe, fits[tuple(sorted(recipe.items()))], len(fits), ends)


@memoised
def few_label_study(
    model: nn.Module | Sequence[nn.Module],
    train_images: Tensor,
    train_labels: Tensor,
    test_images: Tensor,
    test_labels: Tensor,
    budgets: Sequence[int] = FEW_LABEL_BUDGETS,
    seeds: Sequence[int] = (0, 1, 2),
    pretrain_seeds: Sequence[int] | None = None,
    recipes: dict[str, dict[str, Any]] | None = None,
    search: Sequence[tuple[str, Sequence[Any]]] = CLASSIFIER_SEARCH,
    step_grid: Sequence[int] = STEP_GRID,
    max_steps: int = MAX_STEPS,
    width: int | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """How many labels SimCLR saves: four readers of a few labelled digits. Taught in 05.

    For every budget (labelled digits per class) and seed, ``labelled_subset`` draws the labels
    from the training digits outside the validation split (``train.validation_split``), and:

    - "kNN on h", "linear probe on h": frozen SimCLR features h; k, temperature and C chosen on
      the validation split (``tune_knn``, ``tune_probe``);
    - "supervised CNN": ``finetune.train_classifier`` from scratch, the same ``ConvEncoder``
      and width as the SimCLR encoder;
    - "fine-tuned SimCLR": ``train_classifier`` starting from the SimCLR encoder (paper, sec. 6).

    The two classifiers get the same recipe search (``tune_classifier``: views' strength,
    learning rate, weight decay, schedule length; fine-tuning also a lower learning rate for the
    encoder and LP-FT), run with the first seed's labels, per budget and method; the other
    seeds reuse its recipe. Their BatchNorm statistics are recalibrated on ``BN_DIGITS`` clean
    training digits (no labels: fair to both). A budget larger than what lies outside the
    validation split (400 per class) means "every training label": the recipe is chosen as
    above, then the classifier is retrained with it on all training digits, as
    ``tuned_scores`` refits its readers. The test split is scored once per row, after every
    choice is made.

    Args:
        model: a trained SimCLR model (``forward(x) -> (h, z)``, ``.encoder`` with
            ``out_dim``), or one per seed (the same length as ``seeds``): the SimCLR rows of a
            seed then read its own pretraining run, so their spread includes pretraining's.
        train_images, train_labels: uint8 (N, 28, 28) digits and their classes.
        test_images, test_labels: the test split, scored once per row.
        budgets: labelled digits per class. seeds: draws of the labels (and of the training).
        pretrain_seeds: the seed each model was pretrained with, for the rows (default: blank).
        recipes: {method: recipe} to use instead of searching (e.g. a recipe a study chose).
        search, step_grid, max_steps: as in ``tune_classifier``.
        width: encoder width from scratch (default: the SimCLR encoder's, ``out_dim`` / 4).
        on_row: called with each finished row (e.g. to save the table so far).

    Returns:
        One dict per (budget, seed, method) with the keys of FEW_LABEL_COLUMNS (accuracies in
        [0, 1]; ``choice`` names what validation chose; recipe keys blank for kNN and probe).
    """

    check_few_label_arguments(budgets, seeds)  # before any row
    models = list(model) if isinstance(model, Sequence) else [model] * len(seeds)
    if len(models) != len(seeds):
        raise ValueError(f"pass one model, or one per seed: got {len(models)} for {len(seeds)}")
    if pretrain_seeds is not None and len(pretrain_seeds) != len(seeds):
        raise ValueError("pretrain_seeds must name the seed of each model, one per seed")
    train_labels, test_labels = torch.as_tensor(train_labels).long(), torch.as_tensor(test_labels)
    val = validation_split(train_labels)
    pool = torch.nonzero(~val).flatten()  # labels are drawn from these rows
    largest = int(train_labels[pool].bincount().min())
    pick = torch.randperm(len(train_images), generator=torch.Generator().manual_seed(0))
    common = {  # what every classifier of the study shares
        "val_images": train_images[val],
        "val_labels": train_labels[val],
        "width": width or models[0].encoder.out_dim // 4,
        "bn_images": train_images[pick[:BN_DIGITS]],  # unlabelled, any class
    }
    search_args = {"search": search, "step_grid": step_grid, "max_steps": max_steps}
    rows: list[dict[str, Any]] = []
    for per_class in budgets:
        everything = per_class >= largest  # "every training label"
        chosen = dict(recipes or {})  # method -> recipe, searched with the first seed
        for i, seed in enumerate(seeds):
            simclr = models[i]
            h_train, h_test = embed(simclr, train_images), embed(simclr, test_images)
            picked = (
                pool if everything else pool[labelled_subset(train_labels[pool], per_class, seed)]
            )
            final = torch.arange(len(train_labels)) if everything else picked  # refit rows
            base = {
                "per_class": per_class,
                "seed": seed,
                "pretrain_seed": "" if pretrain_seeds is None else pretrain_seeds[i],
                "labels": len(final),
                "candidates": "",
                "range_ends": "",
                **dict.fromkeys(RECIPE_KEYS, ""),
            }
            h = (h_train[picked], train_labels[picked], h_train[val], train_labels[val])
            h_final = (h_train[final], train_labels[final], h_test, test_labels)
            found = [_knn_row(h, h_final), _probe_row(h, h_final, seed)]
            for method, encoder in (
                ("supervised CNN", None),
                ("fine-tuned SimCLR", simclr.encoder),
            ):
                labelled = (train_images[picked], train_labels[picked])
                refit = (train_images, train_labels) if everything else None
                row = _classifier_row(
                    method, encoder, labelled, refit, (test_images, test_labels),
                    chosen.get(method), seed, common, search_args,
                )  # fmt: skip
                chosen.setdefault(method, recipe_from_row(row))
                found.append(row)
            for row in found:
                rows.append({**base, **row})
                if on_row is not None:
                    on_row(rows[-1])
    return rows


def _knn_row(
    h: tuple[Tensor, Tensor, Tensor, Tensor], h_final: tuple[Tensor, Tensor, Tensor, Tensor]
) -> dict[str, Any]:
    """The "kNN on h" row of a draw: k and temperature on validation, then the test split.

    h: (labelled features, labels, validation features, labels); h_final: (refit features,
    labels, test features, labels).
    """
    start = time.perf_counter()
    ks = [k for k in (1, 5, 20, 50) if k <= len(h[0])]
    choice = tune_knn(*h, ks)  # {k: (temperature, validation accuracy)}
    k = max(choice, key=lambda k: choice[k][1])  # first of ties: smallest k
    temperature, val_accuracy = choice[k]
    return {
        "method": "kNN on h",
        "choice": f"k={k} temperature={temperature:g}",
        "val_accuracy": val_accuracy,
        "test_accuracy": knn_accuracy(*h_final, k, temperature),
        "seconds": time.perf_counter() - start,
    }


def _probe_row(
    h: tuple[Tensor, Tensor, Tensor, Tensor],
    h_final: tuple[Tensor, Tensor, Tensor, Tensor],
    seed: int,
) -> dict[str, Any]:
    """The "linear probe on h" row of a draw: C on validation, then the test split."""
    start = time.perf_counter()
    C, scores = tune_probe(*h, seed=seed)
    return {
        "method": "linear probe on h",
        "choice": f"C={C:g}",
        "val_accuracy": scores[C],
        "test_accuracy": linear_probe(*h_final, C, seed=seed),
        "seconds": time.perf_counter() - start,
    }


def _classifier_row(
    method: str,
    encoder: nn.Module | None,
    labelled: tuple[Tensor, Tensor],
    refit: tuple[Tensor, Tensor] | None,
    test: tuple[Tensor, Tensor],
    recipe: dict[str, Any] | None,
    seed: int,
    common: dict[str, Any],
    search_args: dict[str, Any],
) -> dict[str, Any]:
    """A classifier's row of a draw: its recipe searched (``recipe`` None) or given, trained on
    ``labelled`` (images, labels), retrained on ``refit`` when given ("every label"), and scored
    once on ``test``."""
    start = time.perf_counter()
    candidates, ends = 1, ""
    if recipe is None:
        recipe, fit, candidates, range_ends = tune_classifier(
            *labelled, encoder=encoder, seed=seed, **common, **search_args
        )
        ends = " ".join(range_ends) or "none"
    else:
        fit = finetune.train_classifier(
            *labelled, encoder=encoder, seed=seed, eval_every=recipe["steps"], **common, **recipe
        )
    classifier = fit.classifier
    if refit is not None:  # every training label: retrain with the chosen recipe on all of them
        classifier = finetune.train_classifier(
            *refit, encoder=encoder, seed=seed, eval_every=recipe["steps"], **common, **recipe
        ).classifier
    return {
        **recipe,
        "method": method,
        "candidates": candidates,
        "range_ends": ends,
        "choice": recipe_text(recipe),
        "val_accuracy": fit.val_accuracy,
        "test_accuracy": finetune.classifier_accuracy(classifier, *test),
        "seconds": time.perf_counter() - start,
    }
