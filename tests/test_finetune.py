"""Tests of simclr_teach.finetune (classifiers trained on labels) and protocol.few_label_study."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from simclr_teach.finetune import (
    classifier_accuracy,
    predict_labels,
    recalibrate_batchnorm,
    train_classifier,
)
from simclr_teach.model import build_simclr, preprocess
from simclr_teach.protocol import FEW_LABEL_COLUMNS, FEW_LABEL_METHODS, few_label_study


def two_classes(n: int = 8):
    """Easy digits: class 0 dark, class 1 with a bright right half. uint8 (2n, 28, 28), (2n,)."""
    images = torch.zeros(2 * n, 28, 28, dtype=torch.uint8)
    images[n:, :, 14:] = 255
    images[:, 5:9, 5:9] = torch.randint(
        0, 255, (2 * n, 4, 4), generator=torch.Generator().manual_seed(0)
    ).to(torch.uint8)
    return images, torch.tensor([0] * n + [1] * n)


SMALL = dict(width=4, steps=30, eval_every=10, batch_size=8, strength=0.5, seed=0)


def test_from_scratch_learns_repeats_and_leaves_the_global_rng_alone():
    images, labels = two_classes()
    state = torch.random.get_rng_state()
    fit = train_classifier(images, labels, images, labels, **SMALL)
    assert torch.equal(state, torch.random.get_rng_state())
    assert not fit.classifier.training
    assert fit.val_accuracy == 1.0 and classifier_accuracy(fit.classifier, images, labels) == 1.0
    assert [step for step, _ in fit.curve] == [10, 20, 30]
    assert fit.best_step == min(step for step, acc in fit.curve if acc == 1.0)  # earliest best
    again = train_classifier(images, labels, images, labels, **SMALL)
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(fit.classifier(x), again.classifier(x))  # same seed, same weights


def test_keeps_the_weights_of_the_best_validation_step():
    images, labels = two_classes()
    fit = train_classifier(
        images, labels, images, 1 - labels, width=4, steps=20, eval_every=5, batch_size=8, seed=0
    )  # validation labels flipped: learning hurts
    best = max(acc for _, acc in fit.curve)
    assert fit.val_accuracy == best
    assert classifier_accuracy(fit.classifier, images, 1 - labels) == best


def test_fine_tuning_copies_the_encoder_and_stop_at_trains_fewer_steps():
    images, labels = two_classes()
    model = build_simclr("conv", width=4)
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    fit = train_classifier(
        images, labels, images, labels, model.encoder, steps=20, stop_at=5, batch_size=8
    )
    assert all(torch.equal(before[k], v) for k, v in model.encoder.state_dict().items())
    assert fit.best_step == 5 and fit.curve == [(5, fit.val_accuracy)]  # scored once, at the end
    assert fit.classifier[0] is not model.encoder


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"labels": torch.tensor([0, 1])}, "as many labels as images"),
        ({"steps": 0}, "steps >= 1"),
        ({"stop_at": 50}, "stop_at <= steps"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    images, labels = two_classes()
    args = {
        "images": images,
        "labels": labels,
        "val_images": images,
        "val_labels": labels,
        "width": 4,
        "steps": 10,
    }
    with pytest.raises(ValueError, match=match):
        train_classifier(**{**args, **kwargs})


def test_recalibrated_batchnorm_holds_the_statistics_of_the_clean_digits():
    images, _ = two_classes()
    model = nn.Sequential(nn.Flatten(), nn.BatchNorm1d(784))
    model.train()
    model(torch.randn(16, 1, 28, 28) * 5 + 3)  # running stats of other inputs
    recalibrate_batchnorm(model, images, batch_size=6)  # 3 batches: 6, 6, 4
    x = preprocess(images).flatten(1)  # (16, 784)
    norm = model[1]
    assert not model.training and norm.momentum == 0.1  # momentum restored
    # momentum None averages the batch means with equal weight per batch
    batch_means = torch.stack([x[i : i + 6].mean(0) for i in range(0, 16, 6)])
    assert torch.allclose(norm.running_mean, batch_means.mean(0), atol=1e-6)


def test_predict_labels_restores_training_mode():
    images, labels = two_classes()
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(784, 2)).train()
    assert predict_labels(classifier, images).shape == (16,)
    assert classifier.training


def test_few_label_study_rows_choose_on_validation(tmp_path):
    g = torch.Generator().manual_seed(0)
    train_labels = torch.arange(10).repeat_interleave(60)  # 60 per class: 50 val
    train_images = torch.randint(0, 256, (600, 28, 28), generator=g).to(torch.uint8)
    test_images, test_labels = train_images[:30], train_labels[:30]
    model = build_simclr("conv", width=4).eval()
    rows = few_label_study(
        model,
        train_images,
        train_labels,
        test_images,
        test_labels,
        budgets=(1, 10),
        seeds=(0, 1),
        strengths=(0.0, 1.0),
        steps=4,
        eval_every=2,
    )
    assert len(rows) == 2 * 2 * len(FEW_LABEL_METHODS)
    assert all(set(FEW_LABEL_COLUMNS) <= set(row) for row in rows)
    assert {row["method"] for row in rows} == set(FEW_LABEL_METHODS)
    every = [row for row in rows if row["per_class"] == 10]  # 10 = all 10 outside validation
    assert all(row["labels"] == 600 for row in every)  # refit on every training label
    assert all(row["labels"] == 10 for row in rows if row["per_class"] == 1)
    for method in ("supervised CNN", "fine-tuned SimCLR"):  # seed 1 reuses seed 0's choice
        chosen = {
            row["seed"]: row["strength"]
            for row in rows
            if row["method"] == method and row["per_class"] == 1
        }
        assert chosen[0] == chosen[1] and chosen[0] in (0.0, 1.0)
    assert all(0 <= row["test_accuracy"] <= 1 for row in rows)
