"""Item 1: validation kNN accuracy against training time, for TrainConfig() and variants.

Trains with simclr_teach.train.train_simclr on the embedded 4,000 training digits. After every
``every`` epochs a callback embeds the training digits with the frozen encoder and takes the
weighted kNN accuracy (k = 20, knn_accuracy) of the validation split (train.validation_split,
500 digits) against the other 3,500: the test split is never looked at here (it is scored
once, by `python -m simclr_teach evaluate`). The clock is History.seconds, the training wall
time only (the callback runs outside it), so evaluation never counts as training. Accuracy at
time 0 is the random-init encoder (the same initial weights); the raw-pixel kNN is the line to
beat.

Command line: `python -m benchmarks --only time_to_accuracy [--variant width=16 ...]`.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from torch import Tensor, nn

from benchmarks.common import RESULTS, add_table, new_result, quick_data
from simclr_teach.data import MNISTData, load_mnist
from simclr_teach.evaluate import embed, knn_accuracy, pixel_features
from simclr_teach.train import History, TrainConfig, build_model, train_simclr, validation_split
from simclr_teach.utils import seed_everything

NAME, TITLE = "time_to_accuracy", "Time to accuracy: validation kNN accuracy vs training time"
K = 20


def parse_variant(text: str) -> dict[str, Any]:
    """'width=16,temperature=0.2' -> {'width': 16, 'temperature': 0.2}; values are literals."""
    overrides: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        if "=" not in item:
            raise ValueError(f"variant item {item!r} is not FIELD=VALUE, e.g. width=16")
        key, value = (part.strip() for part in item.split("=", 1))
        try:
            overrides[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[key] = value  # a bare string such as encoder=mlp
    return overrides


def validation_accuracy(features, labels) -> float:
    """k=20 weighted kNN accuracy of the validation split against the other training digits."""
    val = validation_split(labels)
    return knn_accuracy(features[~val], labels[~val], features[val], labels[val], k=K)


def train_curve(
    config: TrainConfig,
    data: MNISTData,
    score: Callable[[Tensor, Tensor], float] = validation_accuracy,
) -> tuple[dict[str, Any], nn.Module]:
    """Train one config; ``score(h, labels)`` of the training digits at init and about 15 times
    during training, against training seconds. Returns the curve and the trained model."""
    seed_everything(config.seed)  # model initialisation, as load_or_train
    model = build_model(config)
    y = data.train_labels
    seconds, accuracy = [0.0], [score(embed(model, data.train_images), y)]
    every = max(1, config.epochs // 15)  # ~15 points per curve

    def on_epoch_end(history: History) -> None:  # outside History.seconds: not training time
        if len(history.epoch) % every and len(history.epoch) != config.epochs:
            return
        seconds.append(history.seconds[-1])
        accuracy.append(score(embed(model, data.train_images), y))

    history = train_simclr(
        model, data.train_images, config, progress=False, on_epoch_end=on_epoch_end
    )
    curve = {
        "config": asdict(config),
        "seconds": seconds,
        "knn_accuracy": accuracy,
        "loss": history.loss,
        "views_per_second": history.images_per_second,
    }
    return curve, model


def figure(curves: dict[str, dict[str, Any]], pixels: float) -> Figure:
    """Accuracy against training time, one line per config, raw pixels as a dashed line."""
    fig, ax = plt.subplots(figsize=(6, 3.6), layout="constrained")
    for name, curve in curves.items():
        ax.plot(
            curve["seconds"],
            [100 * a for a in curve["knn_accuracy"]],
            marker="o",
            markersize=3,
            label=f"SimCLR {name}",
        )
    ax.axhline(100 * pixels, color="grey", linestyle="--", label="raw pixels")
    first = next(iter(curves.values()))["knn_accuracy"][0]
    ax.annotate(
        "random init",
        (0, 100 * first),
        xytext=(4, 7),
        textcoords="offset points",
        fontsize=8,
        va="center",
    )
    ax.set(
        xlabel="training time (s, evaluation excluded)",
        ylabel=f"validation kNN accuracy (%), k={K}",
        title="Time to accuracy, embedded MNIST 4k/1k",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def run(
    quick: bool = False,
    out_dir: str | Path = RESULTS,
    variants: Sequence[str | dict[str, Any]] = (),
) -> dict[str, Any]:
    """Train TrainConfig() and each variant (a dict of overrides or 'field=value,...')."""
    result = new_result(NAME, TITLE, quick)
    data = load_mnist("embedded", verbose=False)
    base = TrainConfig(data="embedded")
    if quick:  # a few hundred digits, one epoch, a tiny network: checks the code path only
        base = replace(
            base, epochs=1, width=4, proj_hidden=16, proj_dim=8, warmup_epochs=0, batch_size=64
        )
        data = quick_data(data, 512, 256)
    configs = {"TrainConfig()": base}
    for variant in variants:
        overrides = parse_variant(variant) if isinstance(variant, str) else dict(variant)
        label = ", ".join(f"{k}={v}" for k, v in overrides.items())
        configs[label] = replace(base, **overrides)
    pixels = validation_accuracy(pixel_features(data.train_images), data.train_labels)
    curves = {name: train_curve(config, data)[0] for name, config in configs.items()}

    fig = figure(curves, pixels)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_dir / f"{NAME}.png", dpi=100)
    plt.close(fig)

    rows = [
        [
            name,
            c["config"]["epochs"],
            f"{c['seconds'][-1]:.0f}",
            f"{100 * c['knn_accuracy'][-1]:.1f}",
            f"{100 * c['knn_accuracy'][0]:.1f}",
            f"{100 * pixels:.1f}",
        ]
        for name, c in curves.items()
    ]
    add_table(
        result,
        f"validation kNN accuracy (k={K}: the 500 validation digits against the "
        f"other {len(data.train_images) - 500:,} training digits) after training",
        ["config", "epochs", "training s", "final acc %", "random-init acc %", "raw-pixel acc %"],
        rows,
    )
    result["notes"] += [
        f"Figure: {NAME}.png (accuracy after each epoch against cumulative training seconds).",
        "Training time is History.seconds: the epochs' wall time, evaluation excluded.",
    ]
    result["data"] = {"raw_pixel_accuracy": pixels, "curves": curves}
    return result
