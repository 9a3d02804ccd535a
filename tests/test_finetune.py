"""Tests of simclr_teach.finetune (classifiers trained on labels) and protocol.few_label_study."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from simclr_teach import finetune
from simclr_teach.finetune import (
    classifier_accuracy,
    predict_labels,
    recalibrate_batchnorm,
    train_classifier,
)
from simclr_teach.model import build_simclr, preprocess
from simclr_teach.protocol import (
    CLASSIFIER_START,
    EXTEND_BEYOND,
    EXTENSIONS,
    FEW_LABEL_COLUMNS,
    FEW_LABEL_METHODS,
    FINETUNE_STYLES,
    few_label_study,
    tune_classifier,
)


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
    assert fit.best_step == max(step for step, acc in fit.curve if acc == 1.0)  # latest best
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


def test_a_gentle_fine_tuning_leaves_the_encoder_behind_and_lp_ft_fits_the_head_first():
    images, labels = two_classes()
    model = build_simclr("conv", width=4)
    kwargs = dict(steps=3, eval_every=3, batch_size=8, strength=0.0, seed=0)
    before = {k: v.clone() for k, v in model.encoder.state_dict().items() if "weight" in k}

    def moved(fit):  # how far the encoder's and the head's weights went from the start
        encoder, head = fit.classifier
        enc = sum((encoder.state_dict()[k] - v).abs().sum().item() for k, v in before.items())
        return enc, head

    full, _ = moved(train_classifier(images, labels, images, labels, model.encoder, **kwargs))
    gentle, _ = moved(
        train_classifier(
            images, labels, images, labels, model.encoder, encoder_lr_scale=0.01, **kwargs
        )
    )
    assert 0 < gentle < full / 10  # Adam's steps scale with the learning rate
    head = torch.nn.Linear(model.encoder.out_dim, 2)
    x = preprocess(images)
    finetune.fit_linear_head(model.encoder, head, x, labels, C=100.0)
    with torch.no_grad():
        h = model.encoder.eval()(x)
    assert (head(h).argmax(1) == labels).all()  # the probe separates the two classes
    with pytest.raises(ValueError, match="encoder_lr_scale must be in"):
        train_classifier(images, labels, images, labels, encoder_lr_scale=0.0, **kwargs)


def fake_classifier(score, calls):
    """A train_classifier whose validation accuracy is ``score(recipe)``; calls are recorded."""

    def train(images, labels, val_images, val_labels, encoder=None, **kwargs):
        recipe = {
            k: v for k, v in kwargs.items() if k in {**CLASSIFIER_START, **FINETUNE_STYLES[0]}
        }
        calls.append(recipe)
        return finetune.Fit(nn.Identity(), kwargs["steps"], score(recipe))

    return train


@pytest.mark.parametrize(
    "peak, chosen, longest",
    [(1000, 1000, 2000), (4000, 4000, 8000), (10**6, 8000, 8000)],
)
def test_the_chosen_schedule_lies_inside_the_range_tried(monkeypatch, peak, chosen, longest):
    """Accuracy rises with the schedule up to ``peak`` steps, then falls: the grid is doubled
    while its longest length wins, so the choice is never on the edge unless at max_steps."""
    calls = []
    score = lambda r: 0.5 + 0.1 * min(r["steps"], peak) / peak - 1e-6 * max(r["steps"] - peak, 0)  # noqa: E731
    monkeypatch.setattr(finetune, "train_classifier", fake_classifier(score, calls))
    images, labels = two_classes()
    recipe, fit, candidates, ends = tune_classifier(images, labels, images, labels, search=())
    assert recipe["steps"] == chosen == fit.best_step
    assert max(r["steps"] for r in calls) == longest
    assert candidates == len(calls)  # each recipe trained once: the start is not retrained
    assert ends == (["steps"] if chosen == longest else [])


def test_the_search_moves_a_coordinate_only_for_a_strictly_better_score(monkeypatch):
    calls = []
    best_lr = {"lr": 8e-3}

    def score(r):  # lr matters, strength ties, and fine-tuning gains from LP-FT at lr / 10
        gentle = r.get("encoder_lr_scale") == 0.1 and r.get("probe_first")
        return 0.5 + 0.1 * (r["lr"] == best_lr["lr"]) + 0.2 * bool(gentle) - 1e-9 * r["steps"]

    monkeypatch.setattr(finetune, "train_classifier", fake_classifier(score, calls))
    images, labels = two_classes()
    search = (("strength", (0.5, 1.0, 1.5)), ("lr", (5e-4, 2e-3, 8e-3)))
    recipe, _, n, _ = tune_classifier(
        images, labels, images, labels, search=search, step_grid=(500, 1000)
    )
    assert recipe == {**CLASSIFIER_START, "lr": 8e-3}  # strength tied: the start's kept
    # start, 2 strengths, 2 lrs, 4 * 8e-3 (8e-3 won at the top of its range), 1000 steps
    assert "encoder_lr_scale" not in recipe and n == 7
    calls.clear()
    recipe, _, n, _ = tune_classifier(
        images, labels, images, labels, build_simclr("conv", width=4).encoder,
        search=search, step_grid=(500, 1000),
    )  # fmt: skip
    assert recipe["encoder_lr_scale"] == 0.1 and recipe["probe_first"] is True
    assert n == 7 + len(FINETUNE_STYLES) - 1


@pytest.mark.parametrize(
    "best_lr, chosen, tried, ends",
    [
        (3e-2, 3.2e-2, [5e-4, 2e-3, 8e-3, 3.2e-2, 1.28e-1], []),  # one step beyond the top
        (1.0, 5.12e-1, [5e-4, 2e-3, 8e-3, 3.2e-2, 1.28e-1, 5.12e-1, 2.048], []),  # three up
        (1e6, 8e-3 * 4**6, [5e-4, 2e-3, 8e-3] + [8e-3 * 4**k for k in range(1, 7)], ["lr"]),
        (1e-4, 1.25e-4, [3.125e-5, 1.25e-4, 5e-4, 2e-3, 8e-3], []),  # below the bottom
        (2e-3, 2e-3, [5e-4, 2e-3, 8e-3], []),  # inside: nothing more is tried
    ],
)
def test_a_learning_rate_at_an_end_of_its_range_is_tried_beyond_it(
    monkeypatch, best_lr, chosen, tried, ends
):
    """Validation accuracy peaks at ``best_lr`` (log scale): the search steps past a winning end
    by EXTEND_BEYOND's factor until the choice lies inside, at most EXTENSIONS times."""
    calls = []
    score = lambda r: 0.9 - abs(math.log(r["lr"] / best_lr)) / 100  # noqa: E731
    monkeypatch.setattr(finetune, "train_classifier", fake_classifier(score, calls))
    images, labels = two_classes()
    search = (("lr", (5e-4, 2e-3, 8e-3)),)
    recipe, _, _, range_ends = tune_classifier(
        images, labels, images, labels, search=search, step_grid=(500,), max_steps=500
    )
    assert recipe["lr"] == pytest.approx(chosen)
    assert sorted({r["lr"] for r in calls}) == pytest.approx(tried)
    assert range_ends == ends
    assert EXTEND_BEYOND["lr"] == 4.0 and EXTENSIONS == 6  # the last case reaches the limit


def test_few_label_study_rows_choose_on_validation(tmp_path):
    g = torch.Generator().manual_seed(0)
    train_labels = torch.arange(10).repeat_interleave(60)  # 60 per class: 50 val
    train_images = torch.randint(0, 256, (600, 28, 28), generator=g).to(torch.uint8)
    test_images, test_labels = train_images[:30], train_labels[:30]
    torch.manual_seed(0)
    models = [build_simclr("conv", width=4).eval() for _ in (0, 1)]
    rows = few_label_study(
        models,
        train_images,
        train_labels,
        test_images,
        test_labels,
        budgets=(1, 10),
        seeds=(0, 1),
        pretrain_seeds=(0, 1),
        search=(("strength", (0.0, 1.0)),),
        step_grid=(2, 4),
        max_steps=8,
    )
    assert len(rows) == 2 * 2 * len(FEW_LABEL_METHODS)
    assert all(set(FEW_LABEL_COLUMNS) == set(row) for row in rows)
    assert {row["method"] for row in rows} == set(FEW_LABEL_METHODS)
    assert [row["pretrain_seed"] for row in rows[:8]] == [0] * 4 + [1] * 4
    every = [row for row in rows if row["per_class"] == 10]  # 10 = all 10 outside validation
    assert all(row["labels"] == 600 for row in every)  # refit on every training label
    assert all(row["labels"] == 10 for row in rows if row["per_class"] == 1)
    for method in ("supervised CNN", "fine-tuned SimCLR"):  # seed 1 reuses seed 0's recipe
        runs = {r["seed"]: r for r in rows if r["method"] == method and r["per_class"] == 1}
        keys = ("strength", "lr", "weight_decay", "steps")
        assert [runs[0][k] for k in keys] == [runs[1][k] for k in keys]
        assert runs[0]["strength"] in (0.0, 1.0) and runs[0]["steps"] in (2, 4, 8)
        assert runs[0]["candidates"] >= 3 and runs[1]["candidates"] == 1
    assert all(0 <= row["test_accuracy"] <= 1 for row in rows)
    with pytest.raises(ValueError, match="one model, or one per seed"):
        few_label_study(models, train_images, train_labels, test_images, test_labels, seeds=(0,))


def test_a_recipe_read_back_from_the_csv_is_the_recipe_trained(tmp_path):
    import pandas as pd

    from simclr_teach.protocol import recipe_from_row
    from simclr_teach.utils import csv_text

    rows = [
        {"method": "kNN on h", **dict.fromkeys(CLASSIFIER_START, ""), "probe_first": ""},
        {"method": "supervised CNN", **CLASSIFIER_START, "steps": 1000},
        {"method": "fine-tuned SimCLR", **CLASSIFIER_START, **FINETUNE_STYLES[3]},
    ]
    columns = ["method", *CLASSIFIER_START, "encoder_lr_scale", "probe_first"]
    (tmp_path / "t.csv").write_text(csv_text(rows, columns))
    back = pd.read_csv(tmp_path / "t.csv").to_dict("records")
    assert recipe_from_row(back[0]) == {}
    assert recipe_from_row(back[1]) == {**CLASSIFIER_START, "steps": 1000}
    assert recipe_from_row(back[2]) == {**CLASSIFIER_START, **FINETUNE_STYLES[3]}
    assert type(recipe_from_row(back[2])["steps"]) is int
