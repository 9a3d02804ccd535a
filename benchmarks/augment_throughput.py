"""Item 2: views per second of BatchAugment against the per-sample DataLoader pipeline.

Both make two views of every training digit per epoch with the same AugmentParams:
- per-sample: DataLoader(TwoViews(images, view_transform(params=...)), batch_size=256), the
  best of num_workers=0 (1 torch thread: per-image ops on 28x28 gain nothing from threads) and
  num_workers=2 (persistent workers, started before timing);
- batched: BatchAugment(params=...) on 256-digit batches indexed from the preprocessed
  training tensor, two calls per batch, exactly as train_simclr does.
A "view" is one augmented 28x28 image; an epoch of E digits makes 2E views in both pipelines.
Target: batched >= 20x the best per-sample configuration, measured side by side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from benchmarks.common import (
    RESULTS,
    add_table,
    add_target,
    interleaved,
    new_result,
    num_threads,
    stats,
)
from simclr_teach.augment import AugmentParams, BatchAugment, view_transform
from simclr_teach.data import TwoViews, load_mnist
from simclr_teach.model import preprocess

NAME, TITLE = "augment", "Augmentation throughput (item 2): BatchAugment vs per-sample DataLoader"
TARGET = 20.0
# digits the per-sample pipeline augments per timed call (it is slow; rates are per view)
PER_SAMPLE_DIGITS = {"default": 1024, "elastic": 256}
FAMILIES = {  # name -> the AugmentParams both pipelines use
    "default AugmentParams()": AugmentParams(),
    "all on: elastic=1.5, blur=1.0": AugmentParams(elastic=1.5, blur=1.0),
}


def _per_sample_epoch(images: torch.Tensor, params: AugmentParams, workers: int, batch: int):
    loader = DataLoader(
        TwoViews(images, view_transform(params=params)),
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
    )

    def epoch() -> None:
        if workers == 0:
            with num_threads(1):
                for _ in loader:
                    pass
        else:
            for _ in loader:
                pass

    return epoch, loader


def _batched_epochs(images: torch.Tensor, params: AugmentParams, batch: int, epochs: int):
    data = preprocess(images)  # (E, 1, 28, 28) float, as train_simclr
    augment = BatchAugment(params=params)
    generator = torch.Generator().manual_seed(0)

    def run_epochs() -> None:
        for _ in range(epochs):
            order = torch.randperm(len(data), generator=generator)
            for start in range(0, len(data), batch):
                x = data[order[start : start + batch]]
                augment(x, generator), augment(x, generator)  # two views, as in training

    return run_epochs


def _one_thread(function) -> None:
    with num_threads(1):
        function()


def _measure_family(
    images: torch.Tensor,
    params: AugmentParams,
    batch: int,
    repeats: int,
    batched_epochs: int,
    per_sample_digits: int,
) -> dict[str, Any]:
    """Interleaved timings of the three pipelines for one family; their workers end on return."""
    subset = images[:per_sample_digits]
    variants, work = {}, {}
    for workers in (0, 2):
        name = f"per-sample, num_workers={workers}"
        variants[name], _ = _per_sample_epoch(subset, params, workers, batch)
        work[name] = 2 * len(subset)
    batched = _batched_epochs(images, params, batch, batched_epochs)
    variants["BatchAugment"] = batched
    variants["BatchAugment, 1 thread"] = lambda: _one_thread(batched)
    work["BatchAugment"] = work["BatchAugment, 1 thread"] = 2 * len(images) * batched_epochs
    times = interleaved(variants, repeats, warmup=1)
    rates = {
        name: {k: work[name] / v for k, v in stats(t).items() if k != "repeats"}
        for name, t in times.items()
    }
    return {
        "params": params.__dict__,
        "seconds": times,
        "views_per_call": work,
        "views_per_second": rates,
    }


def run(quick: bool = False, out_dir: str | Path = RESULTS) -> dict[str, Any]:
    """Measure views/s of both pipelines for each family in FAMILIES; returns the result dict."""
    result = new_result(NAME, TITLE, quick)
    images = load_mnist("embedded", verbose=False).train_images
    batch, repeats, batched_epochs = 256, 5, 2
    families = FAMILIES
    if quick:
        images, batch, repeats, batched_epochs = images[:128], 32, 1, 1
        families = dict(list(FAMILIES.items())[:1])
    rows, data = [], {}
    for family, params in families.items():
        digits = PER_SAMPLE_DIGITS["elastic" if params.elastic else "default"]
        measured = _measure_family(images, params, batch, repeats, batched_epochs, digits)
        rates = measured["views_per_second"]
        best_sample = max(rates[n]["best"] for n in rates if n.startswith("per-sample"))
        best_batched = max(rates[n]["best"] for n in rates if n.startswith("BatchAugment"))
        ratio = best_batched / best_sample
        for name, rate in rates.items():
            rows.append(
                [
                    family,
                    name,
                    f"{rate['best']:,.0f}",
                    f"{rate['median']:,.0f}",
                    f"{rate['best'] / best_sample:.1f}x",
                ]
            )
        data[family] = {**measured, "ratio_best": ratio}
        add_target(
            result,
            f"best BatchAugment / best per-sample, {family}",
            ratio,
            f">= {TARGET:.0f}x",
            ratio >= TARGET,
        )
    add_table(
        result,
        f"Views per second (batch {batch}, 2 views per digit; best and median of "
        f"{repeats} interleaved rounds)",
        ["family", "pipeline", "views/s best", "views/s median", "vs best per-sample"],
        rows,
    )
    result["notes"] += [
        "Both pipelines draw the same transform family (same AugmentParams); the target ratio is "
        "the best BatchAugment row over the best per-sample row, from best times measured in "
        "the same process, rounds interleaved.",
        "num_workers=0 runs with torch.set_num_threads(1); num_workers=2 uses persistent "
        "workers started before timing (worker start-up is not counted, to the baseline's favour).",
        f"One timed call: the per-sample pipeline augments {PER_SAMPLE_DIGITS['default']:,} digits "
        f"({PER_SAMPLE_DIGITS['elastic']} with elastic on: torchvision's elastic is slow), "
        f"BatchAugment {batched_epochs} epoch(s) of {len(images):,}; rates are per view.",
    ]
    result["data"] = data
    return result
