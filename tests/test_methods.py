"""What SimCLR needs and what came after (notebook 08): heads, collapse, MoCo, SimSiam."""

import copy
import csv
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from simclr_teach import distributed
from simclr_teach import methods as methods_module
from simclr_teach.data import REPO_ROOT, embedded_mnist
from simclr_teach.evaluate import embed, score_h_and_z
from simclr_teach.lab import LAB_BASE
from simclr_teach.loss import nt_xent
from simclr_teach.methods import (
    BYOL,
    METHODS,
    BarlowTwins,
    KeyQueue,
    MoCo,
    PositivesOnly,
    SimSiam,
    barlow_twins_loss,
    cross_correlation,
    effective_rank,
    moco_batch_leak,
    momentum_update,
    negative_cosine,
    normalized_mse,
    normalized_std,
    positives_only_loss,
    singular_spectrum,
)
from simclr_teach.model import SimCLR, build_head, build_simclr
from simclr_teach.train import (
    History,
    TrainConfig,
    build_model,
    load_model,
    train_simclr,
    validation_split,
)
from simclr_teach.utils import seed_everything
from tests.support import small_config

TINY = small_config()


@pytest.fixture(scope="module")
def images():
    return embedded_mnist().train_images[:128]


def train(images, config, **kwargs):
    seed_everything(config.seed)
    model = build_model(config)
    return model, train_simclr(model, images, config, progress=False, **kwargs)


# --- the projection head ---------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "z_size"), [("mlp", 8), ("linear", 8), ("none", 16)])
def test_heads_give_z_of_their_size(kind, z_size):
    model = build_simclr("conv", width=4, proj_hidden=16, proj_dim=8, head=kind).eval()
    h, z = model(torch.rand(3, 1, 28, 28))
    assert h.shape == (3, 16) and z.shape == (3, z_size)
    if kind == "none":
        assert torch.equal(h, z)  # the loss acts on h itself


def test_unknown_head_is_refused():
    with pytest.raises(ValueError, match="head must be one of"):
        build_head("deep", 16)
    with pytest.raises(ValueError, match="head"):
        TrainConfig(head="deep")


# --- collapse: positives only, and how to measure it ------------------------------------------


def test_positives_only_is_nt_xent_without_its_denominator():
    g = torch.Generator().manual_seed(0)
    z1, z2, tau = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g), 0.3
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # (2N, D)
    logits = (z @ z.T / tau).fill_diagonal_(float("-inf"))  # every other view of the batch
    denominator = torch.logsumexp(logits, dim=1).mean()
    assert positives_only_loss(z1, z2, tau) + denominator == pytest.approx(
        nt_xent(z1, z2, tau).item(), abs=1e-5
    )


def test_positives_only_is_minimal_when_everything_is_one_point():
    one_point = torch.ones(8, 4)
    assert positives_only_loss(one_point, one_point, 0.5).item() == pytest.approx(-2.0)
    g = torch.Generator().manual_seed(1)
    spread = torch.randn(8, 4, generator=g)
    assert positives_only_loss(spread, spread, 0.5).item() == pytest.approx(-2.0)  # also minimal
    with pytest.raises(ValueError, match="one shape"):
        positives_only_loss(torch.ones(8, 4), torch.ones(7, 4))


@pytest.mark.parametrize("temperature", [0.0, -0.5, float("nan"), float("inf")])
def test_positives_only_validates_the_temperature_as_nt_xent_does(temperature):
    z = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    for loss in (positives_only_loss, nt_xent):  # tau = 0 gave -inf here
        with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
            loss(z, z, temperature)


@pytest.mark.parametrize(
    "p,z",
    [
        (torch.ones(4, 3), torch.ones(5, 3)),
        (torch.ones(4, 3), torch.ones(4, 2)),
        (torch.ones(4, 3), torch.ones(1, 3)),  # broadcast silently before
        (torch.ones(3), torch.ones(3)),
        (torch.ones(0, 3), torch.ones(0, 3)),  # NaN before
    ],
)
def test_negative_cosine_names_mismatched_shapes(p, z):
    with pytest.raises(ValueError, match=r"p and z must be \(N, D\) of one shape with N >= 1"):
        negative_cosine(p, z)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_effective_rank_names_non_finite_features(bad):
    features = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    features[2, 1] = bad  # the SVD failed with LinAlgError
    with pytest.raises(ValueError, match="features contain NaN or inf"):
        effective_rank(features)


def test_effective_rank_counts_the_directions_used():
    assert effective_rank(torch.eye(6)) == pytest.approx(6.0, rel=1e-5)  # 6 even directions
    collapsed = torch.ones(50, 6) + 1e-7 * torch.randn(50, 6, generator=torch.Generator())
    assert effective_rank(collapsed) == pytest.approx(1.0, abs=1e-3)  # one point: rank 1
    two = torch.cat([torch.eye(2)] * 10)  # (20, 2): two directions, equally used
    assert effective_rank(F.pad(two, (0, 4))) == pytest.approx(2.0, rel=1e-5)
    assert effective_rank(torch.ones(5, 3), center=True) == 1.0  # centred one point


def test_singular_spectrum_is_descending_and_sums_to_one():
    g = torch.Generator().manual_seed(2)
    s = singular_spectrum(torch.randn(40, 10, generator=g) * torch.arange(1.0, 11.0))
    assert s.shape == (10,) and torch.all(s[:-1] >= s[1:])
    assert s.sum().item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="M >= 2"):
        singular_spectrum(torch.ones(1, 3))


def test_a_positives_only_run_collapses_and_negatives_prevent_it():
    data = embedded_mnist()
    val = validation_split(data.train_labels, per_class=20)
    monitor = (
        data.train_images[~val][:400],
        data.train_labels[~val][:400],
        data.train_images[val],
        data.train_labels[val],
    )
    base = replace(TINY, epochs=4, batch_size=64, lr=1e-2)
    images = data.train_images[~val][:640]
    _, positives = train(images, replace(base, method="positives"), monitor=monitor)
    _, simclr = train(images, base, monitor=monitor)
    # Random init already puts z near one point (effective rank about 1.05 of 8). Without
    # negatives nothing spreads it, at any epoch; with them z spreads out. Epoch-to-epoch
    # wiggles are noise (seed, thread count, bf16 or float32): the bounds below hold with room
    # over seeds 0-5, 1 and 2 threads, both precisions (positives: rank_z <= 2.22, last
    # uniformity >= -0.05; SimCLR: rank_z up >= 2.3 from epoch 1, ends >= 3.2 above positives,
    # uniformity >= 1.3 below theirs).
    assert max(positives.rank_z) < 3.0  # at most ~2 of z's 8 directions, in every epoch ...
    assert positives.uniformity[-1] > -0.15  # ... with every digit near one point (0)
    assert simclr.rank_z[-1] > simclr.rank_z[0] + 1.0  # the negatives spread z ...
    assert simclr.rank_z[-1] > positives.rank_z[-1] + 2.0  # ... far beyond the collapsed run
    assert simclr.uniformity[-1] < positives.uniformity[-1] - 0.75


# --- MoCo: the queue and the momentum encoder --------------------------------------------------


def test_key_queue_is_fifo_of_detached_unit_keys():
    queue = KeyQueue(5, 2, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(queue.keys.norm(dim=1), torch.ones(5))
    made = torch.tensor([[3.0, 4.0], [0.0, 2.0], [1.0, 0.0]], requires_grad=True)
    queue.enqueue(made * 1)  # a key with a grad_fn, as a network makes it
    assert not queue.keys.requires_grad and queue.keys.grad_fn is None
    assert torch.allclose(queue.keys[:3], F.normalize(made.detach(), dim=1))
    queue.enqueue(torch.tensor([[0.0, -1.0], [-1.0, 0.0], [0.0, 3.0]]))  # wraps: slots 3, 4, 0
    assert queue.pointer.item() == 1
    assert torch.equal(queue.keys[[3, 4, 0]], torch.tensor([[0.0, -1.0], [-1.0, 0.0], [0.0, 1.0]]))
    assert torch.allclose(queue.keys[1:3], F.normalize(made.detach()[1:], dim=1))  # not yet old
    with pytest.raises(ValueError, match="queue at least 2N"):
        queue.enqueue(torch.ones(6, 2))


def random_linear_pair(seed):
    """Two nn.Linear(3, 2) with different random weights: an online and a target network."""
    g = torch.Generator().manual_seed(seed)
    online, target = nn.Linear(3, 2), nn.Linear(3, 2)
    for p in [*online.parameters(), *target.parameters()]:
        p.data = torch.randn(p.shape, generator=g)
    return online, target


def test_momentum_update_is_exact():
    online, target = random_linear_pair(3)
    before = copy.deepcopy(target)
    momentum_update(target, online, 0.9)
    for t, b, o in zip(target.parameters(), before.parameters(), online.parameters(), strict=True):
        assert torch.allclose(t, 0.9 * b + 0.1 * o)
    momentum_update(target, online, 0.0)  # m = 0: a copy
    pairs = zip(target.parameters(), online.parameters(), strict=True)
    assert all(torch.equal(t, o) for t, o in pairs)
    with pytest.raises(ValueError, match="momentum"):
        momentum_update(target, online, 1.5)


@pytest.mark.parametrize(
    "online,message",
    [
        (nn.Linear(3, 4), r"parameter 0 has shape \(2, 3\) in target and \(4, 3\) in online"),
        (nn.Linear(3, 2, bias=False), "they have 2 and 1 parameter tensors"),
        (nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(4)), "2 and 4 parameter tensors"),
    ],
)
def test_momentum_update_names_where_the_architectures_differ(online, message):
    target = nn.Linear(3, 2)
    before = copy.deepcopy(target)
    with pytest.raises(ValueError, match=f"one architecture.*{message}.*copy.deepcopy"):
        momentum_update(target, online, 0.9)
    pairs = zip(target.parameters(), before.parameters(), strict=True)
    assert all(torch.equal(t, b) for t, b in pairs)  # refused before touching the target


def test_momentum_update_names_mismatched_buffers():
    target, online = nn.BatchNorm1d(2, affine=False), nn.BatchNorm1d(3, affine=False)
    with pytest.raises(ValueError, match=r"buffer 0 has shape \(2,\) in target and \(3,\)"):
        momentum_update(target, online, 0.9)


def test_momentum_update_matches_lightly():
    utils = pytest.importorskip("lightly.models.utils", reason="lightly: make bench installs it")
    online, ours = random_linear_pair(4)
    theirs = copy.deepcopy(ours)
    momentum_update(ours, online, 0.99)
    utils.update_momentum(online, theirs, m=0.99)
    pairs = zip(ours.parameters(), theirs.parameters(), strict=True)
    assert all(torch.allclose(a, b) for a, b in pairs)


def moco(queue_size=64, momentum=0.9):
    seed_everything(0)
    return MoCo(build_simclr("conv", 4, 16, 8), queue_size, momentum)


def test_moco_batch_leak_scores_both_key_batches_and_leaves_the_model_as_it_was():
    model = moco(queue_size=64).eval()  # as load_or_train returns it
    views = [torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    shared, shuffled = moco_batch_leak(model, *views)
    assert 0 <= shared <= 1 and 0 <= shuffled <= 1
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # no BN update
    assert not model.online.training and not model.key_network.training  # its mode too

    class Flat(nn.Sequential):  # an encoder without BatchNorm: no batch statistics to leak
        out_dim = 8

    seed_everything(0)
    no_bn = MoCo(SimCLR(Flat(nn.Flatten(), nn.Linear(784, 8)), nn.Identity()), 64, 0.9)
    no_bn.eval()
    shared, shuffled = moco_batch_leak(no_bn, *views)
    assert shared == shuffled  # each key depends on its own digit only
    with pytest.raises(ValueError, match="four .* batches with N >= 2"):
        moco_batch_leak(model, views[0][:1], views[1][:1], views[2][:1], views[3][:1])
    with pytest.raises(ValueError, match="four"):
        moco_batch_leak(model, views[0], views[1], views[2][:4], views[3])


def test_moco_loss_is_infonce_against_the_queue_and_trains_the_online_network_only():
    model = moco().train()
    x1, x2 = torch.rand(4, 1, 28, 28), torch.rand(4, 1, 28, 28)
    queue = model.queue.keys.clone()
    key_network = copy.deepcopy(model.key_network)  # the same batch statistics, in train mode
    loss, z1, z2 = model(x1, x2, temperature=0.2)  # the training step's call
    q = F.normalize(torch.cat([z1, z2]).detach(), dim=1)
    k = F.normalize(key_network(torch.cat([x2, x1]))[1], dim=1)
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.T], dim=1) / 0.2  # (8, 1 + 64)
    expected = F.cross_entropy(logits, torch.zeros(8, dtype=torch.long))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert all(p.grad is None for p in model.key_network.parameters())  # keys: no gradient
    assert all(p.grad is not None for p in model.online.parameters())
    model.after_step()  # the step's 2N keys join the queue, the key network moves
    assert torch.allclose(model.queue.keys[:8], k)
    assert torch.equal(model.queue.keys[8:], queue[8:])


def assert_after_step_moves_by_momentum(model: nn.Module, target: nn.Module, m: float) -> None:
    """After the online network moves, ``model.after_step()`` moves ``target`` by momentum m."""
    with torch.no_grad():
        for p in model.online.parameters():
            p.add_(1.0)
    before = copy.deepcopy(target)
    model.after_step()
    pairs = zip(target.parameters(), before.parameters(), model.online.parameters(), strict=True)
    assert all(torch.allclose(t, m * b + (1 - m) * o) for t, b, o in pairs)


def test_moco_after_step_moves_the_key_network_by_momentum():
    model = moco(momentum=0.75)
    assert_after_step_moves_by_momentum(model, model.key_network, 0.75)


def test_moco_run_trains_resumes_and_reloads_with_its_queue(images, tmp_path):
    config = replace(TINY, method="moco", queue_size=128, epochs=2)
    straight, history = train(images, config)
    assert len(history.loss) == 2 and all(torch.isfinite(torch.tensor(history.loss)))
    path = tmp_path / "checkpoint.pt"

    def stop_after_one(h):
        if len(h.epoch) == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(images, config, checkpoint_path=path, on_epoch_end=stop_after_one)
    _, resumed = train(images, config, checkpoint_path=path)  # queue and key network restored
    assert resumed.loss == history.loss
    reloaded = load_model(path)
    assert isinstance(reloaded, MoCo)
    assert torch.equal(reloaded.queue.keys, straight.queue.keys)
    assert torch.equal(embed(reloaded, images[:5]), embed(straight, images[:5]))


def test_moco_needs_a_queue_of_at_least_two_batches():
    with pytest.raises(ValueError, match="queue_size"):
        TrainConfig(method="moco", batch_size=64, queue_size=100)
    TrainConfig(method="simclr", batch_size=64, queue_size=100)  # no queue: not checked


# --- SimSiam: predictor and stop-gradient ------------------------------------------------------


@pytest.mark.parametrize("stop_gradient", [True, False])
def test_stop_gradient_blocks_the_gradient_into_the_target(stop_gradient):
    p = torch.randn(4, 3, requires_grad=True)
    z = torch.randn(4, 3, requires_grad=True)
    negative_cosine(p, z, stop_gradient).backward()
    assert p.grad is not None
    assert (z.grad is None) == stop_gradient


def test_negative_cosine_matches_lightly():
    loss = pytest.importorskip("lightly.loss", reason="lightly: make bench installs it")
    g = torch.Generator().manual_seed(5)
    p, z = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    theirs = loss.NegativeCosineSimilarity()(p, z)
    assert negative_cosine(p, z).item() == pytest.approx(theirs.item(), rel=1e-6)


def test_simsiam_loss_reaches_the_encoder_only_through_the_predictor_side():
    seed_everything(0)
    model = SimSiam(build_simclr("conv", 4, 16, 8)).train()
    x1, x2 = torch.rand(4, 1, 28, 28), torch.rand(4, 1, 28, 28)
    loss, z1, z2 = model(x1, x2, temperature=0.5)
    assert -1.0 <= loss.item() <= 1.0 and z1.shape == z2.shape == (4, 8)
    h, z = model(torch.cat([x1, x2]))
    p = model.predictor(z)
    by_hand = (negative_cosine(p[:4], z[4:]) + negative_cosine(p[4:], z[:4])) / 2
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-5)


def test_simsiam_and_its_ablation_train(images):
    for stop_gradient in (True, False):
        config = replace(TINY, method="simsiam", stop_gradient=stop_gradient)
        model, history = train(images, config)
        assert isinstance(model, SimSiam) and model.stop_gradient == stop_gradient
        assert all(-1.0 <= loss <= 1.0 for loss in history.loss)


# --- the config and the cache ------------------------------------------------------------------


def test_new_fields_at_their_defaults_keep_old_cache_keys():
    with open(REPO_ROOT / "notebooks/results/lab_sweep.csv") as f:
        rows = list(csv.DictReader(f))
    base = next(r for r in rows if r["label"] == "all on" and r["seed"] == "0")
    committed = replace(LAB_BASE, seed=0, amp=True)  # its seed and precision, whatever the env
    assert committed.key("embedded-5k") == base["key"]  # the committed sweep is still found
    keys = {
        replace(LAB_BASE, **change).key("embedded-5k")
        for change in ({}, {"head": "none"}, {"method": "moco"}, {"momentum": 0.0})
    }
    assert len(keys) == 4


def test_an_older_history_reads_with_empty_collapse_numbers():
    old = {"epoch": [1, 2], "loss": [1.0, 0.5], "top1": [0.1, 0.2], "lr": [1.0, 0.5]}
    old |= {"knn": [None, None], "seconds": [1.0, 2.0], "images_per_second": [9.0, 9.0]}
    history = History.from_dict(old)
    assert history.rank_h == history.rank_z == history.uniformity == [None, None]


def test_other_methods_refuse_torchrun(images, monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    with pytest.raises(ValueError, match="without torchrun"):
        train(images, replace(TINY, method="moco", queue_size=128))


# --- reading a run --------------------------------------------------------------------------


def test_rotated_digits_turn_each_digit_by_its_label():
    digits = embedded_mnist().train_images[:6]
    x, turn = methods_module.rotated_digits(digits, angles=(0, 90, -90))
    assert turn.tolist() == [0, 1, 2, 0, 1, 2] and x.shape == (6, 1, 28, 28)
    upright = digits.float() / 255
    assert torch.allclose(x[0, 0], upright[0])
    assert torch.allclose(x[1, 0], torch.rot90(upright[1], 1), atol=1e-6)  # +90: anticlockwise
    assert torch.allclose(x[2, 0], torch.rot90(upright[2], -1), atol=1e-6)


def test_score_h_and_z_reads_training_digits_only():
    data = embedded_mnist()
    keep = torch.arange(600)
    images, labels = data.train_images[keep], data.train_labels[keep]
    val = validation_split(labels, per_class=10)
    seed_everything(0)
    model = build_simclr("conv", 4, 16, 8, head="none").eval()
    scores = score_h_and_z(model, images, labels, val)
    assert list(scores) == ["kNN h", "kNN z", "probe h", "probe z"]
    assert scores["kNN h"] == scores["kNN z"] and scores["probe h"] == scores["probe z"]  # z = h
    assert all(0.1 < v <= 1 for v in scores.values())


# --- the interface every method's model has: the loop knows none of them ----------------------


@pytest.mark.parametrize("method", METHODS)
def test_every_method_computes_its_own_loss_from_two_views(method):
    seed_everything(0)
    model = build_model(replace(TINY, method=method, queue_size=64)).train()
    x1, x2 = torch.rand(4, 1, 28, 28), torch.rand(4, 1, 28, 28)
    h, z = model(x1)  # evaluation: (h, z)
    assert h.shape == (4, 16) and z.shape == (4, 8)
    loss, z1, z2 = model(x1, x2, temperature=0.5)  # training: the step's loss
    assert loss.dim() == 0 and z1.shape == z2.shape == (4, 8)
    loss.backward()
    model.after_step()
    assert isinstance(model.trains_in_parallel, bool)


def test_the_simclr_model_trains_on_nt_xent_and_positives_only_on_its_numerator():
    seed_everything(0)
    simclr = build_simclr("conv", 4, 16, 8)
    positives = PositivesOnly(simclr.encoder, simclr.head)
    x1, x2 = torch.rand(4, 1, 28, 28), torch.rand(4, 1, 28, 28)
    loss, z1, z2 = simclr(x1, x2, temperature=0.5)
    _, z = simclr(torch.cat([x1, x2]))
    assert torch.equal(torch.cat([z1, z2]), z)
    assert loss.item() == pytest.approx(nt_xent(z[:4], z[4:], 0.5).item())
    assert positives(x1, x2, temperature=0.5)[0].item() == pytest.approx(
        positives_only_loss(z[:4], z[4:], 0.5).item()
    )
    assert list(positives.state_dict()) == list(simclr.state_dict())  # cached runs still load


class Barlowish(nn.Module):
    """A method the loop has never heard of: z1 and z2 pulled together, a post-step counter."""

    trains_in_parallel = False

    def __init__(self) -> None:
        super().__init__()
        self.inner = build_simclr("conv", 4, 16, 8)
        self.steps = 0

    def forward(self, x1, x2=None, temperature=0.5):
        if x2 is None:
            return self.inner(x1)
        _, z = self.inner(torch.cat([x1, x2]))
        z1, z2 = z[: len(x1)], z[len(x1) :]
        return (z1 - z2).pow(2).mean(), z1, z2

    def after_step(self):
        self.steps += 1


def test_a_new_method_trains_in_the_loop_without_changing_it(images):
    seed_everything(0)
    model = Barlowish()
    history = train_simclr(model, images, TINY, progress=False)
    steps = len(images) // TINY.batch_size
    assert model.steps == TINY.epochs * steps  # after_step after every optimizer step
    assert len(history.loss) == TINY.epochs and all(v >= 0 for v in history.loss)


# --- BYOL and Barlow Twins: no negatives, two other ways to avoid collapse ---------------------


def test_normalized_mse_is_two_minus_twice_the_cosine():
    g = torch.Generator().manual_seed(3)
    p, z = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    by_hand = ((F.normalize(p, dim=1) - F.normalize(z, dim=1)) ** 2).sum(dim=1).mean()
    assert normalized_mse(p, z).item() == pytest.approx(by_hand.item(), rel=1e-6)
    assert normalized_mse(p, p).item() == pytest.approx(0.0, abs=1e-6)
    assert normalized_mse(p, -p).item() == pytest.approx(4.0)


def test_byol_predicts_the_target_of_the_other_view_and_moves_the_target_by_momentum():
    seed_everything(0)
    model = BYOL(build_simclr("conv", 4, 16, 8), momentum=0.75).train()
    x1, x2 = torch.rand(4, 1, 28, 28), torch.rand(4, 1, 28, 28)
    target = copy.deepcopy(model.target)  # the same batch statistics, in train mode
    loss, z1, z2 = model(x1, x2, temperature=0.5)
    p = model.predictor(torch.cat([z1, z2]))
    expected = normalized_mse(p, target(torch.cat([x2, x1]))[1])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert all(q.grad is None for q in model.target.parameters())  # the target: no gradient
    assert all(q.grad is not None for q in model.predictor.parameters())
    assert_after_step_moves_by_momentum(model, model.target, 0.75)


def barlow_twins_by_loops(z1, z2, weight):
    """Zbontar et al. (2021), eq. 1 and 2, one entry at a time."""
    n, d = z1.shape
    a = (z1 - z1.mean(0)) / z1.std(0, unbiased=False)
    b = (z2 - z2.mean(0)) / z2.std(0, unbiased=False)
    total = 0.0
    for i in range(d):
        for j in range(d):
            c = sum(a[k, i] * b[k, j] for k in range(n)) / n
            total += (1 - c) ** 2 if i == j else weight * c**2
    return total


@pytest.mark.parametrize("n, d, weight", [(8, 3, 5e-3), (16, 5, 0.5), (4, 2, 0.0)])
def test_barlow_twins_loss_is_the_papers_formula(n, d, weight):
    g = torch.Generator().manual_seed(n + d)
    z1, z2 = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    expected = barlow_twins_by_loops(z1.double(), z2.double(), weight)
    assert barlow_twins_loss(z1, z2, weight).item() == pytest.approx(float(expected), rel=1e-3)


def test_barlow_twins_punishes_a_collapsed_z_and_not_decorrelated_agreeing_views():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(512, 4, generator=g)
    z = torch.linalg.qr(z - z.mean(0))[0] * 512**0.5  # orthogonal columns: decorrelated dims
    assert barlow_twins_loss(z, z, 1.0).item() == pytest.approx(0.0, abs=1e-2)
    one_direction = torch.randn(512, 1, generator=g).repeat(1, 4)  # every dimension the same
    assert barlow_twins_loss(one_direction, one_direction, 1.0).item() == pytest.approx(
        12.0, rel=1e-3
    )
    with pytest.raises(ValueError, match="N >= 2"):
        cross_correlation(z[:1], z[:1])
    with pytest.raises(ValueError, match="redundancy_weight"):
        barlow_twins_loss(z, z, -1.0)


def test_barlow_twins_matches_lightly():
    loss = pytest.importorskip("lightly.loss", reason="lightly: make bench installs it")
    g = torch.Generator().manual_seed(5)
    z1, z2 = torch.randn(32, 6, generator=g), torch.randn(32, 6, generator=g)
    theirs = loss.BarlowTwinsLoss(lambda_param=5e-3, gather_distributed=False)(z1, z2)
    assert barlow_twins_loss(z1, z2, 5e-3).item() == pytest.approx(theirs.item(), rel=1e-3)


def test_byol_and_barlow_twins_runs_train_and_reload(images, tmp_path):
    for method, kind in (("byol", BYOL), ("barlow_twins", BarlowTwins)):
        path = tmp_path / method / "checkpoint.pt"
        config = replace(TINY, method=method, redundancy_weight=0.02)
        model, history = train(images, config, checkpoint_path=path)
        assert isinstance(model, kind) and all(torch.isfinite(torch.tensor(history.loss)))
        reloaded = load_model(path)
        assert torch.equal(embed(reloaded, images[:5]), embed(model, images[:5]))
    assert isinstance(load_model(tmp_path / "barlow_twins" / "checkpoint.pt"), BarlowTwins)
    assert load_model(tmp_path / "barlow_twins" / "checkpoint.pt").redundancy_weight == 0.02


def test_normalized_std_is_zero_for_one_point_and_about_one_over_root_d_when_spread():
    g = torch.Generator().manual_seed(0)
    assert normalized_std(torch.ones(100, 16) * 3) == pytest.approx(0.0, abs=1e-6)
    spread = normalized_std(torch.randn(20000, 16, generator=g))
    assert spread == pytest.approx(16**-0.5, rel=0.02)
    narrow = torch.ones(100, 16) + 0.01 * torch.randn(100, 16, generator=g)  # near one point
    assert 0 < normalized_std(narrow) < 0.01 < spread
    with pytest.raises(ValueError, match="M >= 2"):
        normalized_std(torch.ones(1, 4))
