"""The SimCLR training loop: a plain PyTorch loop with views, loss, optimizer and schedule.

Taught in 04_training_on_mnist. ``TrainConfig`` defaults are the course's default run.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from simclr_teach import distributed
from simclr_teach.augment import AugmentParams, BatchAugment
from simclr_teach.checkpoint import (
    CHECKPOINT_FORMAT,
    check_run_folder,
    load_checkpoint,
    save_checkpoint,
)
from simclr_teach.data import SOURCES, describe_training_data, load_mnist, runs_dir
from simclr_teach.evaluate import embed, embed_both, knn_accuracy, uniformity
from simclr_teach.loss import NonFiniteError, contrastive_accuracy
from simclr_teach.methods import (
    METHODS,
    build_method,
    effective_rank,
    normalized_std,
    queue_holds_a_step,
)
from simclr_teach.model import HEADS, build_simclr, preprocess
from simclr_teach.schedule import lr_at
from simclr_teach.shortcut import MAX_BITS, shared_bits
from simclr_teach.utils import (
    MAX_SEED,
    autocast_dtype,
    default_amp,
    default_seed,
    locked,
    pick_device,
    seed_everything,
)

# The values a TrainConfig field can take, where they are a short list (also the CLI's choices).
CHOICES = {
    "data": ("auto", "embedded", "mnist"),
    "encoder": ("conv", "mlp"),
    "optimizer": ("adamw", "sgd"),
    "lr_scaling": tuple(distributed.LR_SCALING_RULES),
    "head": HEADS,
    "method": METHODS,
}

# Fields added after the first runs were cached, with the value that reproduces a run from before
# them: at that value a field stays out of the run's cache key, so every run cached before it (and
# the keys in notebooks/results) keeps its name, and a stored config that lacks the field reads as
# that value. Notebook 08 added the first five; pool_first (2026-12-05) changed the default run;
# redundancy_weight (2026-12-06) came with Barlow Twins.
LATER_FIELDS: dict[str, Any] = {
    "head": "mlp",
    "method": "simclr",
    "queue_size": 4096,
    "momentum": 0.99,
    "stop_gradient": True,
    "pool_first": False,
    "redundancy_weight": 5e-3,
}


@dataclass
class TrainConfig:
    """Everything that defines a training run; its hash names the run's cache folder."""

    data: str = "auto"  # load_mnist source: full MNIST if present, else the embedded 5k
    encoder: str = "conv"  # "conv" (small CNN) or "mlp" (the blog post's MLP, done right)
    width: int = 32  # encoder size knob: h has 4 * width features
    # ConvEncoder: max-pool before BatchNorm and ReLU in the first two blocks (a fifth faster a
    # step on CPU); False is the encoder of runs before 2026-12-05 (model.ConvEncoder)
    pool_first: bool = True
    proj_hidden: int = 128  # projection head hidden width
    proj_dim: int = 64  # size of z; the paper finds the size matters little
    # epochs, batch_size, temperature and lr: the recipe chosen on the time-accuracy frontier of a
    # 2-core CPU, on training digits (benchmarks/frontier.py, benchmarks/results/summary.md, 04);
    # 60 epochs of the pool-first encoder match 90 of the one before in half the time
    # (benchmarks/default_run.py)
    # epochs: kNN keeps improving long after the loss flattens
    epochs: int = 60  # passes over the training digits
    batch_size: int = 128  # N pairs per step: 2N - 2 = 254 negatives per anchor
    # temperature: a lower tau makes the softmax sharper and weights the hardest negatives most
    temperature: float = 0.5  # tau
    optimizer: str = "adamw"  # "adamw" (robust at small batch) or "sgd" (momentum 0.9)
    lr: float = 4e-3  # peak learning rate after warm-up
    weight_decay: float = 1e-4  # decoupled weight decay
    warmup_epochs: int = 2  # linear warm-up, then cosine decay to 0 (paper, appendix B.1)
    strength: float = 1.0  # scales every augmentation (0 = identity views)
    augment: AugmentParams = field(default_factory=AugmentParams)  # the knobs at strength 1
    shortcut_bits: int = 0  # random bits shared by both views, a shortcut (06 lab); 0 = off
    # model init, shuffling and augmentations; default 0, or $SIMCLR_TEACH_SEED (utils)
    seed: int = field(default_factory=default_seed)
    device: str = "auto"  # cuda, then mps, then cpu
    # mixed precision: bf16/fp16 on CUDA, bf16 on CPUs with native bf16; default on, off when
    # $SIMCLR_TEACH_PRECISION=float32 (utils.default_amp: CI's second machine)
    amp: bool = field(default_factory=default_amp)
    # Under torchrun with K processes (07_scaling_out) batch_size is per process: global batch K N.
    sync_bn: bool = False  # BatchNorm statistics of the global batch (GPUs only), or per rank
    lr_scaling: str = "sqrt"  # peak lr x sqrt(K) ("sqrt", Adam), x K ("linear") or x 1 ("none")
    # What SimCLR needs and what came after (08_what_simclr_needs, simclr_teach/methods.py):
    head: str = "mlp"  # projection head: "mlp" (paper), "linear" or "none" (z = h)
    method: str = "simclr"  # a name of methods.METHODS: which model and loss train
    queue_size: int = 4096  # MoCo: keys in the queue, the negatives of every query
    momentum: float = 0.99  # MoCo: key network <- m key network + (1 - m) online network
    stop_gradient: bool = True  # SimSiam: no gradient into the target branch (False collapses)
    redundancy_weight: float = 5e-3  # Barlow Twins: lambda, the weight of decorrelation

    def __post_init__(self) -> None:
        for f in fields(self):  # numpy scalars (a pandas row's values) -> Python numbers, so a
            value = getattr(self, f.name)  # checkpoint holds plain values torch.load can read
            if type(value).__module__ == "numpy" and hasattr(value, "item"):
                setattr(self, f.name, value.item())
        if isinstance(self.augment, dict):
            self.augment = AugmentParams(**self.augment)
        finite = {
            name: math.isfinite(getattr(self, name))
            for name in ("temperature", "lr", "weight_decay", "strength")
        }  # NaN fails all
        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 2,
            "temperature": finite["temperature"] and self.temperature > 0,
            "lr": finite["lr"] and self.lr > 0,
            "width": self.width >= 1,
            "proj_hidden": self.proj_hidden >= 1,  # a layer of 0 units has no BatchNorm to norm
            "proj_dim": self.proj_dim >= 1,  # z of size 0 has no direction for the loss
            "weight_decay": finite["weight_decay"] and self.weight_decay >= 0,
            "warmup_epochs": self.warmup_epochs >= 0,
            "strength": finite["strength"] and self.strength >= 0,
            **{name: getattr(self, name) in values for name, values in CHOICES.items()},
            "shortcut_bits": 0 <= self.shortcut_bits <= MAX_BITS,
            "seed": 0 <= self.seed <= MAX_SEED,
            "queue_size": queue_holds_a_step(self.method, self.queue_size, self.batch_size),
            "momentum": 0.0 <= self.momentum <= 1.0,
            "redundancy_weight": math.isfinite(self.redundancy_weight)
            and self.redundancy_weight >= 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(
                f"invalid TrainConfig field(s) {bad}: {[getattr(self, b) for b in bad]}; "
                "see the field comments in simclr_teach/train.py for valid values"
            )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Inverse of ``dataclasses.asdict``; unknown keys are an error that names them.

        A stored config that predates a field of ``LATER_FIELDS`` gets the value that
        reproduces its run (an encoder of 2026-11 stays conv, BN, ReLU, pool), not today's
        default.
        """
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {sorted(unknown)}")
        return cls(**{**LATER_FIELDS, **values})

    @classmethod
    def gpu_preset(cls, **overrides: Any) -> TrainConfig:
        """A bigger run for a GPU and full MNIST (set ``data="embedded"`` to keep the subset)."""
        values = dict(data="mnist", width=64, epochs=100, batch_size=1024, lr=4e-3, warmup_epochs=5)
        return cls(**{**values, **overrides})

    def key(self, data_name: str) -> str:
        """Short hash of this config and the data it trains on: the run's cache folder name."""
        values = asdict(self)
        for name, before in LATER_FIELDS.items():
            if values[name] == before:
                del values[name]
        payload = json.dumps(
            {"config": values, "data": data_name, "format": CHECKPOINT_FORMAT}, sort_keys=True
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


@dataclass
class History:
    """Per-epoch record of a run (lists of equal length, one entry per finished epoch)."""

    epoch: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)  # the method's mean loss over the epoch's steps
    top1: list[float] = field(default_factory=list)  # contrastive top-1 accuracy, chance 1/(2N-1)
    lr: list[float] = field(default_factory=list)  # learning rate at the epoch's last step
    knn: list[float | None] = field(default_factory=list)  # kNN monitor (None: off, or not
    # a monitored epoch: train.monitored)
    # collapse, on the monitor's validation digits (None if off): methods.effective_rank of h
    # and of z, and evaluate.uniformity of z (Wang & Isola, 2020; 0 = all on one point)
    rank_h: list[float | None] = field(default_factory=list)
    rank_z: list[float | None] = field(default_factory=list)
    uniformity: list[float | None] = field(default_factory=list)
    # methods.normalized_std of z (Chen & He, 2021): 0 = one point, about 1/sqrt(D) = spread
    std_z: list[float | None] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)  # cumulative training wall time
    images_per_second: list[float] = field(default_factory=list)  # augmented views / s

    def to_dict(self) -> dict[str, list]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, list]) -> History:
        """Inverse of ``to_dict``; a field that an older checkpoint lacks is None per epoch."""
        epochs = len(values.get("epoch", []))
        return cls(
            **{
                f.name: list(values[f.name]) if f.name in values else [None] * epochs
                for f in fields(cls)
            }
        )


def build_model(config: TrainConfig) -> nn.Module:
    """The model a config describes (weights from torch's current RNG state).

    The model of ``config.method`` around a ``SimCLR`` encoder and head
    (``methods.build_method``); all return (h, z) from ``forward(x)`` and their training loss
    from ``forward(x1, x2, temperature=tau)``.
    """
    simclr = build_simclr(
        config.encoder,
        config.width,
        config.proj_hidden,
        config.proj_dim,
        config.head,
        config.pool_first,
    )
    return build_method(
        config.method,
        simclr,
        config.queue_size,
        config.momentum,
        config.stop_gradient,
        config.redundancy_weight,
    )


def initial_model(config: TrainConfig) -> nn.Module:
    """The model a run of ``config`` starts from: ``build_model`` after ``seed_everything(seed)``.

    ``load_or_train`` trains exactly this model, so its ``monitor_scores`` are the run's epoch 0
    (08 draws the collapse curves from there).
    """
    seed_everything(config.seed)  # model initialisation
    return build_model(config)


def load_model(path: str | Path) -> nn.Module:
    """The trained ``SimCLR`` module stored in a checkpoint, in eval mode, on the CPU."""
    state = load_checkpoint(path)
    model = build_model(TrainConfig.from_dict(state["config"]))
    mismatch = _weight_mismatch(state["model"], model.state_dict())
    if mismatch:
        raise ValueError(
            f"the weights in {path} do not match its config ({mismatch}); pass a checkpoint as "
            "`python -m simclr_teach train` wrote it, or train again"
        )
    model.load_state_dict(state["model"])
    return model.eval()


def _weight_mismatch(stored: dict[str, Tensor], wanted: dict[str, Tensor]) -> str:
    """The first tensor where a checkpoint's weights and its config's model differ, or ""."""
    for name, tensor in wanted.items():
        if name not in stored:
            return f"{name} is missing"
        if stored[name].shape != tensor.shape:
            return (
                f"{name} has shape {tuple(stored[name].shape)}, "
                f"the config's model {tuple(tensor.shape)}"
            )
    extra = sorted(set(stored) - set(wanted))
    return f"{extra[0]} is not in the config's model" if extra else ""


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW or SGD; BatchNorm and bias parameters get no weight decay (common SimCLR practice)."""
    trained = [p for p in model.parameters() if p.requires_grad]  # not a frozen momentum network
    decay = [p for p in trained if p.ndim > 1]
    no_decay = [p for p in trained if p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=0.9)
    return torch.optim.AdamW(groups, lr=config.lr)


class MonitorDigits(NamedTuple):
    """The kNN monitor's digits: the query digits are classified by the bank's (uint8, labels)."""

    bank_images: Tensor  # (B, 28, 28)
    bank_labels: Tensor  # (B,)
    query_images: Tensor  # (Q, 28, 28)
    query_labels: Tensor  # (Q,)

    @classmethod
    def split(cls, images: Tensor, labels: Tensor) -> MonitorDigits:
        """``validation_split``'s digits as the queries, the other training digits as the bank."""
        val = validation_split(labels)
        return cls(images[~val], labels[~val], images[val], labels[val])


def config_differences(
    stored: dict[str, Any], given: dict[str, Any], prefix: str = ""
) -> list[str]:
    """The fields where two ``asdict(TrainConfig)`` differ, e.g. ["lr: 0.002 stored, 0.001 now"]."""
    found = []
    for name in sorted(set(stored) | set(given)):
        a, b = stored.get(name), given.get(name)
        if isinstance(a, dict) and isinstance(b, dict):
            found += config_differences(a, b, f"{prefix}{name}.")
        elif a != b:
            found.append(f"{prefix}{name}: {a!r} stored, {b!r} now")
    return found


def _check_same_data(path: str | Path, stored: dict[str, Any] | None, now: dict[str, Any]) -> None:
    """Resume only on the digits the run started on (a checkpoint without a record is trusted)."""
    if stored is None or stored["fingerprint"] == now["fingerprint"]:
        return
    source = SOURCES.get(stored["name"], stored["name"])
    raise ValueError(
        f"{path} was trained on {stored['name']} ({stored['size']:,} digits, fingerprint "
        f"{stored['fingerprint']}), but this run would continue on {now['name']} ({now['size']:,} "
        f"digits, fingerprint {now['fingerprint']}); resume with data={source!r} "
        f"(--data {source}) or use a new --out folder"
    )


def _diverged(config: TrainConfig, epoch: int, step: int) -> FloatingPointError:
    """The error of a run whose projections became NaN or inf, with the fix."""
    return FloatingPointError(
        f"training diverged: the projections z became NaN or inf at epoch {epoch + 1}, step "
        f"{step + 1}; lower the learning rate (lr={config.lr}) or raise the temperature "
        f"(temperature={config.temperature})"
    )


def _check_batch_fits(batch_size: int, digits: int, world: int) -> None:
    """ValueError naming the largest batch that fits, when a rank has fewer digits than one step."""
    if batch_size > digits // world:
        per_process = f", {digits // world:,} per process" if world > 1 else ""
        raise ValueError(
            f"batch_size {batch_size} is larger than the {digits:,} "
            f"training digits{per_process}; use a batch size of at most "
            f"{digits // world:,} (--batch-size)"
        )


def _resume(
    path: str | Path | None,
    config: TrainConfig,
    trained_on: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    scaler: torch.amp.GradScaler,
) -> History:
    """The History so far: the checkpoint at ``path`` loaded into the run's state, or a new one.

    Loads the weights, optimizer, generator and (float16 runs) loss scale in place, so the run
    goes on exactly as if never interrupted. Refuses (ValueError, naming the differences) a
    checkpoint of another config or of other digits (``trained_on``).
    """
    if path is None or not Path(path).is_file():
        return History()
    state = load_checkpoint(path)
    stored = asdict(TrainConfig.from_dict(state["config"]))  # fields it predates at default
    differences = config_differences(stored, asdict(config))
    if differences:
        raise ValueError(
            f"{path} was trained with another config ({'; '.join(differences)}); pass the "
            "stored values to resume it, or use a new --out folder"
        )
    _check_same_data(path, state["data"], trained_on)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"])
    if state["scaler"] is not None and scaler.is_enabled():
        scaler.load_state_dict(state["scaler"])
    return History.from_dict(state["history"])


def _step_loss(
    net: nn.Module,
    x1: Tensor,
    x2: Tensor,
    config: TrainConfig,
    amp_dtype: torch.dtype | None,
    where: tuple[int, int],
) -> tuple[Tensor, Tensor, Tensor]:
    """The loss of one step, ``net(x1, x2, temperature=tau)``, under autocast when asked.

    Whatever the method, its model computes the loss of the two views itself (``model.SimCLR``
    and ``methods``); the call goes through ``forward``, so DistributedDataParallel sees it.

    Args:
        net: the model (or its DDP wrapper).
        x1, x2: the two views, float (N, 1, 28, 28) each.
        config: gives the temperature (and the fix named when the run diverges).
        amp_dtype: bfloat16 or float16 for mixed precision, None for float32.
        where: (epoch, step), 0-based, for the divergence message.

    Returns:
        (scalar loss, z1, z2), z1 and z2 the (N, D_z) projections of the two views.

    Raises:
        FloatingPointError when z holds NaN or inf (the run diverged).
    """
    with torch.autocast(
        x1.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
    ):
        try:
            loss, z1, z2 = net(x1, x2, temperature=config.temperature)
        except NonFiniteError:  # NT-Xent refuses NaN or inf projections
            raise _diverged(config, *where) from None
    if not (torch.isfinite(z1).all() and torch.isfinite(z2).all()):  # losses that do not check
        raise _diverged(config, *where)
    return loss, z1, z2


def train_one_epoch(
    net: nn.Module,
    data: Tensor,
    config: TrainConfig,
    epoch: int,
    steps: int,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    scaler: torch.amp.GradScaler,
    amp_dtype: torch.dtype | None = None,
    bar: Any = None,
) -> tuple[float, float, float]:
    """One pass over the digits: the hand-written loop of 04, in one process or under torchrun.

    Args:
        net: the model, or its DDP wrapper under torchrun; ``net(x) -> (h, z)``.
        data: float (M, 1, 28, 28) digits in [0, 1], on the training device.
        config: batch size N, temperature, schedule, augmentation and shortcut bits.
        epoch: 0-based; with ``steps`` it places each step on the learning-rate schedule.
        steps: steps per epoch, M // (K N) for K processes (the short last batch is dropped).
        optimizer: updated in place, its learning rate set every step.
        generator: the run's CPU generator: it shuffles (the same order on every rank) and, in
            one process, draws the views too (``distributed.views_generator``).
        scaler: scales float16 losses (disabled for bfloat16 and float32).
        amp_dtype: autocast dtype, None for float32.
        bar: a tqdm bar advanced every step, or None.

    Returns:
        (mean loss, mean contrastive top-1, learning rate of the last step) on this rank.

    Raises:
        FloatingPointError when the projections become NaN or inf.
    """
    world, rank, n = distributed.world_size(), distributed.rank(), config.batch_size
    peak = distributed.scaled_lr(config.lr, config.lr_scaling, world)  # config.lr in one process
    augment = BatchAugment(config.strength, config.augment)
    net.train()
    losses, accs = [], []
    order = torch.randperm(len(data), generator=generator).to(data.device)  # same on all ranks
    views_from = distributed.views_generator(generator, config.seed, epoch)
    for i in range(steps):
        lr = lr_at(epoch * steps + i, config.epochs * steps, config.warmup_epochs * steps, peak)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x = data[distributed.rank_batch(order, i, n, rank, world)]  # (N, 1, 28, 28)
        x1, x2 = augment(x, views_from), augment(x, views_from)  # two views of each digit
        x1, x2 = shared_bits(x1, x2, config.shortcut_bits, views_from)  # 0: unchanged
        loss, z1, z2 = _step_loss(net, x1, x2, config, amp_dtype, where=(epoch, i))
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        distributed.unwrapped(net).after_step()  # e.g. a momentum network's update
        losses.append(loss.item())
        accs.append(contrastive_accuracy(z1, z2))
        if bar is not None:
            bar.set_postfix(epoch=epoch + 1, loss=f"{losses[-1]:.3f}", refresh=False)
            bar.update()
    return sum(losses) / len(losses), sum(accs) / len(accs), lr


MONITOR_POINTS = 30  # the monitor scores at most about this many epochs of a run


def monitored(epoch: int, epochs: int, points: int = MONITOR_POINTS) -> bool:
    """Whether the monitor scores epoch ``epoch`` (0-based) of a run of ``epochs``.

    The first and the last epoch, and every ``ceil(epochs / points)``-th between: every epoch of
    a run up to 30 epochs, every third of the default 90, so the curve keeps its shape while a
    long run spends its time training (each score embeds 4,000 digits). ``points=epochs``
    scores every epoch (the course before 2026-12-05).
    """
    every = math.ceil(epochs / points)
    return epoch == 0 or epoch == epochs - 1 or (epoch + 1) % every == 0


def monitor_scores(model: nn.Module, monitor: MonitorDigits | None) -> dict[str, float | None]:
    """The monitor's numbers after an epoch (all None if off), on its validation digits.

    "knn": kNN accuracy of h on the query digits against the bank; "rank_h", "rank_z": the
    effective rank of h and z of the query digits; "uniformity" and "std_z"
    (``methods.normalized_std``): of their z. 08 scores an untrained model with it (epoch 0).
    """
    if monitor is None:
        return dict.fromkeys(("knn", "rank_h", "rank_z", "uniformity", "std_z"))
    bank_x, bank_y, query_x, query_y = monitor
    h, z = embed_both(model, query_x)  # (Q, D_h), (Q, D_z): one pass for both
    return {
        "knn": knn_accuracy(embed(model, bank_x), bank_y, h, query_y),
        "rank_h": effective_rank(h),
        "rank_z": effective_rank(z),
        "uniformity": uniformity(z),
        "std_z": normalized_std(z),
    }


def _record(
    history: History,
    bar: Any,
    epoch: int,
    loss: float,
    top1: float,
    lr: float,
    scores: dict[str, float | None],
    seconds: float,
    views: int,
) -> None:
    """Append a finished epoch to ``history`` (loss and top-1 as means over all ranks); show it.

    Args:
        history: extended in place.
        bar: the tqdm progress bar, which shows the epoch's numbers.
        epoch: 0-based; recorded 1-based.
        loss, top1: this rank's means over the epoch's steps.
        lr: the learning rate of the epoch's last step.
        scores: ``monitor_scores``'s numbers (None when off or not ``monitored`` this epoch).
        seconds: the epoch's training time (the kNN monitor excluded).
        views: augmented views all ranks trained on in the epoch, 2 K N per step.
    """
    history.epoch.append(epoch + 1)
    history.loss.append(distributed.mean_over_ranks(loss))
    history.top1.append(distributed.mean_over_ranks(top1))
    history.lr.append(lr)
    for name, value in scores.items():
        getattr(history, name).append(value)
    knn = next((v for v in reversed(history.knn) if v is not None), None)  # the latest score
    history.seconds.append((history.seconds[-1] if history.seconds else 0.0) + seconds)
    history.images_per_second.append(views / seconds)
    bar.set_postfix(
        epoch=epoch + 1,
        loss=f"{history.loss[-1]:.3f}",
        img_s=f"{history.images_per_second[-1]:.0f}",
        **({"knn": f"{knn:.3f}"} if knn is not None else {}),
    )


def train_simclr(
    model: nn.Module,
    images: Tensor,
    config: TrainConfig,
    progress: bool = True,
    *,
    monitor: MonitorDigits | None = None,
    checkpoint_path: str | Path | None = None,
    on_epoch_end: Callable[[History], None] | None = None,
    data_name: str | None = None,
    monitor_points: int = MONITOR_POINTS,
) -> History:
    """Train ``model`` with SimCLR on unlabelled digits. Taught in 04_training_on_mnist.

    Each step: N digits, two BatchAugment views, the model's loss of both (``nt_xent`` of their
    z for SimCLR, another method's own loss, 08), backward, step, the model's ``after_step``,
    learning rate from the warm-up + cosine schedule. One CPU generator seeded by
    ``config.seed`` drives shuffling and augmentation, so a run repeats exactly on CPU. The
    steps: ``_resume`` a checkpoint, then per epoch ``train_one_epoch`` (04's loop), the kNN
    monitor (on the ``monitored`` epochs), ``_record`` the history, write the checkpoint, call
    ``on_epoch_end``.

    Under torchrun (taught in 07_scaling_out) each of the K processes takes its N digits of
    every global batch of K * N from one shared permutation, draws its own views, runs the model
    as DistributedDataParallel and ``global_nt_xent`` (``nt_xent`` in one process) against all
    2KN views; the peak learning rate follows ``config.lr_scaling``; only rank 0 shows progress
    and writes the checkpoint.

    Args:
        model: a SimCLR module (``forward(x) -> (h, z)``), freshly built or resumed.
        images: uint8 (N, 28, 28) training digits (labels are never used).
        config: the run's settings.
        progress: show a tqdm progress bar (epoch, loss, images per second).
        monitor: optional ``MonitorDigits`` (bank and query digits with labels) for an online
            kNN accuracy after the ``monitored`` epochs (None in the history for the others);
            use a validation split, not the test split.
        checkpoint_path: write a checkpoint here after every epoch (atomically); if it already
            holds a checkpoint of this config and these digits, training resumes from it. The
            caller keeps other processes out of its folder (``utils.locked``), as the CLI and
            ``load_or_train`` do.
        on_epoch_end: called with the history after each epoch (and after the checkpoint).
        data_name: ``MNISTData.name`` of ``images``, recorded in the checkpoint with their
            fingerprint (see ``data.describe_training_data``).
        monitor_points: about how many epochs the monitor scores (``monitored``).

    Returns:
        The ``History`` of all epochs, resumed ones included.

    Raises:
        FloatingPointError when the run diverges (NaN or inf projections), naming the fix.
    """
    world, rank = distributed.world_size(), distributed.rank()  # 1 and 0 in one process
    _check_batch_fits(config.batch_size, len(images), world)
    if monitor_points < 1:
        raise ValueError(
            f"monitor_points must be at least 1 (the first and last epochs), got {monitor_points}"
        )
    if world > 1 and not model.trains_in_parallel:
        raise ValueError(
            f"method {config.method!r} trains in one process only; run it without torchrun"
        )
    device = pick_device(config.device)
    model.to(device)
    optimizer = make_optimizer(model, config)
    generator = torch.Generator().manual_seed(config.seed)  # shuffling and views, as in 04
    amp_dtype = autocast_dtype(device, config.amp)  # None: float32 (no native bf16 here)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    data_id = describe_training_data(data_name, images)  # name, fingerprint, size
    history = _resume(checkpoint_path, config, data_id, model, optimizer, generator, scaler)
    net = distributed.data_parallel(model, config.sync_bn)  # DDP under torchrun, else model itself
    data = preprocess(images).to(device)  # (M, 1, 28, 28) float in [0, 1]
    steps = max(1, len(data) // (world * config.batch_size))  # drop the short last batch
    done, quiet = len(history.epoch), not progress or rank > 0  # done: epochs resumed
    with tqdm(
        total=config.epochs * steps, initial=done * steps, disable=quiet, desc="SimCLR", unit="step"
    ) as bar:
        for epoch in range(done, config.epochs):
            start = time.perf_counter()
            loss, top1, lr = train_one_epoch(
                net, data, config, epoch, steps, optimizer, generator, scaler, amp_dtype, bar
            )
            seconds = time.perf_counter() - start
            scores = monitor_scores(
                model, monitor if monitored(epoch, config.epochs, monitor_points) else None
            )
            views = 2 * world * config.batch_size * steps
            _record(history, bar, epoch, loss, top1, lr, scores, seconds, views)
            if checkpoint_path is not None and rank == 0:
                save_checkpoint(
                    checkpoint_path, model, config, history, optimizer, generator, data_id, scaler
                )
            if on_epoch_end is not None:
                on_epoch_end(history)
    return history


def load_or_train(
    config: TrainConfig,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    knn_monitor: bool = True,
    on_epoch_end: Callable[[History], None] | None = None,
) -> tuple[nn.Module, History]:
    """The model this config trains: loaded from the cache if trained before, else trained now.

    The cache folder is ``cache_dir/<hash of config and data>/checkpoint.pt``, so notebooks reuse
    a model trained earlier (by notebook 04, the CLI or a previous session) instead of training
    twice; an interrupted run resumes where it stopped. While it trains, the folder is locked:
    another process training the same config at once gets a BlockingIOError saying so.

    Args:
        config: the run.
        cache_dir: default ``runs/cache`` at the repo root ($SIMCLR_TEACH_RUNS/cache).
        progress: show the progress bar while training.
        knn_monitor: online kNN after the ``monitored`` epochs, on a validation split of 500
            training digits (50 per digit) against the other training digits; the test split is
            never used.
        on_epoch_end: passed to ``train_simclr`` (e.g. to move a progress widget).

    Returns:
        (model in eval mode on the CPU, its History).
    """
    data = load_mnist(config.data, verbose=False)
    path = Path(cache_dir or runs_dir() / "cache") / config.key(data.name) / "checkpoint.pt"
    history = None
    if path.is_file():
        history = History.from_dict(load_checkpoint(path)["history"])
    if history is None or len(history.epoch) < config.epochs:
        model = initial_model(config)
        monitor = None
        if knn_monitor:
            monitor = MonitorDigits.split(data.train_images, data.train_labels)
        busy = (
            f"{path.parent} is being trained by another process (a notebook, the CLI or a "
            "sweep); wait for it to finish, then run this again to load the model"
        )
        with locked(check_run_folder(path.parent, ("checkpoint.pt",)), wait=False, busy=busy):
            history = train_simclr(
                model,
                data.train_images,
                config,
                progress,
                monitor=monitor,
                checkpoint_path=path,
                on_epoch_end=on_epoch_end,
                data_name=data.name,
            )
    return load_model(path), history


def validation_split(labels: Tensor, per_class: int = 50) -> Tensor:
    """Boolean mask of the first ``per_class`` training digits of each class: a validation split."""
    mask = torch.zeros(len(labels), dtype=torch.bool)
    for digit in labels.unique():
        mask[torch.nonzero(labels == digit).flatten()[:per_class]] = True
    return mask
