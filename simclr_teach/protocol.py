"""The honest evaluation protocol and the few-label baselines. Taught in 05_evaluation_tsne_knn.

Hyperparameters of a reader (the kNN's k and temperature, the probe's C) are chosen on a
validation split, then the reader is refit on all training digits and the test split is scored
once (``tuned_scores``). For "how many labels does SimCLR save?", ``labelled_subset`` draws a
few labels per digit and ``train_supervised_cnn`` is the baseline trained on those alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from simclr_teach.evaluate import knn_accuracy, linear_probe
from simclr_teach.model import preprocess


def tune_knn(train_features: Tensor, train_labels: Tensor, val_features: Tensor,
             val_labels: Tensor, ks: Sequence[int] = (1, 5, 20, 200),
             temperatures: Sequence[float] = (0.01, 0.03, 0.1, 0.3),
             ) -> dict[int, tuple[float, float]]:
    """For each k, the kNN temperature with the best validation accuracy. Taught in 05.

    The honest protocol: hyperparameters are picked on a validation split carved from the
    training digits (``train.validation_split``); the test split is used once, afterwards.

    Args:
        train_features: (N, D) bank; train_labels: (N,). val_features: (V, D); val_labels: (V,).
        ks: neighbour counts to tune for. temperatures: candidates, each > 0; ties go to the first.

    Returns:
        {k: (best temperature, its validation accuracy)}.
    """
    if not ks or not temperatures:
        raise ValueError("ks and temperatures must each hold at least one value")
    best = {}
    for k in ks:
        scores = [knn_accuracy(train_features, train_labels, val_features, val_labels, k, t)
                  for t in temperatures]
        i = int(np.argmax(scores))  # first maximum
        best[k] = (float(temperatures[i]), scores[i])
    return best


def tune_probe(train_features: Tensor, train_labels: Tensor, val_features: Tensor,
               val_labels: Tensor, Cs: Sequence[float] = (0.01, 0.1, 1.0),
               seed: int = 0) -> tuple[float, dict[float, float]]:
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
    scores = {float(C): linear_probe(train_features, train_labels, val_features, val_labels, C,
                                     seed=seed) for C in Cs}
    return max(scores, key=scores.get), scores  # max returns the first of equal scores


def tuned_scores(train_features: Tensor, train_labels: Tensor, val_mask: Tensor,
                 test_features: Tensor, test_labels: Tensor, ks: Sequence[int] = (1, 5, 20, 200),
                 temperatures: Sequence[float] = (0.01, 0.03, 0.1, 0.3),
                 Cs: Sequence[float] | None = (0.01, 0.1, 1.0),
                 seed: int = 0) -> tuple[dict[str, float], dict[str, float]]:
    """kNN and linear-probe test accuracy, hyperparameters chosen on validation. Taught in 05.

    Tuning fits on the training rows outside ``val_mask`` and scores the rows inside it
    (``tune_knn``, ``tune_probe``); the final readers then use every training row with the
    chosen values, and the test split is scored once.

    Args:
        train_features: (N, D); train_labels: (N,). val_mask: bool (N,), True = validation row.
        test_features: (M, D); test_labels: (M,).
        ks, temperatures: as in ``tune_knn``. Cs: as in ``tune_probe``; None skips the probe.
        seed: passed to the probe.

    Returns:
        (scores {"knn@k": ..., "linear": ...} in [0, 1], chosen {"temperature@k": ..., "C": ...}).
    """
    val_mask = torch.as_tensor(val_mask, dtype=torch.bool)
    if val_mask.shape != (len(train_features),) or val_mask.all() or not val_mask.any():
        raise ValueError("val_mask must be a bool (N,) mask with both validation rows (True) and "
                         "training rows (False); use train.validation_split(train_labels)")
    split = (train_features[~val_mask], train_labels[~val_mask],
             train_features[val_mask], train_labels[val_mask])
    final = (train_features, train_labels, test_features, test_labels)
    scores, chosen = {}, {}
    for k, (temperature, _) in tune_knn(*split, ks, temperatures).items():
        chosen[f"temperature@{k}"] = temperature
        scores[f"knn@{k}"] = knn_accuracy(*final, k=k, temperature=temperature)
    if Cs is not None:
        chosen["C"], _ = tune_probe(*split, Cs, seed=seed)
        scores["linear"] = linear_probe(*final, C=chosen["C"], seed=seed)
    return scores, chosen


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
        raise ValueError(f"per_class must be in [1, {smallest}] (the smallest class), "
                         f"got {per_class}")
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for digit in labels.unique():
        members = torch.nonzero(labels == digit).flatten()
        chosen.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    return torch.cat(chosen).sort().values


def train_supervised_cnn(images: Tensor, labels: Tensor, steps: int = 300, batch_size: int = 64,
                         width: int = 16, lr: float = 3e-3, strength: float = 0.0,
                         seed: int = 0) -> nn.Module:
    """Baseline: the course's encoder (``ConvEncoder``) + a linear layer, trained on labels alone.

    Taught in 05_evaluation_tsne_knn, where it is trained on 1 to 400 labelled digits per class.
    A fixed number of steps (not epochs) gives every training-set size the same optimisation
    budget; with fewer digits than ``batch_size``, every step sees all of them. AdamW,
    cross-entropy, the learning rate decays along a cosine to 0.

    Args:
        images: uint8 (N, 28, 28) labelled digits. labels: (N,) integer classes 0..C-1.
        steps: optimizer steps. batch_size: digits per step (capped at N). width: encoder size.
        lr: peak learning rate. strength: ``BatchAugment`` strength of the views it trains on
            (0 = the digits as they are). seed: initialisation, batches and views.

    Returns:
        The classifier (N, 1, 28, 28) in [0, 1] -> (N, C) logits, in eval mode on the CPU.
    """
    from simclr_teach.augment import BatchAugment
    from simclr_teach.model import ConvEncoder

    images, labels = torch.as_tensor(images), torch.as_tensor(labels).long()
    if len(images) != len(labels) or len(images) == 0 or steps < 1:
        raise ValueError(f"need as many labels as images (>= 1) and steps >= 1, got "
                         f"{len(images)} images, {len(labels)} labels, steps={steps}")
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():  # seeded initialisation, global RNG left as it was
        torch.manual_seed(seed)
        encoder = ConvEncoder(width)
        classifier = nn.Sequential(encoder, nn.Linear(encoder.out_dim, int(labels.max()) + 1))
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    augment = BatchAugment(strength) if strength > 0 else None
    x_all = preprocess(images)  # (N, 1, 28, 28) in [0, 1]
    n = min(batch_size, len(images))
    classifier.train()
    for _ in range(steps):
        batch = torch.randperm(len(images), generator=generator)[:n]
        x = x_all[batch] if augment is None else augment(x_all[batch], generator)
        loss = F.cross_entropy(classifier(x), labels[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return classifier.eval()


def predict_labels(classifier: nn.Module, images: Tensor, batch_size: int = 1024) -> Tensor:
    """Predicted classes (N,) of a classifier (logits out) on uint8 digits (N, 28, 28)."""
    images = torch.as_tensor(images)
    predictions = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            predictions.append(classifier(preprocess(images[start : start + batch_size])).argmax(1))
    return torch.cat(predictions)
