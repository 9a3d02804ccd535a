"""Tests of the protocol helpers of simclr_teach.evaluate taught in 05_evaluation_tsne_knn.

neighbour_confusion, tune_knn, tune_probe, tuned_scores and labelled_subset (the classifiers
trained on labels and the few-label study: tests/test_finetune.py).
"""

from __future__ import annotations

import pytest
import torch

from simclr_teach.evaluate import knn_accuracy, linear_probe, neighbour_confusion
from simclr_teach.protocol import (
    assert_better,
    assert_not_worse,
    assert_tied,
    evaluation_table,
    labelled_subset,
    paired_noise,
    paired_test,
    tune_knn,
    tune_probe,
    tuned_scores,
)


def clusters(n_per_class: int, num_classes: int = 3, noise: float = 0.1, seed: int = 0):
    """Points near one direction per class: (C * n, C) features and (C * n,) labels."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    features = torch.eye(num_classes)[labels] + noise * torch.randn(
        len(labels), num_classes, generator=g
    )
    return features, labels


def confusion_by_loop(features, labels, k):
    """Oracle: for each point, sort the others by cosine and count the labels of the first k."""
    c = int(labels.max()) + 1
    rows = torch.zeros(c, c)
    unit = features / features.norm(dim=1, keepdim=True)
    for i in range(len(features)):
        others = [j for j in range(len(features)) if j != i]
        others.sort(key=lambda j: -float(unit[i] @ unit[j]))
        for j in others[:k]:
            rows[labels[i], labels[j]] += 1 / k
    return rows / labels.bincount(minlength=c).unsqueeze(1)


def test_neighbour_confusion_matches_loop_and_rows_sum_to_one():
    features, labels = clusters(6, noise=0.8)  # classes overlap
    confusion = neighbour_confusion(features, labels, k=4)
    assert confusion.shape == (3, 3)
    assert torch.allclose(confusion, confusion_by_loop(features, labels, 4), atol=1e-6)
    assert torch.allclose(confusion.sum(dim=1), torch.ones(3))


def test_neighbour_confusion_separated_classes_and_duplicates():
    features, labels = clusters(5, noise=0.01)
    assert torch.allclose(neighbour_confusion(features, labels, k=4), torch.eye(3))
    duplicated = torch.tensor([[1.0, 0.0]] * 3 + [[0.0, 1.0]] * 3)  # each point ties with 2 others
    assert torch.allclose(
        neighbour_confusion(duplicated, torch.tensor([0] * 3 + [1] * 3), 2), torch.eye(2)
    )  # itself is never counted


def test_neighbour_confusion_rejects_bad_k():
    features, labels = clusters(2)
    with pytest.raises(ValueError, match="k must be in"):
        neighbour_confusion(features, labels, k=len(features))


def test_tune_knn_picks_the_best_validation_temperature_per_k():
    train_f, train_y = clusters(20, noise=0.7, seed=0)
    val_f, val_y = clusters(10, noise=0.7, seed=1)
    temperatures = (0.01, 0.1, 1.0)
    best = tune_knn(train_f, train_y, val_f, val_y, ks=(1, 15), temperatures=temperatures)
    assert list(best) == [1, 15]
    for k, (temperature, accuracy) in best.items():
        scores = [knn_accuracy(train_f, train_y, val_f, val_y, k, t) for t in temperatures]
        assert accuracy == max(scores) and temperature == temperatures[scores.index(max(scores))]
    assert best[1][0] == 0.01  # k = 1: every temperature ties, first wins
    with pytest.raises(ValueError, match="at least one"):
        tune_knn(train_f, train_y, val_f, val_y, ks=())


def test_tune_probe_returns_the_best_c_and_all_scores():
    train_f, train_y = clusters(20, noise=0.7, seed=0)
    val_f, val_y = clusters(10, noise=0.7, seed=1)
    best, scores = tune_probe(train_f, train_y, val_f, val_y, Cs=(0.001, 1.0))
    assert set(scores) == {0.001, 1.0} and scores[best] == max(scores.values())
    assert scores[1.0] == linear_probe(train_f, train_y, val_f, val_y, C=1.0)
    with pytest.raises(ValueError, match="Cs must be"):
        tune_probe(train_f, train_y, val_f, val_y, Cs=(0.0,))


def test_labelled_subset_balanced_seeded_and_checked():
    labels = torch.arange(10).repeat(7)  # 7 of each class
    picked = labelled_subset(labels, 3, seed=0)
    assert labels[picked].bincount().tolist() == [3] * 10 and len(picked.unique()) == 30
    assert torch.equal(picked, labelled_subset(labels, 3, seed=0))
    assert not torch.equal(picked, labelled_subset(labels, 3, seed=1))
    assert len(labelled_subset(labels, 7)) == 70  # all of them
    with pytest.raises(ValueError, match="per_class must be in"):
        labelled_subset(labels, 8)


def test_tuned_scores_tunes_on_validation_and_scores_test_once():
    train_f, train_y = clusters(20, noise=0.7, seed=0)
    test_f, test_y = clusters(10, noise=0.7, seed=2)
    val = torch.zeros(len(train_y), dtype=torch.bool)
    val[::4] = True  # every 4th row validates
    scores, chosen = tuned_scores(
        train_f, train_y, val, test_f, test_y, ks=(1, 5), temperatures=(0.1, 1.0), Cs=(0.01, 1.0)
    )
    assert set(scores) == {"knn@1", "knn@5", "knn", "linear"}
    best = tune_knn(train_f, train_y, None, None, (1, 5), (0.1, 1.0))  # leave-one-out
    assert chosen["temperature@5"] == best[5][0]
    assert scores["knn@5"] == knn_accuracy(train_f, train_y, test_f, test_y, 5, best[5][0])
    assert (
        chosen["C"]
        == tune_probe(train_f[~val], train_y[~val], train_f[val], train_y[val], (0.01, 1.0))[0]
    )
    assert scores["linear"] == linear_probe(train_f, train_y, test_f, test_y, C=chosen["C"])
    no_probe, _ = tuned_scores(train_f, train_y, val, test_f, test_y, ks=(1,), Cs=None)
    assert list(no_probe) == ["knn@1", "knn"]
    with pytest.raises(ValueError, match="val_mask"):
        tuned_scores(train_f, train_y, torch.ones(len(train_y), dtype=torch.bool), test_f, test_y)


def test_tuned_scores_names_the_k_chosen_on_validation():
    train_f, train_y = clusters(20, noise=0.7, seed=0)
    test_f, test_y = clusters(10, noise=0.7, seed=2)
    val = torch.zeros(len(train_y), dtype=torch.bool)
    val[::4] = True
    scores, chosen = tuned_scores(train_f, train_y, val, test_f, test_y, ks=(1, 15), Cs=None)
    best = tune_knn(train_f, train_y, None, None, (1, 15))
    assert chosen["k"] == max(best, key=lambda k: best[k][1])
    assert chosen["val_knn"] == best[chosen["k"]][1]
    assert scores["knn"] == scores[f"knn@{chosen['k']}"]


def test_paired_test_counts_disagreements_and_matches_the_binomial():
    a = torch.tensor([True] * 90 + [True] * 8 + [False] * 2)
    b = torch.tensor([True] * 90 + [False] * 8 + [True] * 2)
    result = paired_test(a, b)
    assert (result["a_only"], result["b_only"]) == (8, 2)
    assert result["gap"] == pytest.approx(0.06)
    # exact two-sided McNemar: 2 * P(X <= 2), X ~ Bin(10, 1/2) = 2 * 56 / 1024
    assert result["p_value"] == pytest.approx(112 / 1024)
    assert result["low"] < result["gap"] < result["high"]
    same = paired_test(a, a)
    assert same["p_value"] == 1.0 and same["gap"] == 0 and same["low"] == same["high"] == 0
    with pytest.raises(ValueError, match="one length"):
        paired_test(a, b[:5])


def test_evaluation_table_reads_every_source_through_the_protocol():
    from simclr_teach.evaluate import format_table
    from simclr_teach.model import build_simclr

    g = torch.Generator().manual_seed(0)
    model = build_simclr("conv", width=4).eval()
    labels = torch.arange(40) % 4  # 10 per class: 2 validate
    images = torch.randint(0, 256, (40, 28, 28), generator=g).to(torch.uint8)
    rows, chosen = evaluation_table(model, images, labels, images[:20], labels[:20], ks=(1, 5))
    names = ["SimCLR h", "SimCLR z", "raw pixels", "random-init encoder"]
    assert [row["features"] for row in rows] == names
    assert [row["dim"] for row in rows] == [16, 64, 784, 16]
    assert all(
        0.0 <= row[key] <= 1.0 for row in rows for key in ("knn@1", "knn@5", "knn", "linear")
    )
    assert all(chosen[name]["k"] in (1, 5) and "C" in chosen[name] for name in names)
    assert all(row["knn"] == row[f"knn@{chosen[row['features']]['k']}"] for row in rows)
    text = format_table(rows)
    assert all(name in text for name in names) and "knn@5" in text and "linear" in text
    assert f"{100 * rows[2]['knn@1']:.1f}" in text
    assert "-" in format_table([{"features": "x", "dim": 2, "knn@1": 0.5, "linear": None}])


def test_tune_knn_leave_one_out_scores_every_training_point_against_the_others():
    train_f, train_y = clusters(15, noise=0.9, seed=3)
    best = tune_knn(train_f, train_y, None, None, ks=(1, 7), temperatures=(0.05, 1.0))
    for k, (temperature, accuracy) in best.items():
        assert accuracy == knn_accuracy(
            train_f, train_y, train_f, train_y, k, temperature, leave_one_out=True
        )


def test_claims_are_checked_against_their_noise():
    # a gap of 1.0 with noise 0.3: beyond 2 noise units (0.6), so "better", not "tied"
    assert "ahead beyond the noise" in assert_better(98.0, 97.0, 0.3, ("h", "z"))
    with pytest.raises(AssertionError, match="'h ties z' fails"):
        assert_tied(98.0, 97.0, 0.3, ("h", "z"))
    assert "within the noise" in assert_tied(97.0, 96.5, 0.3, ("h", "z"))
    assert "not behind" in assert_not_worse(96.5, 97.0, 0.3, ("h", "z"))
    with pytest.raises(AssertionError, match=r"'h beats z' fails: h 97 vs z 96.5: gap \+0.5"):
        assert_better(97.0, 96.5, 0.3, ("h", "z"))  # 0.5 < 2 x 0.3
    with pytest.raises(AssertionError, match="'h ties z' fails"):
        assert_tied(98.0, 96.5, 0.3, ("h", "z"))
    with pytest.raises(AssertionError, match="no worse"):
        assert_not_worse(95.0, 96.5, 0.3, ("h", "z"))
    with pytest.raises(AssertionError):
        assert_better(96.5, 96.5, 0.0)  # a tie is not a win, even without noise
    with pytest.raises(ValueError, match="noise >= 0"):
        assert_tied(1.0, 1.0, -0.1)
    with pytest.raises(ValueError, match="finite"):
        assert_better(float("nan"), 1.0, 0.1)


def test_paired_noise_is_the_gap_sd_of_the_bootstrap_interval():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(1000, generator=g) < 0.95
    b = torch.rand(1000, generator=g) < 0.90
    test = paired_test(a, b)
    difference = a.float() - b.float()
    sd = (difference.var() / len(difference)).sqrt().item()  # the gap's standard error
    assert paired_noise(test) == pytest.approx(sd, rel=0.1)
