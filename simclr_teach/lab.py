"""The temperature and augmentation lab: short cached runs, their scores, and the sweeps.

A lab run is a small, fast ``TrainConfig`` (``LAB_BASE``: seconds on a 2-core CPU) trained
with ``load_or_train``, so a configuration trains once and is reused, scored by the
leave-one-out weighted kNN accuracy of h over the training digits (never the test split).
Scores go to ``lab_results.json`` beside the run cache, written atomically, so they survive a kernel
restart. ``sweep`` runs whole grids (temperature x batch size, the "all augmentations but one"
ablation of Chen et al., 2020, Figure 5, and the random-bits shortcut) and writes a CSV.
Taught in 06_temperature_augmentation_lab; ``widgets.training_lab`` is its interface.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from simclr_teach.augment import OFF_VALUES, PARAM_RANGES, AugmentParams
from simclr_teach.data import load_mnist
from simclr_teach.evaluate import embed, knn_accuracy
from simclr_teach.train import History, TrainConfig, load_or_train, runs_dir
from simclr_teach.utils import (
    atomic_write_text,
    csv_text,
    locked,
    note_path,
    partial_path,
    run_note,
    writing_results,
)

# The lab's run: the course's model at half width and 8 epochs, so a student waits seconds for
# a run (each row of notebooks/results/lab_sweep.csv records its train_seconds). Every field
# is spelled out, so the committed sweep stays valid when TrainConfig's defaults move. Only the
# embedded digits, so a run takes the same time whether or not full MNIST is on disk.
LAB_BASE = TrainConfig(
    data="embedded",
    encoder="conv",
    pool_first=False,  # the encoder the committed sweep trained (model.ConvEncoder)
    width=16,
    proj_hidden=128,
    proj_dim=64,
    epochs=8,
    batch_size=256,
    temperature=0.2,
    optimizer="adamw",
    lr=2e-3,
    weight_decay=1e-4,
    warmup_epochs=1,
    strength=1.0,
    augment=AugmentParams(
        crop_scale=0.6,
        rotation=15.0,
        translate=0.1,
        shear=10.0,
        elastic=0.0,
        noise=0.1,
        blur=0.0,
        erase_p=0.25,
    ),
    seed=0,
)


def switched_on(params: AugmentParams) -> list[str]:
    """The transforms ``params`` has on (a field away from its off value), in PARAM_RANGES order."""
    return [name for name in PARAM_RANGES if getattr(params, name) != OFF_VALUES[name]]


# Transforms on in LAB_BASE, the ones its ablation switches off (not AugmentParams(), whose
# defaults may move).
DEFAULT_ON = switched_on(LAB_BASE.augment)

RESULTS_FILE = "lab_results.json"
COLUMNS = [
    "grid",
    "label",
    "temperature",
    "batch_size",
    "epochs",
    "width",
    "strength",
    "ablated",
    "shortcut_bits",
    "seed",
    "loo_knn",
    "final_loss",
    "final_top1",
    "train_seconds",
    "key",
]
# the columns the lab plots and compares: numbers in every row
NUMBER_COLUMNS = [c for c in COLUMNS if c not in ("grid", "label", "ablated", "key")]


def lab_config(values: Mapping[str, Any], base: TrainConfig = LAB_BASE) -> TrainConfig:
    """The run that a set of lab controls describes.

    Args:
        values: any of "temperature", "batch_size", "epochs", "strength", "shortcut_bits",
            "seed", an AugmentParams field name (e.g. "rotation") -> its value at strength 1,
            and "<field>_ablate" -> True to switch that transform off.
        base: the fields not given (default ``LAB_BASE``).

    Returns:
        A TrainConfig; invalid values raise ValueError naming the field.
    """
    scalars = {
        "temperature": float,
        "batch_size": int,
        "epochs": int,
        "strength": float,
        "shortcut_bits": int,
        "seed": int,
    }
    known = {*scalars, *PARAM_RANGES, *(f"{name}_ablate" for name in PARAM_RANGES)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown lab control(s) {sorted(unknown)}; valid: {sorted(known)}")
    augment = replace(base.augment, **{n: float(values[n]) for n in PARAM_RANGES if n in values})
    augment = augment.disabled(*[n for n in PARAM_RANGES if values.get(f"{n}_ablate", False)])
    return replace(
        base,
        augment=augment,
        **{name: cast(values[name]) for name, cast in scalars.items() if name in values},
    )


def ablated(config: TrainConfig, base: TrainConfig = LAB_BASE) -> list[str]:
    """The transforms on in ``base`` that ``config`` has off (all of them at strength 0)."""
    on = switched_on(base.augment)
    if config.strength == 0:
        return on
    return [name for name in on if getattr(config.augment, name) == OFF_VALUES[name]]


def describe(config: TrainConfig, base: TrainConfig = LAB_BASE) -> str:
    """A short label for a run: what it changes from ``base``, besides tau and N.

    E.g. "all on", "no rotation", "rotation 45", "no noise, elastic 1.5", "strength 2",
    "no augmentation", "all on, 20 epochs", "all on, +4 bits". Every lab control but tau and N
    (shown beside the label) that moved from ``base`` is named, so two runs with one label are
    the same recipe.
    """
    off = ablated(config, base)
    moved = [
        f"{name} {value:g}"
        for name in PARAM_RANGES
        if (value := getattr(config.augment, name))
        not in (getattr(base.augment, name), OFF_VALUES[name])
    ]
    if config.strength == 0 or (off and len(off) == len(switched_on(base.augment)) and not moved):
        parts = ["no augmentation"]
    else:
        parts = (["no " + ", ".join(off)] if off else []) + moved
        if config.strength != base.strength:
            parts.append(f"strength {config.strength:g}")
        parts = parts or ["all on"]
    if config.epochs != base.epochs:
        parts.append(f"{config.epochs} epochs")
    if config.seed != base.seed:
        parts.append(f"seed {config.seed}")
    if config.shortcut_bits:
        parts.append(f"+{config.shortcut_bits} bits")
    return ", ".join(parts)


class LabResults:
    """Scores of finished lab runs, one per configuration, in a JSON file written atomically.

    Every row has the keys of ``COLUMNS``; a file with other content is an error naming it.
    Adding a row locks the file's folder, so processes adding rows at once lose none.

    Args:
        path: the JSON file (created on the first ``add``).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _check(self, row: Any, where: str) -> None:
        missing = sorted(set(COLUMNS) - set(row)) if isinstance(row, dict) else COLUMNS
        if missing:
            raise ValueError(
                f"{where} is not a lab result (missing {missing}); move {self.path} "
                "away and the lab scores its runs again from the cached checkpoints"
            )
        wrong = [
            c
            for c in NUMBER_COLUMNS
            if isinstance(row[c], bool) or not isinstance(row[c], (int, float))
        ]
        if wrong:
            raise ValueError(
                f"{where} is not a lab result ({', '.join(f'{c}={row[c]!r}' for c in wrong)}: "
                f"not numbers); move {self.path} away and the lab scores its runs again from "
                "the cached checkpoints"
            )

    def rows(self) -> list[dict[str, Any]]:
        """All stored rows, oldest first; [] if the file does not exist yet."""
        if not self.path.is_file():
            return []
        try:
            runs = json.loads(self.path.read_text())["runs"]
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as error:
            raise ValueError(
                f"{self.path} is not a lab results file ({error!r}); move it away "
                "and the lab starts a new one"
            ) from error
        if not isinstance(runs, list):
            raise ValueError(
                f'{self.path} is not a lab results file ("runs" is not a list); '
                "move it away and the lab starts a new one"
            )
        for i, row in enumerate(runs):
            self._check(row, f"row {i} of {self.path}")
        return runs

    def get(self, key: str) -> dict[str, Any] | None:
        """The row of the run with this config key, or None."""
        return next((row for row in self.rows() if row["key"] == key), None)

    def add(self, row: dict[str, Any]) -> None:
        """Store ``row`` (replacing one with the same key), atomically, one process at a time."""
        self._check(row, "the row to add")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with locked(self.path.parent, wait=True):  # read, modify, write: no other writer between
            rows = [r for r in self.rows() if r["key"] != row["key"]] + [row]
            atomic_write_text(self.path, json.dumps({"runs": rows}, indent=1))


def default_cache() -> Path:
    """Where lab runs are cached: ``runs/cache`` (the cache notebooks 04 and 05 share)."""
    return runs_dir() / "cache"


def loo_knn(model: torch.nn.Module, data_name: str = "embedded") -> float:
    """Leave-one-out kNN@20 of h over the training digits: each classified by the others.

    Like a validation split it never touches the test split, but every one of the 4,000
    labelled training digits is a query (a 500-digit split has ~1.3 points of sampling noise
    at 90%; this has ~0.5), so smaller differences between lab runs can be told apart.
    """
    data = load_mnist(data_name, verbose=False)
    h = embed(model, data.train_images)  # (M, D_h), M training digits
    return knn_accuracy(h, data.train_labels, h, data.train_labels, leave_one_out=True)


def lab_run(
    config: TrainConfig,
    cache_dir: str | Path | None = None,
    progress: bool = False,
    on_epoch_end: Callable[[History], None] | None = None,
    grid: str = "lab",
    base: TrainConfig = LAB_BASE,
) -> dict:
    """Train (or load) one lab run and return its row; instant if it was scored before.

    Args:
        config: the run, e.g. from ``lab_config``.
        cache_dir: run cache; default ``runs/cache``. Scores go to ``cache_dir/lab_results.json``.
        progress: tqdm progress bar while training.
        on_epoch_end: called with the History after each epoch (a progress widget).
        grid: the name stored in the row's "grid" column.
        base: the run the "label" and "ablated" columns compare with (``describe``).

    Returns:
        A dict with the keys of ``COLUMNS``.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache()
    store = LabResults(cache_dir / RESULTS_FILE)
    key = config.key(load_mnist(config.data, verbose=False).name)
    row = store.get(key)
    if row is not None:
        return {**row, "grid": grid}
    model, history = load_or_train(
        config, cache_dir, progress=progress, knn_monitor=False, on_epoch_end=on_epoch_end
    )
    row = {
        "grid": grid,
        "label": describe(config, base),
        "temperature": config.temperature,
        "batch_size": config.batch_size,
        "epochs": config.epochs,
        "width": config.width,
        "strength": config.strength,
        "ablated": "+".join(ablated(config, base)) or "-",
        "shortcut_bits": config.shortcut_bits,
        "seed": config.seed,
        "loo_knn": round(loo_knn(model, config.data), 4),
        "final_loss": round(history.loss[-1], 4),
        "final_top1": round(history.top1[-1], 4),
        "train_seconds": round(history.seconds[-1], 1),
        "key": key,
    }
    store.add(row)
    return row


def lab_state(
    values: Mapping, cache_dir: str | Path, base: TrainConfig = LAB_BASE, shown: int = 12
) -> dict:
    """What the lab shows for its controls: the run they describe and the stored results.

    Args:
        values: control values (see ``lab_config``); "train" and other non-config keys of
            the widget are not passed here.
        cache_dir: run cache; results are read from ``cache_dir/lab_results.json``.
        base: the lab's base run (default ``LAB_BASE``). shown: bars for the newest runs.

    Returns:
        {"config", "label" (``describe``), "key", "row" (this config's stored row or None),
        "rows" (all, oldest first), "bars" (the newest ``shown``), "curve" (the runs that differ
        from ``config`` in temperature and batch size alone: one line per N over tau)}.
    """
    config = lab_config(values, base)
    data_name = load_mnist(config.data, verbose=False).name
    key = config.key(data_name)
    rows = LabResults(Path(cache_dir) / RESULTS_FILE).rows()

    def on_this_curve(row: dict) -> bool:  # its key is ours with its tau and N: nothing else moved
        same_but = replace(
            config, temperature=float(row["temperature"]), batch_size=int(row["batch_size"])
        )
        return row["key"] == same_but.key(data_name)

    return {
        "config": config,
        "label": describe(config, base),
        "key": key,
        "row": next((r for r in rows if r["key"] == key), None),
        "rows": rows,
        "bars": rows[-shown:],
        "curve": [r for r in rows if on_this_curve(r)],
    }


# --- sweeps ------------------------------------------------------------------------------------

TEMPERATURES = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
BATCH_SIZES = (64, 128, 256, 512)
SHORTCUT_BITS = (0, 2, 4, 8, 14)
SEEDS = (0, 1, 2, 3, 4)


def sweep_configs(grid: str, base: TrainConfig = LAB_BASE) -> list[TrainConfig]:
    """The runs of one named grid.

    - "temperature-batch": every tau in TEMPERATURES x every N in BATCH_SIZES.
    - "ablation": ``base``, each of its transforms off in turn, and no augmentation.
    - "shortcut": SHORTCUT_BITS random bits shared by both views, augmentations on.
    - "seeds": ``base`` with each of SEEDS (the noise of one number).
    """
    if grid == "temperature-batch":
        return [
            replace(base, temperature=t, batch_size=n) for t in TEMPERATURES for n in BATCH_SIZES
        ]
    if grid == "ablation":
        return (
            [base]
            + [
                replace(base, augment=base.augment.disabled(name))
                for name in switched_on(base.augment)
            ]
            + [replace(base, strength=0.0)]
        )
    if grid == "shortcut":
        return [replace(base, shortcut_bits=bits) for bits in SHORTCUT_BITS]
    if grid == "seeds":
        return [replace(base, seed=seed) for seed in SEEDS]
    raise ValueError(f"unknown grid {grid!r}; use one of {GRIDS}")


GRIDS = ("temperature-batch", "ablation", "shortcut", "seeds")


def sweep(
    grids: Iterable[str],
    out: str | Path,
    cache_dir: str | Path | None = None,
    base: TrainConfig = LAB_BASE,
    progress: bool = True,
    command: str = "",
) -> list[dict]:
    """Run the named grids, one lab run after another, and write their scores to ``out`` (CSV).

    Runs already in the cache are not trained again, so an interrupted sweep continues where it
    stopped. The rows so far are in ``<out>.partial`` while it runs; ``out`` is replaced only
    when the sweep is complete, and a second sweep writing the same ``out`` meanwhile is an
    error (``utils.writing_results``). Beside the CSV, ``<out stem>.txt`` records the command,
    machine and time it took (``utils.note_path``: an ``out`` ending in .txt is an error).

    Args:
        grids: names from GRIDS. out: the CSV path. cache_dir: run cache (default runs/cache).
        base: the run every grid varies. progress: a line per run and a bar per epoch.
        command: the command line to record (default: a ``python -m simclr_teach sweep`` line).

    Returns:
        The rows, in order.
    """
    grids = list(grids)
    configs = [(grid, config) for grid in grids for config in sweep_configs(grid, base)]
    out, rows, start = Path(out), [], time.perf_counter()
    note = note_path(out)  # an out the note would overwrite fails before the first run
    command = command or shlex.join(
        ["python", "-m", "simclr_teach", "sweep", "--grid", *grids, "--out", str(out)]
    )
    busy = (
        f"another process is writing {out} (its rows so far: {partial_path(out)}); wait for "
        "it to finish, or pass another --out"
    )
    with writing_results(out, busy) as save:
        for i, (grid, config) in enumerate(configs, 1):
            row = lab_run(config, cache_dir, progress=progress, grid=grid, base=base)
            rows.append(row)
            save(csv_text(rows, COLUMNS))
            if progress:
                print(
                    f"[{i}/{len(configs)}] {grid}: tau={config.temperature:g} "
                    f"N={config.batch_size} {row['label']}: LOO kNN {row['loo_knn']:.1%}",
                    flush=True,
                )
        facts = {
            "base": asdict(base),
            "runs": len(rows),
            "training minutes (sum over runs)": round(
                sum(r["train_seconds"] for r in rows) / 60, 1
            ),
            "minutes of this call (cached runs are not trained again)": round(
                (time.perf_counter() - start) / 60, 1
            ),
        }
        atomic_write_text(note, run_note(command, **facts))
    return rows
