"""The time-accuracy frontier: which SimCLR recipe gives the best encoder for its training time.

`python -m benchmarks --only frontier` trains every recipe of RECIPES on the embedded 4,000
training digits through `load_or_train` (cached in runs/cache: a recipe trains once, and its
training seconds are the ones recorded when it trained) and scores it on the training digits
only, never the test split: leave-one-out weighted kNN (`knn_accuracy(..., leave_one_out=True)`)
of h and of z at k = 5 and 20. It writes `results/frontier.csv` (one row per recipe, with how
many cores other processes kept busy while it trained: a busy machine inflates seconds) and
`results/frontier.png`
(`plots.frontier`: validation kNN against training seconds, the Pareto front joined), which
notebook 04 shows.
The default run (`TrainConfig()`) is chosen from this table.
"""

from __future__ import annotations

import csv
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from benchmarks.common import add_table, cpu_model, new_result
from simclr_teach import plots
from simclr_teach.checkpoint import load_checkpoint
from simclr_teach.data import load_mnist
from simclr_teach.evaluate import embed, knn_accuracy
from simclr_teach.lab import LAB_BASE
from simclr_teach.train import TrainConfig, load_or_train, runs_dir
from simclr_teach.utils import atomic_write_csv, other_load

# The course's default run before the frontier (2026-11-28): the lab's run (``lab.LAB_BASE``,
# every field spelled out, so the recipes stay what they were when TrainConfig's defaults move)
# at full width, 15 epochs of N = 32, in bfloat16 where the CPU has it.
BASE: dict[str, Any] = {
    **{f.name: getattr(LAB_BASE, f.name) for f in fields(TrainConfig)},
    **dict(width=32, epochs=15, batch_size=32, warmup_epochs=2, amp=True),
}

# One recipe per row: a name and its changes from BASE (augment: changed AugmentParams fields).
RECIPES: list[tuple[str, dict[str, Any]]] = [
    ("old default (15 epochs)", {}),
    ("90 epochs", {"epochs": 90}),
    ("90 epochs, N 64", {"epochs": 90, "batch_size": 64}),
    ("60 epochs, tau 0.1", {"epochs": 60, "temperature": 0.1}),
    (
        "90 epochs, N 128, tau 0.5, lr 4e-3",
        {"epochs": 90, "batch_size": 128, "temperature": 0.5, "lr": 4e-3},
    ),
    (
        "120 epochs, N 128, tau 0.5, lr 4e-3",
        {"epochs": 120, "batch_size": 128, "temperature": 0.5, "lr": 4e-3},
    ),
    (
        "90 epochs, N 128, tau 1, lr 4e-3",
        {"epochs": 90, "batch_size": 128, "temperature": 1.0, "lr": 4e-3},
    ),
    (
        "90 epochs, N 128, tau 0.5, lr 4e-3, seed 1",
        {"epochs": 90, "batch_size": 128, "temperature": 0.5, "lr": 4e-3, "seed": 1},
    ),
    (
        "90 epochs, N 128, tau 0.5, lr 4e-3, strength 1.5",
        {"epochs": 90, "batch_size": 128, "temperature": 0.5, "lr": 4e-3, "strength": 1.5},
    ),
    (
        "90 epochs, N 128, tau 0.5, lr 4e-3, crop 0.4",
        {
            "epochs": 90,
            "batch_size": 128,
            "temperature": 0.5,
            "lr": 4e-3,
            "augment": {"crop_scale": 0.4},
        },
    ),
    (
        "90 epochs, N 128, tau 0.5, lr 4e-3, elastic 1.5",
        {
            "epochs": 90,
            "batch_size": 128,
            "temperature": 0.5,
            "lr": 4e-3,
            "augment": {"elastic": 1.5},
        },
    ),
    # 2026-12-05 (issue 25): the encoder pools before BatchNorm and ReLU (model.ConvEncoder),
    # a fifth faster a step; the default run became the 60-epoch row.
    (
        "90 epochs, N 128, tau 0.5, lr 4e-3, pool first",
        {"epochs": 90, "batch_size": 128, "temperature": 0.5, "lr": 4e-3, "pool_first": True},
    ),
    (
        "60 epochs, N 128, tau 0.5, lr 4e-3, pool first",
        {"epochs": 60, "batch_size": 128, "temperature": 0.5, "lr": 4e-3, "pool_first": True},
    ),
]
KS = (5, 20)
COLUMNS = [
    "recipe",
    "seconds",
    "loo_h_k5",
    "loo_h_k20",
    "loo_z_k5",
    "loo_z_k20",
    "best",
    "final_loss",
    "other_cores",
    "cpu",
    "key",
]


def config_of(changes: dict[str, Any]) -> TrainConfig:
    """The TrainConfig of a recipe: BASE with ``changes`` (``augment`` changes merged)."""
    changes = dict(changes)
    augment = replace(BASE["augment"], **changes.pop("augment", {}))
    return TrainConfig(**{**BASE, **changes, "augment": augment})


def score(
    name: str,
    changes: dict[str, Any],
    cache_dir: Path | None,
    earlier: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train (or load) one recipe; leave-one-out kNN of h and z over the training digits.

    ``earlier``: this recipe's row of the previous CSV, whose ``other_cores`` is kept when the
    run comes from the cache (it was measured when the run trained).
    """
    config = config_of(changes)
    data = load_mnist(config.data, verbose=False)
    path = Path(cache_dir or runs_dir() / "cache") / config.key(data.name) / "checkpoint.pt"
    cached = path.is_file() and len(load_checkpoint(path)["history"]["epoch"]) >= config.epochs
    with other_load() as load:
        model, history = load_or_train(config, cache_dir, progress=False, knn_monitor=False)
    row: dict[str, Any] = {"recipe": name, "seconds": round(history.seconds[-1], 1)}
    for use in ("h", "z"):
        features = embed(model, data.train_images, use)  # (4000, D)
        for k in KS:
            row[f"loo_{use}_k{k}"] = round(
                knn_accuracy(
                    features,
                    data.train_labels,
                    features,
                    data.train_labels,
                    k=k,
                    leave_one_out=True,
                ),
                4,
            )
    row["best"] = max(v for key, v in row.items() if key.startswith("loo_"))
    row["final_loss"] = round(history.loss[-1], 3)
    row["other_cores"] = (earlier or {}).get("other_cores", "") if cached else load["other_cores"]
    row["cpu"] = (earlier or {}).get("cpu", "") if cached else cpu_model()  # where it trained
    row["key"] = config.key(data.name)  # names the run: TrainConfig().key(...) finds the default
    return row


# The CPU of the rows measured before the table had a cpu column (2026-11-29).
EARLIER_CPU = "AMD EPYC"


def _cached(changes: dict[str, Any], cache_dir: str | Path | None) -> bool:
    """Whether the recipe's run is in the cache (fully trained or not)."""

    config = config_of(changes)
    name = load_mnist(config.data, verbose=False).name
    return (Path(cache_dir or runs_dir() / "cache") / config.key(name) / "checkpoint.pt").is_file()


def run(
    quick: bool = False,
    out_dir: str | Path | None = None,
    recipes: list[tuple[str, dict[str, Any]]] | None = None,
    cache_dir: str | Path | None = None,
    retrain: bool = False,
) -> dict[str, Any]:
    """Score every recipe; write frontier.csv and frontier.png into ``out_dir``.

    A recipe already in ``out_dir/frontier.csv`` whose run is not in the cache keeps its row as
    measured then (its ``cpu`` column says where), so a new recipe costs only its own training;
    ``retrain=True`` trains every recipe not in the cache again, on this machine.
    """
    result = new_result(
        "frontier", "Time-accuracy frontier of SimCLR recipes (validation kNN)", quick
    )
    recipes = RECIPES if recipes is None else recipes
    if quick:  # tiny runs in a throwaway cache: checks the harness, the numbers mean nothing
        retrain = True
        recipes = [
            (name, {**changes, "epochs": 1, "width": 4, "batch_size": 512})
            for name, changes in recipes[:2]
        ]
        cache_dir = Path(out_dir or ".") / "frontier-cache"
    earlier = {}
    if out_dir is not None and (Path(out_dir) / "frontier.csv").is_file():
        with (Path(out_dir) / "frontier.csv").open() as f:
            earlier = {row["recipe"]: row for row in csv.DictReader(f)}
    rows = []
    for name, changes in recipes:
        kept = earlier.get(name)
        if not retrain and kept is not None and not _cached(changes, cache_dir):
            rows.append({**kept, "cpu": kept.get("cpu") or EARLIER_CPU})  # as measured then
        else:
            rows.append(score(name, changes, Path(cache_dir) if cache_dir else None, kept))
        print(f"frontier: {rows[-1]}", flush=True)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_csv(out_dir / "frontier.csv", rows, COLUMNS)
        fig = plots.frontier(rows)
        fig.savefig(out_dir / "frontier.png")
        plt.close(fig)
    add_table(
        result,
        "leave-one-out kNN over the 4,000 training digits (never the test split)",
        COLUMNS,
        [[row[c] for c in COLUMNS] for row in rows],
    )
    result["notes"].append(
        "seconds: training wall time recorded when the recipe trained "
        "(cached runs keep theirs); other_cores: how many cores other "
        "processes kept busy meanwhile (0 = idle machine; above ~0.2 the "
        "seconds are inflated by sharing the 2 cores); cpu: the machine it trained on (a row "
        "is kept as measured until its run is trained again: compare seconds within one cpu)"
    )
    result["data"]["rows"] = rows
    return result
