"""Self-supervised methods compared on equal terms: one tuning budget each, then seeds.

A method trained with another method's hyperparameters measures that recipe, not the method
(SimSiam, Chen & He, 2021, Table 4, is ahead of SimCLR at its own recipe). So every method of
08 gets the same budget: ``METHOD_GRID`` gives each four runs of ``STUDY_BASE`` (08's lab run at
N = 64), two learning rates times two values of one setting of its own (SimCLR's temperature,
MoCo's and BYOL's momentum, SimSiam's weight decay, Barlow Twins' redundancy weight). Each is
scored on the validation digits (the kNN monitor of ``load_or_train``: 500 training digits
against the other 3,500; the test split is never read); the best of the four is trained again
with the other ``SEEDS``, so each method ends with one recipe and a seed spread.

Every method trains the same epochs of the same batches (equal steps); their seconds differ by
what a step costs (a momentum encoder's extra forward pass), and each row records them.
``method_study`` writes the rows to a CSV (``python -m simclr_teach methods``), which 08 reads.
Taught in 08_what_simclr_needs.
"""

from __future__ import annotations

import math
import shlex
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from simclr_teach.data import load_mnist
from simclr_teach.evaluate import score_h_and_z
from simclr_teach.lab import LAB_BASE
from simclr_teach.train import TrainConfig, load_or_train, validation_split
from simclr_teach.utils import (
    atomic_write_text,
    csv_text,
    note_path,
    partial_path,
    run_note,
    writing_results,
)

STUDY_BASE = replace(LAB_BASE, batch_size=64)  # 08's BASE: 126 in-batch negatives per view
LEARNING_RATES = (2e-3, 6e-3)  # AdamW's peak rate; 2e-3 is the lab's
OWN_SETTING: dict[str, tuple[str, tuple[float, float]]] = {  # method -> (field, two values)
    "simclr": ("temperature", (0.2, 0.5)),  # NT-Xent's tau
    "moco": ("momentum", (0.99, 0.9)),  # the key encoder's m (He et al.: 0.999 at 65,536 keys)
    "simsiam": ("weight_decay", (1e-4, 1e-2)),  # Chen & He: collapse-free only with decay
    "byol": ("momentum", (0.99, 0.9)),  # the target's tau_base (Grill et al.: 0.996)
    "barlow_twins": ("redundancy_weight", (5e-3, 2e-2)),  # lambda (Zbontar et al.: 5e-3)
}
STUDY_METHODS = tuple(OWN_SETTING)
SEEDS = (0, 1, 2)  # the chosen recipe's seeds; the search runs with the first
COLUMNS = [
    "method",
    "role",
    "lr",
    "setting",
    "value",
    "seed",
    "val_knn",
    "loo_knn",
    "probe_h",
    "std_z",
    "rank_z",
    "uniformity",
    "final_loss",
    "train_seconds",
    "key",
]


def method_configs(method: str, base: TrainConfig = STUDY_BASE) -> list[TrainConfig]:
    """The four runs of ``method``'s search: ``LEARNING_RATES`` x its ``OWN_SETTING`` values,
    the first of them ``base``'s own values where they are in the grid."""
    if method not in OWN_SETTING:
        raise ValueError(f"unknown method {method!r}; use one of {STUDY_METHODS}")
    name, values = OWN_SETTING[method]
    return [
        replace(base, method=method, lr=lr, **{name: value})
        for lr in LEARNING_RATES
        for value in values
    ]


def study_row(config: TrainConfig, role: str, cache_dir: str | Path | None = None) -> dict:
    """One run of the study, trained (or loaded from the cache) and scored on training digits.

    Returns a dict with the keys of ``COLUMNS``: "val_knn" (the monitor's kNN of h on the
    validation digits after the last epoch: what the search chooses by), "loo_knn" and
    "probe_h" (``score_h_and_z``), and the collapse measures of z on the validation digits
    after the last epoch. A run that diverges has NaN scores (and is never chosen).
    """
    data = load_mnist(config.data, verbose=False)
    name, _ = OWN_SETTING[config.method]
    row: dict[str, Any] = {
        "method": config.method,
        "role": role,
        "lr": config.lr,
        "setting": name,
        "value": getattr(config, name),
        "seed": config.seed,
        "key": config.key(data.name),
    }
    try:
        model, history = load_or_train(config, cache_dir, progress=False)
    except FloatingPointError:  # diverged: train_simclr names the step
        return {**row, **dict.fromkeys(COLUMNS[6:-1], math.nan)}
    val = validation_split(data.train_labels)
    scores = score_h_and_z(model, data.train_images, data.train_labels, val)
    return {
        **row,
        "val_knn": history.knn[-1],
        "loo_knn": scores["kNN h"],
        "probe_h": scores["probe h"],
        "std_z": history.std_z[-1],
        "rank_z": history.rank_z[-1],
        "uniformity": history.uniformity[-1],
        "final_loss": history.loss[-1],
        "train_seconds": history.seconds[-1],
    }


def chosen(rows: Iterable[dict], method: str) -> dict:
    """The search row of ``method`` with the best validation kNN (ties: the first; NaN: never)."""
    search = [r for r in rows if r["method"] == method and r["role"] == "search"]
    scored = [r for r in search if not math.isnan(r["val_knn"])]
    if not scored:
        raise ValueError(f"every search run of {method!r} diverged; lower LEARNING_RATES")
    return max(scored, key=lambda r: r["val_knn"])  # max keeps the first of equal values


def method_study(
    methods: Iterable[str] = STUDY_METHODS,
    out: str | Path | None = None,
    cache_dir: str | Path | None = None,
    base: TrainConfig = STUDY_BASE,
    seeds: Iterable[int] = SEEDS,
    on_row: Callable[[dict], None] | None = None,
    command: str = "",
) -> list[dict]:
    """Search each method's four runs with the first seed, then train its choice with the others.

    Args:
        methods: names of ``OWN_SETTING``. out: a CSV to write (rows so far in
            ``<out>.partial``; ``out`` replaced only when complete; the run note beside it), or
            None. cache_dir: run cache (default runs/cache): cached runs are not trained again.
        base: the run every method varies (its seed is replaced by the first of ``seeds``).
        seeds: the chosen recipe's seeds. on_row: called with each row as it is done.
        command: the command line for the note (default: the ``methods`` command).

    Returns:
        The rows: per method, its four "search" rows, then a "seed" row per further seed.
    """
    methods, seeds = list(methods), list(seeds)
    unknown = [m for m in methods if m not in OWN_SETTING]
    if unknown or not methods:
        raise ValueError(f"methods must be among {STUDY_METHODS}, got {methods}")
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, at least one, got {seeds}")
    base, start, rows = replace(base, seed=seeds[0]), time.perf_counter(), []

    def add(row: dict, save: Callable[[str], None] | None) -> None:
        rows.append(row)
        if save is not None:
            save(csv_text(rows, COLUMNS, digits=4))
        if on_row is not None:
            on_row(row)

    def run_all(save: Callable[[str], None] | None) -> None:
        for method in methods:
            for config in method_configs(method, base):
                add(study_row(config, "search", cache_dir), save)
            best = chosen(rows, method)
            name = best["setting"]
            recipe = replace(base, method=method, lr=best["lr"], **{name: best["value"]})
            for seed in seeds[1:]:
                add(study_row(replace(recipe, seed=seed), "seed", cache_dir), save)

    if out is None:
        run_all(None)
        return rows
    out = Path(out)
    note = note_path(out)  # an out the note would overwrite fails before the first run
    busy = f"another process is writing {out} (its rows so far: {partial_path(out)})"
    with writing_results(out, busy) as save:
        run_all(save)
        facts = {
            "base": asdict(base),
            "runs": len(rows),
            "training minutes (sum over runs)": round(
                sum(r["train_seconds"] for r in rows if not math.isnan(r["train_seconds"])) / 60,
                1,
            ),
            "minutes of this call (cached runs are not trained again)": round(
                (time.perf_counter() - start) / 60, 1
            ),
        }
        command = command or shlex.join(
            ["python", "-m", "simclr_teach", "methods", "--out", str(out)]
        )
        atomic_write_text(note, run_note(command, **facts))
    return rows
