"""The training loop: exact repeats, checkpoints, resuming and the run cache."""

import json

import pytest
import torch
from torch import nn

from simclr_teach import checkpoint as ckpt
from simclr_teach import train as train_module
from simclr_teach.augment import BatchAugment
from simclr_teach.checkpoint import load_checkpoint, save_checkpoint
from simclr_teach.data import REPO_ROOT, embedded_mnist
from simclr_teach.loss import nt_xent
from simclr_teach.methods import PositivesOnly
from simclr_teach.model import SimCLR, preprocess
from simclr_teach.schedule import lr_at
from simclr_teach.train import (
    History,
    TrainConfig,
    build_model,
    load_model,
    load_or_train,
    make_optimizer,
    train_simclr,
)
from simclr_teach.utils import seed_everything
from tests.support import interrupt_after, small_config

TINY = small_config(epochs=3)


@pytest.fixture(scope="module")
def images():
    return embedded_mnist().train_images[:96]


def fresh_model(config=TINY):
    seed_everything(config.seed)
    return build_model(config)


def run(images, config=TINY, **kwargs):
    model = fresh_model(config)
    return model, train_simclr(model, images, config, progress=False, **kwargs)


def assert_same_weights(a, b):
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name


def test_seeded_run_is_bit_identical(images):
    (m1, h1), (m2, h2) = run(images), run(images)
    assert h1.loss == h2.loss and h1.top1 == h2.top1
    assert_same_weights(m1, m2)
    assert len(h1.epoch) == 3 and all(torch.isfinite(torch.tensor(h1.loss)))


NOTEBOOK_04 = REPO_ROOT / "notebooks" / "04_training_on_mnist.ipynb"
LOOP_MARKER = "# the hand-written training loop"


@pytest.fixture(scope="module")
def train_by_hand():
    """``train_by_hand`` as notebook 04 defines it: its cell run with the notebook's imports."""
    cells = json.loads(NOTEBOOK_04.read_text(encoding="utf-8"))["cells"]
    sources = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    found = [source for source in sources if source.startswith(LOOP_MARKER)]
    assert len(found) == 1, f"expected one cell of 04 starting with {LOOP_MARKER!r}"
    namespace = {
        "torch": torch,
        "BatchAugment": BatchAugment,
        "lr_at": lr_at,
        "make_optimizer": make_optimizer,
        "nt_xent": nt_xent,
        "preprocess": preprocess,
    }
    exec(compile(found[0], f"{NOTEBOOK_04.name}: hand-written loop", "exec"), namespace)
    return namespace["train_by_hand"]


def test_train_simclr_is_the_hand_written_loop_of_notebook_04(images, train_by_hand):
    """04 asserts this for one epoch; two epochs also cross the warm-up and the reshuffle."""
    config = TrainConfig(**{**TINY.__dict__, "epochs": 2, "amp": False})
    by_hand = fresh_model(config)
    losses = train_by_hand(by_hand, images, config, epochs=2)
    packaged, history = run(images, config)
    assert_same_weights(by_hand, packaged)
    steps = len(images) // config.batch_size
    by_epoch = [sum(losses[e * steps : (e + 1) * steps]) / steps for e in range(2)]
    assert history.loss == pytest.approx(by_epoch, abs=1e-6)


def test_other_seed_gives_other_run(images):
    _, h1 = run(images)
    _, h2 = run(images, TrainConfig(**{**TINY.__dict__, "seed": TINY.seed + 1}))  # any env seed
    assert h1.loss != h2.loss


def test_checkpoint_round_trip(images, tmp_path):
    model, history = run(images)
    path = save_checkpoint(tmp_path / "run" / "checkpoint.pt", model, TINY, history)
    loaded = load_model(path)
    assert_same_weights(model, loaded)
    x = torch.rand(5, 1, 28, 28)
    model.eval()
    assert torch.equal(model(x)[1], loaded(x)[1]) and not loaded.training
    state = load_checkpoint(path)
    assert TrainConfig.from_dict(state["config"]) == TINY
    assert History.from_dict(state["history"]) == history
    assert [p.name for p in path.parent.iterdir()] == ["checkpoint.pt"]  # no temporary file left


def test_failed_write_keeps_the_old_checkpoint(images, tmp_path, monkeypatch):
    model, history = run(images, TrainConfig(**{**TINY.__dict__, "epochs": 1}))
    path = save_checkpoint(tmp_path / "checkpoint.pt", model, TINY, history)
    before = path.read_bytes()

    def crash(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, TINY, history)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_checkpoint_whose_weights_do_not_match_its_config(images, tmp_path):
    model, history = run(images, TrainConfig(**{**TINY.__dict__, "epochs": 1}))
    wider = TrainConfig(**{**TINY.__dict__, "width": 8})
    path = save_checkpoint(tmp_path / "checkpoint.pt", model, wider, history)
    with pytest.raises(ValueError, match="do not match its config") as error:
        load_model(path)
    assert str(error.value).startswith(f"the weights in {path} do not match its config")
    assert "encoder" in str(error.value)  # names the first tensor that differs


def test_full_disk_names_the_file_being_written(images, tmp_path, monkeypatch):
    import os

    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full (Linux)")
    model, history = run(images, TrainConfig(**{**TINY.__dict__, "epochs": 1}))
    real = torch.save

    def to_a_full_disk(obj, f):  # torch turns the OSError into a RuntimeError about positions
        with open("/dev/full", "wb") as full:
            real(obj, full)

    monkeypatch.setattr(ckpt.torch, "save", to_a_full_disk)
    path = tmp_path / "checkpoint.pt"
    with pytest.raises(OSError, match="No space left on device") as error:
        save_checkpoint(path, model, TINY, history)
    assert str(error.value).startswith(f"cannot write {path} (No space left on device)")
    assert list(tmp_path.iterdir()) == []


def test_missing_or_foreign_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m simclr_teach train"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a simclr_teach checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "garbage.pt")


def test_interrupted_then_resumed_equals_uninterrupted(images, tmp_path):
    straight, straight_history = run(images)
    path = tmp_path / "checkpoint.pt"
    with pytest.raises(KeyboardInterrupt):
        run(images, checkpoint_path=path, on_epoch_end=interrupt_after(2))
    assert len(load_checkpoint(path)["history"]["epoch"]) == 2
    resumed, resumed_history = run(images, checkpoint_path=path)  # a new process would do this
    assert resumed_history.loss == straight_history.loss
    assert_same_weights(straight, resumed)


def test_checkpoint_holds_the_grad_scaler_state(images, tmp_path):
    model, history = run(images, TrainConfig(**{**TINY.__dict__, "epochs": 1}))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=8.0, growth_interval=1)
    scaler.scale(model(torch.rand(4, 1, 28, 28))[1].sum()).backward()
    scaler.step(optimizer)
    scaler.update()  # finite gradients: scale 8 -> 16
    path = save_checkpoint(
        tmp_path / "checkpoint.pt", model, TINY, history, optimizer, scaler=scaler
    )
    assert load_checkpoint(path)["scaler"] == scaler.state_dict() and scaler.get_scale() == 16.0
    path = save_checkpoint(
        tmp_path / "bf16.pt",
        model,
        TINY,
        history,
        scaler=torch.amp.GradScaler("cpu", enabled=False),
    )
    assert load_checkpoint(path)["scaler"] is None  # bf16 and float32 runs have none


def test_float16_run_resumes_with_its_loss_scale(images, tmp_path, monkeypatch):
    """A resumed float16 run goes on from the stored loss scale, not from a fresh one."""
    scalers = []

    class Recorded(torch.amp.GradScaler):  # scale x2 every finite step
        def __init__(self, device, enabled=True):
            super().__init__(device, init_scale=1.0, growth_interval=1, enabled=enabled)
            scalers.append(self)

    monkeypatch.setattr(torch.amp, "GradScaler", Recorded)
    monkeypatch.setattr(
        train_module,
        "autocast_dtype",
        lambda device, enabled=True: torch.float16 if enabled else None,
    )
    config = TrainConfig(**{**TINY.__dict__, "amp": True})  # also under PRECISION=float32
    straight, _ = run(images, config)
    assert scalers[-1].is_enabled() and scalers[-1].get_scale() > 1.0
    final = scalers[-1].state_dict()
    path = tmp_path / "checkpoint.pt"
    with pytest.raises(KeyboardInterrupt):
        run(images, config, checkpoint_path=path, on_epoch_end=interrupt_after(2))
    resumed, _ = run(images, config, checkpoint_path=path)
    assert scalers[-1].state_dict() == final
    assert_same_weights(straight, resumed)


def test_resume_with_another_config_refuses(images, tmp_path):
    path = tmp_path / "checkpoint.pt"
    run(images, TrainConfig(**{**TINY.__dict__, "epochs": 1}), checkpoint_path=path)
    stored = TINY.temperature
    with pytest.raises(
        ValueError,
        match=rf"another config \(temperature: {stored} stored, 0.1 "
        r"now\); pass the stored values",
    ):
        run(
            images,
            TrainConfig(**{**TINY.__dict__, "epochs": 1, "temperature": 0.1}),
            checkpoint_path=path,
        )
    rotation = TrainConfig(**{**TINY.__dict__, "epochs": 1}).augment.__class__(rotation=3.0)
    with pytest.raises(ValueError, match=r"augment.rotation: 15.0 stored, 3.0 now"):
        run(
            images,
            TrainConfig(**{**TINY.__dict__, "epochs": 1, "augment": rotation}),
            checkpoint_path=path,
        )


def test_checkpoint_records_the_training_data_and_resume_checks_it(images, tmp_path):
    from simclr_teach.data import fingerprint

    path = tmp_path / "checkpoint.pt"
    config = TrainConfig(**{**TINY.__dict__, "epochs": 1})
    run(images, config, checkpoint_path=path, data_name="embedded-5k")
    assert load_checkpoint(path)["data"] == {
        "name": "embedded-5k",
        "size": 96,
        "fingerprint": fingerprint(images),
    }
    others = embedded_mnist().train_images[96:192]  # e.g. data="auto" once full MNIST is there
    with pytest.raises(
        ValueError,
        match=r"trained on embedded-5k \(96 digits, fingerprint "
        r"\w{12}\), but this run would continue on mnist-70k .* "
        r"resume with data='embedded' \(--data embedded\)",
    ):
        run(others, config, checkpoint_path=path, data_name="mnist-70k")


def test_checkpoint_without_data_record_still_loads(images, tmp_path):
    model, history = run(images, TrainConfig(**{**TINY.__dict__, "epochs": 1}))
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, model, TINY, history)
    state = torch.load(path, weights_only=True)
    del state["data"]  # as written before the data was recorded
    torch.save(state, path)
    assert load_checkpoint(path)["data"] is None


def test_batch_larger_than_the_data_is_an_error(images):
    with pytest.raises(
        ValueError,
        match=r"batch_size 200 is larger than the 96 training digits; "
        r"use a batch size of at most 96",
    ):
        run(images, TrainConfig(**{**TINY.__dict__, "batch_size": 200}))


@pytest.mark.parametrize("model_class", [SimCLR, PositivesOnly])
def test_non_finite_output_stops_with_a_clear_error(images, model_class):
    """NT-Xent refuses NaN projections itself; a loss that does not is checked after it."""

    class Broken(nn.Module):
        out_dim = 8

        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(1))

        def forward(self, x):
            return x.flatten(1)[:, :8] * self.w * float("nan")

    with pytest.raises(
        FloatingPointError,
        match=r"diverged: .* NaN or inf at epoch 1, step 1; "
        r"lower the learning rate \(lr=",
    ):
        train_simclr(model_class(Broken(), nn.Identity()), images, TINY, progress=False)


def test_load_or_train_reuses_the_cached_run(tmp_path, monkeypatch):
    config = TrainConfig(**{**TINY.__dict__, "epochs": 1, "batch_size": 256})
    model, history = load_or_train(config, cache_dir=tmp_path, progress=False)
    assert history.knn[0] is not None and 0.0 <= history.knn[0] <= 1.0
    assert len(list(tmp_path.glob("*/checkpoint.pt"))) == 1

    def must_not_train(*args, **kwargs):
        raise AssertionError("trained again although the run was cached")

    monkeypatch.setattr(train_module, "train_simclr", must_not_train)
    again, again_history = load_or_train(config, cache_dir=tmp_path, progress=False)
    assert_same_weights(model, again)
    assert again_history == history


def test_numpy_numbers_become_python_numbers_the_checkpoint_can_hold():
    import numpy as np

    config = TrainConfig(lr=np.float64(0.006), seed=np.int64(1), temperature=np.float32(0.25))
    assert (type(config.lr), type(config.seed), type(config.temperature)) == (float, int, float)
    assert config.key("embedded-5k") == TrainConfig(lr=0.006, seed=1, temperature=0.25).key(
        "embedded-5k"
    )


def test_initial_model_is_where_load_or_train_starts(tmp_path, monkeypatch):
    """08 scores ``initial_model`` as a run's epoch 0: it must be the model the run trains."""
    config = TrainConfig(**{**TINY.__dict__, "epochs": 1, "batch_size": 256})
    started = []
    real = train_module.train_simclr

    def recording(model, *args, **kwargs):
        started.append({k: v.clone() for k, v in model.state_dict().items()})
        return real(model, *args, **kwargs)

    monkeypatch.setattr(train_module, "train_simclr", recording)
    _, history = load_or_train(config, cache_dir=tmp_path, progress=False)
    start = train_module.initial_model(config).state_dict()
    assert len(started) == 1 and started[0].keys() == start.keys()
    assert all(torch.equal(started[0][k], start[k]) for k in start)
    other = train_module.initial_model(replace_seed(config, 1)).state_dict()
    assert not torch.equal(other["encoder.net.1.0.weight"], start["encoder.net.1.0.weight"])
    assert history.std_z[0] is not None and 0.0 <= history.std_z[0] <= 1.0


def replace_seed(config: TrainConfig, seed: int) -> TrainConfig:
    return TrainConfig(**{**config.__dict__, "seed": seed})


def test_load_or_train_refuses_a_folder_another_process_trains(tmp_path, monkeypatch):
    from simclr_teach.utils import locked

    def must_not_train(*args, **kwargs):
        raise AssertionError("trained although another process holds the folder")

    monkeypatch.setattr(train_module, "train_simclr", must_not_train)
    folder = tmp_path / TINY.key("embedded-5k")
    folder.mkdir()
    with locked(folder, wait=False):  # as another process training this config would
        with pytest.raises(BlockingIOError, match=f"{folder} is being trained by another process"):
            load_or_train(TINY, cache_dir=tmp_path, progress=False)


@pytest.mark.parametrize(
    "field,value",
    [
        ("weight_decay", float("nan")),
        ("weight_decay", -1.0),
        ("lr", float("nan")),
        ("lr", float("inf")),
        ("temperature", float("nan")),
        ("strength", float("nan")),
        ("data", "cifar"),
        ("seed", 2**40),
        ("proj_hidden", 0),
        ("proj_hidden", -5),
        ("proj_dim", 0),
        ("proj_dim", -1),
    ],
)
def test_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=rf"invalid TrainConfig field\(s\) \['{field}'\]"):
        TrainConfig(**{field: value})


def test_config_validation_and_schedule():
    with pytest.raises(ValueError, match="temperature"):
        TrainConfig(temperature=0)
    with pytest.raises(ValueError, match="unknown TrainConfig fields"):
        TrainConfig.from_dict({"epochz": 3})
    assert TINY.key("embedded-5k") != TINY.key("mnist-70k")
    lrs = [lr_at(s, 100, 10, 1.0) for s in range(100)]
    assert lrs[9] == 1.0 and lrs[0] == pytest.approx(0.1) and lrs[-1] < 0.01
    assert all(
        a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False)
    )  # cosine decays monotonically


def test_monitor_scores_first_last_and_every_few_epochs():
    every_epoch = [train_module.monitored(e, 30) for e in range(30)]
    assert all(every_epoch)  # up to MONITOR_POINTS epochs: every one
    chosen = [e + 1 for e in range(90) if train_module.monitored(e, 90)]
    assert chosen[:3] == [1, 3, 6] and chosen[-1] == 90 and len(chosen) == 31
    assert [e + 1 for e in range(60) if train_module.monitored(e, 60)][:3] == [1, 2, 4]
    assert all(train_module.monitored(e, 90, points=90) for e in range(90))  # as before 12-05


def test_unmonitored_epochs_are_none_and_cost_no_embedding(images, monkeypatch):
    calls = []
    real = train_module.monitor_scores

    def counting(model, monitor):
        calls.append(monitor is not None)
        return real(model, monitor)

    monkeypatch.setattr(train_module, "monitor_scores", counting)
    monitor = (images[:64], torch.arange(64) % 10, images[64:], torch.arange(32) % 10)
    _, history = run(images, monitor=monitor, monitor_points=1)  # 3 epochs: the first, the last
    assert calls == [True, False, True]
    assert history.knn[1] is None and history.rank_z[1] is None
    assert history.knn[0] is not None and history.knn[2] is not None
    with pytest.raises(ValueError, match="monitor_points must be at least 1"):
        run(images, monitor=monitor, monitor_points=0)


def test_stored_config_without_pool_first_builds_the_encoder_it_trained(images, tmp_path):
    old = TrainConfig(**{**TINY.__dict__, "epochs": 1, "pool_first": False})
    model, history = run(images, old)
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, model, old, history)
    state = torch.load(path, weights_only=True)
    del state["config"]["pool_first"]  # a checkpoint written before the field existed
    torch.save(state, path)
    loaded = load_model(path)
    pools = [type(m).__name__ for m in loaded.encoder.net]
    assert pools.count("MaxPool2d") == 2  # conv, BN, ReLU, then pool: the old order
    x = preprocess(images[:8])
    assert torch.allclose(loaded(x)[0], model.eval()(x)[0])


def test_pool_first_enters_the_key_only_when_on():
    # the runs cached before the field (pool_first=False) keep their names; the new encoder does not
    # share them
    assert TINY.pool_first
    legacy = TrainConfig(**{**TINY.__dict__, "pool_first": False})
    assert legacy.key("embedded-5k") != TINY.key("embedded-5k")
    # LAB_BASE (pool_first=False) still finds the committed sweep: test_methods checks its key
