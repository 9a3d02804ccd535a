"""Classifiers trained on labels: the supervised baseline, and SimCLR fine-tuned. Taught in 05.

SimCLR's few-label result (Chen et al., 2020, sec. 6 and appendix B.5) fine-tunes the whole
pretrained encoder f with a new linear layer on the labelled digits. The fair baseline is the
same network trained from scratch on the same labels, with the same views and the same way of
choosing how long to train. ``train_classifier`` does both: it trains on the labelled digits with
``BatchAugment`` views, scores a validation split every ``eval_every`` steps and keeps the
weights of the best step (early stopping: the budget is chosen on validation, never on test).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from simclr_teach.augment import BatchAugment
from simclr_teach.model import ConvEncoder, preprocess
from simclr_teach.schedule import lr_at  # the same warm-up + cosine as SimCLR training
from simclr_teach.utils import autocast_dtype, default_amp


@dataclass
class Fit:
    """What ``train_classifier`` returns: the classifier and how its budget was chosen."""

    classifier: nn.Module  # (B, 1, 28, 28) in [0, 1] -> (B, C) logits, eval mode
    best_step: int  # optimizer steps of the kept weights
    val_accuracy: float  # their validation accuracy, in [0, 1]
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, validation accuracy)


def recalibrate_batchnorm(model: nn.Module, images: Tensor, batch_size: int = 500) -> nn.Module:
    """Re-estimate every BatchNorm's running mean and variance on clean digits (precise BN).

    Trained on augmented views (noise on the background, erased patches), BatchNorm's running
    statistics describe views, not the clean digits the classifier is scored on; in eval mode
    that shift costs a classifier several points. One pass over clean digits, averaging the
    batch statistics exactly (momentum None), fixes it. Labels are not used.

    Args:
        model: any module; its BatchNorm layers are updated in place, the rest is unchanged.
        images: uint8 (N, 28, 28) digits, e.g. every training digit, labelled or not.
        batch_size: digits per forward pass (each must hold 2 or more for BatchNorm).

    Returns:
        ``model``, in eval mode.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the batches below
    device = next(model.parameters()).device
    model.train()
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            model(preprocess(torch.as_tensor(images[start : start + batch_size]).to(device)))
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    return model.eval()


def predict_labels(classifier: nn.Module, images: Tensor, batch_size: int = 1024) -> Tensor:
    """Predicted classes (N,) of a classifier (logits out) on uint8 digits (N, 28, 28)."""
    images = torch.as_tensor(images)
    device = next(classifier.parameters()).device
    was_training = classifier.training
    classifier.eval()
    predictions = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = preprocess(images[start : start + batch_size].to(device))  # (B, 1, 28, 28)
            predictions.append(classifier(x).argmax(1).cpu())
    classifier.train(was_training)
    return torch.cat(predictions)


def classifier_accuracy(classifier: nn.Module, images: Tensor, labels: Tensor) -> float:
    """Fraction of ``images`` (uint8 (N, 28, 28)) whose predicted class equals ``labels``."""
    right = predict_labels(classifier, images) == torch.as_tensor(labels).long()
    return right.float().mean().item()


def fit_linear_head(
    encoder: nn.Module, head: nn.Linear, x: Tensor, y: Tensor, C: float = 1.0
) -> None:
    """The LP of LP-FT: fit ``head`` on the frozen encoder's features, in place.

    Full-batch L-BFGS on the mean cross-entropy plus ``|W|^2 / (2 C N)``: scikit-learn's
    logistic regression with inverse strength C (``evaluate.linear_probe``), on the features of
    the clean digits with the encoder in eval mode, as a linear probe sees them. The encoder is
    not changed.

    Args:
        encoder: f, (N, 1, 28, 28) -> (N, D); left in the mode it was in.
        head: nn.Linear(D, classes), overwritten. x: float (N, 1, 28, 28) in [0, 1]; y: (N,).
        C: inverse L2 strength, > 0.
    """
    was_training = encoder.training
    encoder.eval()
    with torch.no_grad():
        h = torch.cat([encoder(x[i : i + 1024]).float() for i in range(0, len(x), 1024)])
    encoder.train(was_training)
    optimizer = torch.optim.LBFGS(head.parameters(), max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        penalty = head.weight.square().sum() / (2 * C * len(y))
        loss = F.cross_entropy(head(h), y) + penalty
        loss.backward()
        return loss

    optimizer.step(closure)


def train_classifier(
    images: Tensor,
    labels: Tensor,
    val_images: Tensor,
    val_labels: Tensor,
    encoder: nn.Module | None = None,
    *,
    width: int = 32,
    steps: int = 1000,
    eval_every: int = 100,
    batch_size: int = 64,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    strength: float = 1.0,
    encoder_lr_scale: float = 1.0,
    probe_first: bool = False,
    seed: int = 0,
    stop_at: int | None = None,
    bn_images: Tensor | None = None,
) -> Fit:
    """Encoder + linear layer trained with cross-entropy on labelled views. Taught in 05.

    ``encoder=None`` trains the baseline from scratch (a fresh ``ConvEncoder(width)``, seeded by
    ``seed``); a SimCLR encoder f is copied and fine-tuned whole (paper, sec. 6), the caller's
    model is left untouched. Every step: ``batch_size`` labelled digits (all of them when there
    are fewer), one ``BatchAugment(strength)`` view each, AdamW with a 5% linear warm-up and a
    cosine decay to 0 at ``steps``. Every ``eval_every`` steps and at the end, BatchNorm is
    recalibrated on clean digits (``recalibrate_batchnorm``) and the validation accuracy is
    measured; the weights of the best step are kept (the latest of ties: more training).

    Two standard ways to fine-tune a pretrained encoder gently: a smaller learning rate for it
    than for the new layer (``encoder_lr_scale``), and LP-FT (Kumar et al., 2022,
    arXiv:2202.10054): fit the new linear layer on the frozen encoder's features first
    (``probe_first``), so that the first steps do not push the features with a random layer's
    gradients.

    Args:
        images: uint8 (N, 28, 28) labelled training digits; labels: (N,) classes 0..C-1.
        val_images, val_labels: the validation split that chooses the step (never the test split).
        encoder: None (from scratch) or a pretrained encoder with an ``out_dim`` attribute.
        width: ConvEncoder width when training from scratch.
        steps: length of the schedule. eval_every: validation interval in steps.
        batch_size: digits per step (capped at N). lr: peak learning rate. weight_decay: AdamW's.
        strength: ``BatchAugment`` strength of the views (0 = the digits as they are).
        encoder_lr_scale: the encoder's learning rate is ``lr * encoder_lr_scale`` (the new
            linear layer's is ``lr``); in (0, 1].
        probe_first: before the first step, fit the linear layer alone on the encoder's
            features of the clean labelled digits (``fit_linear_head``): LP-FT.
        seed: initialisation (from scratch), batches and views.
        stop_at: train only this many steps of the ``steps``-long schedule (to refit with a
            budget chosen earlier, on more labels); validation is then scored only at the end.
        bn_images: clean digits for the BatchNorm statistics (default ``images``); the
            unlabelled training digits are a fair choice for every method.

    Returns:
        A ``Fit``: the classifier in eval mode on the encoder's device (CPU from scratch).
    """
    images, labels = torch.as_tensor(images), torch.as_tensor(labels).long()
    if len(images) != len(labels) or len(images) == 0:
        raise ValueError(
            f"need as many labels as images (>= 1), got {len(images)} images and "
            f"{len(labels)} labels"
        )
    if steps < 1 or eval_every < 1 or not (stop_at is None or 1 <= stop_at <= steps):
        raise ValueError(
            f"need steps >= 1, eval_every >= 1 and 1 <= stop_at <= steps, got "
            f"steps={steps}, eval_every={eval_every}, stop_at={stop_at}"
        )
    if not 0 < encoder_lr_scale <= 1:
        raise ValueError(
            f"encoder_lr_scale must be in (0, 1] (the encoder's share of lr), got "
            f"{encoder_lr_scale}; 1 trains every layer at lr"
        )

    num_classes = int(max(labels.max(), torch.as_tensor(val_labels).max())) + 1
    with torch.random.fork_rng():  # seeded initialisation, the global RNG left as it was
        torch.manual_seed(seed)
        f = ConvEncoder(width) if encoder is None else copy.deepcopy(encoder)
        head = nn.Linear(f.out_dim, num_classes)
        classifier = nn.Sequential(f, head)
    device = next(f.parameters()).device
    classifier.to(device)
    x_all, y_all = preprocess(images).to(device), labels.to(device)  # (N, 1, 28, 28) in [0, 1]
    if probe_first:
        fit_linear_head(f, head, x_all, y_all)
    groups = [  # "scale": each group's share of the scheduled learning rate
        {"params": list(f.parameters()), "scale": encoder_lr_scale},
        {"params": list(head.parameters()), "scale": 1.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    augment = BatchAugment(strength)
    n = min(batch_size, len(images))
    amp = autocast_dtype(device, default_amp())  # float32 under $SIMCLR_TEACH_PRECISION=float32
    last = steps if stop_at is None else stop_at
    best_step, best_accuracy, curve, state = 0, -1.0, [], None
    classifier.train()
    for step in range(1, last + 1):
        for group in optimizer.param_groups:
            group["lr"] = group["scale"] * lr_at(step - 1, steps, max(1, steps // 20), lr)
        batch = torch.randperm(len(images), generator=generator)[:n].to(device)
        x = augment(x_all[batch], generator)  # (n, 1, 28, 28) one view each
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss = F.cross_entropy(classifier(x).float(), y_all[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step == last or (stop_at is None and step % eval_every == 0):
            recalibrate_batchnorm(classifier, images if bn_images is None else bn_images)
            accuracy = classifier_accuracy(classifier, val_images, val_labels)
            curve.append((step, accuracy))
            if accuracy >= best_accuracy:  # the latest of ties: more training
                best_step, best_accuracy = step, accuracy
                state = copy.deepcopy(classifier.state_dict())
            classifier.train()
    classifier.load_state_dict(state)
    return Fit(classifier.eval(), best_step, best_accuracy, curve)
