"""The course's default run against the previous default, side by side: wall time and accuracy.

Issue 25, target 1: the default run (`TrainConfig()`) reaches the same or better accuracy in at
most half the wall time of the default it replaced. Both are trained here, one after the other
in one call, the way a student starts them: `python -m simclr_teach train --out DIR` in a fresh
process with an empty folder (start-up, data, training, the kNN monitor and the checkpoints all
count). The previous default is the frontier's recipe PREVIOUS_RECIPE (every field spelled out
in frontier.BASE, so it stays what it was), trained with the kNN monitor on every epoch, as
then (`--monitor-points 90`).

Both are then scored as notebook 05 scores a run, on h: leave-one-out kNN over the 4,000
training digits (k = 5 and 20), and on the 1,000 embedded test digits once, the kNN (k and
temperature chosen by leave-one-out) and the linear probe (C chosen on the validation split),
with `protocol.tuned_scores`. "Same or better" is the claim `protocol.assert_not_worse` checks
(the new run is not behind by more than 2 noise units), the noise the paired bootstrap over the
same digits gives (`protocol.paired_test`); one seed each, so seed noise is not in it and the
check is the stricter one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.common import REPO_ROOT, add_table, add_target, new_result
from benchmarks.frontier import RECIPES, config_of

# The default run until 2026-12-05 (chosen on the frontier, 2026-11-29): 90 epochs of N 128 at
# tau 0.5 and lr 4e-3, the encoder with conv, BN, ReLU, pool (pool_first=False), its kNN monitor
# on every epoch; the frontier's row of that name, every field spelled out there (frontier.BASE).
PREVIOUS_RECIPE = "90 epochs, N 128, tau 0.5, lr 4e-3"
PREVIOUS_MONITOR_POINTS = 90  # every epoch
NAMES = ("previous default", "new default")


def _flags(config: Any) -> list[str]:
    """The `train` flags that give ``config`` (every TrainConfig and AugmentParams field)."""
    values = asdict(config)
    values.update(values.pop("augment"))
    return [part for name, value in values.items() for part in (_flag(name), str(value))]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def train_wall(config: Any, out: Path, monitor_points: int) -> float:
    """Wall seconds of `python -m simclr_teach train` of ``config`` into ``out`` (fresh process)."""
    command = [sys.executable, "-m", "simclr_teach", "train", "--out", str(out), "--no-progress"]
    command += ["--monitor-points", str(monitor_points), *_flags(config)]
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO_ROOT, env=os.environ.copy())
    return time.perf_counter() - start


def scores(path: Path, data: Any) -> dict[str, Any]:
    """Leave-one-out kNN over the training digits and the tuned test readers, of h."""
    from simclr_teach.evaluate import embed, knn_predict
    from simclr_teach.protocol import tuned_scores
    from simclr_teach.train import load_model, validation_split

    model = load_model(path)
    train_h, test_h = embed(model, data.train_images), embed(model, data.test_images)
    row: dict[str, Any] = {}
    for k in (5, 20):
        predicted = knn_predict(train_h, data.train_labels, train_h, k=k, leave_one_out=True)
        row[f"loo_correct_k{k}"] = predicted == data.train_labels  # (4000,) bool
    val = validation_split(data.train_labels)
    test, chosen = tuned_scores(train_h, data.train_labels, val, test_h, data.test_labels)
    row["test_knn"], row["test_probe"], row["chosen"] = test["knn"], test["linear"], chosen
    return row


def run(quick: bool = False, out_dir: str | Path | None = None) -> dict[str, Any]:
    from simclr_teach.checkpoint import load_checkpoint
    from simclr_teach.data import load_mnist
    from simclr_teach.protocol import assert_not_worse, paired_noise, paired_test
    from simclr_teach.train import TrainConfig
    from simclr_teach.utils import other_load

    result = new_result(
        "default_run", "The default run against the previous default (issue 25, target 1)", quick
    )
    previous = config_of(dict(RECIPES)[PREVIOUS_RECIPE])
    new = TrainConfig(data="embedded", seed=0, amp=True)  # today's defaults, as frontier runs
    monitor_points = {NAMES[0]: PREVIOUS_MONITOR_POINTS, NAMES[1]: None}
    configs = {NAMES[0]: previous, NAMES[1]: new}
    if quick:  # the harness only: 2 epochs of a tiny encoder
        configs = {
            name: TrainConfig(**{**asdict(c), "epochs": 2, "width": 4})
            for name, c in configs.items()
        }
        monitor_points[NAMES[0]] = 2
    data = load_mnist("embedded", verbose=False)
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="default-run-") as tmp:
        for name, config in configs.items():  # the previous default first: it sets the bar
            out = Path(tmp) / name.replace(" ", "-")
            points = monitor_points[name] or _default_points()
            with other_load() as load:
                wall = train_wall(config, out, points)
            history = load_checkpoint(out / "checkpoint.pt")["history"]
            rows[name] = {
                "wall": wall,
                "training": history["seconds"][-1],
                "other_cores": load["other_cores"],
                **scores(out / "checkpoint.pt", data),
            }
            print(f"default_run: {name} {wall:.0f} s wall", flush=True)
    old, now = rows[NAMES[0]], rows[NAMES[1]]
    ratio = now["wall"] / old["wall"]
    add_target(result, "new default / previous default, wall time", ratio, "<= 0.5", ratio <= 0.5)
    accuracy = [
        ("leave-one-out kNN of h, k 5", "loo_correct_k5"),
        ("leave-one-out kNN of h, k 20", "loo_correct_k20"),
    ]
    claims = []
    for what, column in accuracy:
        test = paired_test(now[column], old[column])
        a, b = now[column].float().mean().item(), old[column].float().mean().item()
        noise = paired_noise(test)
        holds = a - b >= -2 * noise
        add_target(result, f"new - previous, {what} (points)", 100 * (a - b), ">= -2 noise", holds)
        if holds:
            claims.append(assert_not_worse(100 * a, 100 * b, 100 * noise, ("new", "previous")))
        now[column + "_acc"], old[column + "_acc"] = a, b
    for what, column in (("test kNN of h", "test_knn"), ("test linear probe on h", "test_probe")):
        add_target(
            result,
            f"new - previous, {what} (points)",
            100 * (now[column] - old[column]),
            "(report)",
            None,
        )
    add_table(
        result,
        "One run each, seed 0, embedded digits, trained one after the other in this call",
        [
            "run",
            "wall s",
            "training s",
            "other cores",
            "LOO kNN h k5 %",
            "LOO kNN h k20 %",
            "test kNN h %",
            "test probe h %",
            "readers chosen",
        ],
        [
            [
                name,
                f"{row['wall']:.0f}",
                f"{row['training']:.0f}",
                f"{row['other_cores']:.2f}",
                f"{100 * row['loo_correct_k5_acc']:.2f}",
                f"{100 * row['loo_correct_k20_acc']:.2f}",
                f"{100 * row['test_knn']:.1f}",
                f"{100 * row['test_probe']:.1f}",
                f"k {row['chosen']['k']}, C {row['chosen']['C']}",
            ]
            for name, row in rows.items()
        ],
    )
    result["notes"] += [
        "wall: `python -m simclr_teach train --out DIR --no-progress` in a fresh process, empty "
        "folder (start-up, data, training, kNN monitor, checkpoints); training s: the run's own "
        "training clock, monitor excluded; other cores: how many cores other processes kept busy "
        "meanwhile (above ~0.2 the seconds are inflated).",
        f"previous default: {previous}, kNN monitor every epoch; new default: {new}, monitor on "
        f"about {_default_points()} epochs (train.monitored).",
        "Accuracy noise: the paired bootstrap over the same digits (protocol.paired_test); the "
        "test digits are 1,000, so one test point is 0.1.",
        *claims,
    ]
    result["data"] = {
        name: {
            key: value
            for key, value in row.items()
            if not key.startswith("loo_correct") or key.endswith("_acc")
        }
        for name, row in rows.items()
    }
    return result


def _default_points() -> int:
    from simclr_teach.train import MONITOR_POINTS

    return MONITOR_POINTS
