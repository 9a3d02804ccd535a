"""Which settings train the best encoder: kNN of h on training digits for TrainConfig variants.

`python -m benchmarks --only tuning` (long: one full training run per row) writes
`results/tuning.csv`, the table notebook 04 shows. Choices are made on the training digits,
never on the test split: `loo_knn_k20` (leave-one-out kNN over all 4,000, ~0.4 points of
sampling noise, the column the defaults are chosen by) and the 500-digit validation split
(`validation_split`, ~1 point) for h and z.
"""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks.common import add_table, new_result

# Each row: TrainConfig fields set explicitly (the rest at their defaults): temperature and batch
# size at 15 epochs, then the strength and crop of the views, then a longer run.
VARIANTS: list[dict[str, Any]] = [
    {"epochs": 15, "temperature": 0.5, "batch_size": 256},
    {"epochs": 15, "temperature": 0.2, "batch_size": 256},
    {"epochs": 15, "temperature": 0.1, "batch_size": 256},
    {"epochs": 15, "temperature": 0.2, "batch_size": 128},
    {"epochs": 15, "temperature": 0.2, "batch_size": 64},
    {"epochs": 15, "temperature": 0.1, "batch_size": 64},
    {"epochs": 15, "temperature": 0.2, "batch_size": 32},
    {"epochs": 15, "temperature": 0.2, "batch_size": 64, "strength": 1.5},
    {"epochs": 15, "temperature": 0.2, "batch_size": 64, "augment": {"crop_scale": 0.4}},
    {"epochs": 30, "temperature": 0.2, "batch_size": 64},
]


def validation_run(config: Any) -> dict[str, Any]:
    """Train ``config`` on the embedded digits; kNN of h (validation split, leave-one-out) and z."""
    from simclr_teach.data import load_mnist
    from simclr_teach.evaluate import embed, knn_accuracy
    from simclr_teach.train import build_model, train_simclr, validation_split
    from simclr_teach.utils import seed_everything

    data = load_mnist(config.data, verbose=False)
    val = validation_split(data.train_labels)
    seed_everything(config.seed)
    model = build_model(config)
    history = train_simclr(model, data.train_images, config, progress=False)
    y = data.train_labels
    h, z = embed(model, data.train_images), embed(model, data.train_images, "z")  # (4000, D)
    knn = {k: knn_accuracy(h[~val], y[~val], h[val], y[val], k=k) for k in (5, 20)}
    knn_z = knn_accuracy(z[~val], y[~val], z[val], y[val])
    loo = knn_accuracy(h, y, h, y, leave_one_out=True)
    return {"epochs": config.epochs, "batch_size": config.batch_size,
            "loo_knn_k20": round(loo, 4),
            "val_knn_k5": round(knn[5], 4), "val_knn_k20": round(knn[20], 4),
            "val_knn_z_k20": round(knn_z, 4), "seconds": round(history.seconds[-1]),
            "final_loss": round(history.loss[-1], 3)}


def run(quick: bool = False, out_dir: str | Path | None = None,
        variants: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    from simclr_teach.train import TrainConfig

    result = new_result("tuning", "Tuning: one TrainConfig field at a time (validation kNN)", quick)
    base = TrainConfig(data="embedded")
    if quick:
        base = replace(base, epochs=1, width=4, batch_size=512)
    rows = []
    for variant in variants if variants is not None else VARIANTS[: 1 if quick else None]:
        augment = replace(base.augment, **variant.get("augment", {}))
        fields = {k: v for k, v in variant.items() if k != "augment" and not (quick and k == "epochs")}
        config = replace(base, augment=augment, **fields)
        rows.append({"temperature": config.temperature, "strength": config.strength,
                     "crop_scale": config.augment.crop_scale, **validation_run(config)})
    if out_dir is not None and not quick:
        path = Path(out_dir) / "tuning.csv"
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    add_table(result, "validation kNN accuracy of h", list(rows[0]),
              [list(row.values()) for row in rows])
    return result
