"""Item 4: training-step throughput of the default TrainConfig on CPU, where the time goes, and
what makes it faster (threads, channels_last, fused optimizer, torch.compile, embed batch size).

A step is train_simclr's single-process step, written out here so each phase can be timed:
augmentation (index the batch, two BatchAugment calls), forward (one pass over the 2N views),
loss (nt_xent), backward (zero_grad + backward), optimizer (AdamW step incl. the lr update)
and bookkeeping (loss.item() and contrastive_accuracy, which train_simclr logs every step).
Throughput counts views (2N per step), as History.images_per_second does; it is checked
against one real train_simclr epoch.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from statistics import median
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks.common import RESULTS, add_table, interleaved, new_result, num_threads, stats
from simclr_teach.augment import BatchAugment
from simclr_teach.data import load_mnist
from simclr_teach.evaluate import embed
from simclr_teach.loss import contrastive_accuracy, nt_xent
from simclr_teach.model import preprocess
from simclr_teach.train import TrainConfig, build_model, make_optimizer, train_simclr
from simclr_teach.utils import seed_everything

NAME, TITLE = "train", "Training throughput (item 4): the default TrainConfig on CPU"
PHASES = ("augment", "forward", "loss", "backward", "optimizer", "bookkeeping")


class Stepper:
    """The state of one training run and its step, with optional speed-ups.

    Args:
        config: the run (model size, batch, temperature, lr).
        images: uint8 (E, 28, 28) training digits.
        channels_last: model and input batch in torch.channels_last memory format.
        optimizer: None = make_optimizer(model, config) as train_simclr; else extra AdamW
            keyword arguments, e.g. {"fused": True} or {"foreach": True}.
        one_augment_call: both views from one BatchAugment call on the 2N-image batch.
        compile_model: wrap the model in torch.compile (compiles on the first step).
        bf16: forward and loss under torch.autocast("cpu", dtype=torch.bfloat16); nt_xent
            still computes in float32.
        bookkeeping: do loss.item() and contrastive_accuracy every step, as train_simclr.
        pool_first: override ``config.pool_first`` (None keeps it).
    """

    def __init__(
        self,
        config: TrainConfig,
        images: Tensor,
        *,
        channels_last: bool = False,
        optimizer: dict | None = None,
        one_augment_call: bool = False,
        compile_model: bool = False,
        bookkeeping: bool = True,
        bf16: bool = False,
        pool_first: bool | None = None,
    ) -> None:
        if pool_first is not None:  # the encoder's block order (model.ConvEncoder)
            config = replace(config, pool_first=pool_first)
        seed_everything(config.seed)
        self.model = build_model(config).train()
        self.format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = self.model.to(memory_format=self.format)
        self.net: nn.Module = torch.compile(self.model) if compile_model else self.model
        if optimizer is None:
            self.optimizer = make_optimizer(self.model, config)
        else:
            groups = [g["params"] for g in make_optimizer(self.model, config).param_groups]
            self.optimizer = torch.optim.AdamW(
                [
                    {"params": groups[0], "weight_decay": config.weight_decay},
                    {"params": groups[1], "weight_decay": 0.0},
                ],
                lr=config.lr,
                **optimizer,
            )
        self.config, self.one_augment_call, self.bookkeeping = config, one_augment_call, bookkeeping
        self.bf16 = bf16
        self.augment = BatchAugment(config.strength, config.augment)
        self.data = preprocess(images)  # (E, 1, 28, 28) in [0, 1]
        self.n = min(config.batch_size, len(self.data))
        self.generator = torch.Generator().manual_seed(config.seed)
        self.order = torch.randperm(len(self.data), generator=self.generator)
        self.position = 0

    def step(self, clock: Callable[[str], None] = lambda phase: None) -> None:
        """One SimCLR step; clock(phase) is called at the end of each phase."""
        n, config = self.n, self.config
        if self.position + n > len(self.data):  # a new epoch: reshuffle
            self.order = torch.randperm(len(self.data), generator=self.generator)
            self.position = 0
        x = self.data[self.order[self.position : self.position + n]]  # (N, 1, 28, 28)
        self.position += n
        if self.one_augment_call:
            views = self.augment(torch.cat([x, x]), self.generator)  # (2N, 1, 28, 28)
        else:
            views = torch.cat([self.augment(x, self.generator), self.augment(x, self.generator)])
        views = views.contiguous(memory_format=self.format)
        clock("augment")
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            _, z = self.net(views)  # (2N, D_z)
            z1, z2 = z[:n], z[n:]
            clock("forward")
            loss = nt_xent(z1, z2, config.temperature)
            clock("loss")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clock("backward")
        for group in self.optimizer.param_groups:
            group["lr"] = config.lr
        self.optimizer.step()
        clock("optimizer")
        if self.bookkeeping:
            loss.item(), contrastive_accuracy(z1, z2)
        clock("bookkeeping")

    def steps(self, count: int) -> Callable[[], None]:
        """A timing unit: `count` steps."""

        def run() -> None:
            for _ in range(count):
                self.step()

        return run


def profile(stepper: Stepper, steps: int, warmup: int) -> dict[str, dict[str, float]]:
    """Milliseconds per phase over `steps` steps (after `warmup` untimed ones): the phases of the
    fastest step (the least disturbed by other processes) and the median of each phase."""
    for _ in range(warmup):
        stepper.step()
    records = []  # one {phase: ms, "total": ms} per step
    for _ in range(steps):
        marks = [time.perf_counter()]
        stepper.step(lambda phase, marks=marks: marks.append(time.perf_counter()))
        spans = zip(marks, marks[1:], strict=False)  # (start, end) of each phase
        record = {phase: 1000 * (b - a) for phase, (a, b) in zip(PHASES, spans, strict=True)}
        records.append({**record, "total": 1000 * (marks[-1] - marks[0])})
    return {
        "fastest": min(records, key=lambda r: r["total"]),
        "median": {key: median(r[key] for r in records) for key in records[0]},
    }


def operator_shares(stepper: Stepper, steps: int) -> list[tuple[str, float]]:
    """Share of the self CPU time of ``steps`` steps per operator (torch.profiler), largest first.

    Shows whether the convolutions or the memory-bound layers around them (BatchNorm, ReLU,
    pooling) take a step's time: on a 2-core CPU the latter, which is why ``ConvEncoder`` pools
    first.
    """
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    stepper.step()  # warm-up outside the profile
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            stepper.step()
    events = [(e.key, e.self_cpu_time_total) for e in prof.key_averages()]
    total = sum(t for _, t in events) or 1.0
    return sorted(((k, t / total) for k, t in events), key=lambda kt: -kt[1])


def run(quick: bool = False, out_dir: str | Path = RESULTS) -> dict[str, Any]:
    """Profile of the default step, speed-up variants side by side, compile break-even, embed."""
    result = new_result(NAME, TITLE, quick)
    data = load_mnist("embedded", verbose=False)
    images = data.train_images
    config = TrainConfig(data="embedded")
    steps, repeats, unit = 20, 12, 1  # many short rounds: best-of finds the quiet moments
    if quick:
        config = replace(config, width=4, batch_size=32, proj_hidden=16, proj_dim=8)
        images, steps, repeats, unit = images[:128], 2, 1, 1
    views = 2 * min(config.batch_size, len(images))
    result["data"]["config"] = {
        "width": config.width,
        "batch_size": config.batch_size,
        "proj_hidden": config.proj_hidden,
        "proj_dim": config.proj_dim,
    }

    # 1. where the time goes
    phases = profile(Stepper(config, images), steps, warmup=2)
    fast, mid = phases["fastest"], phases["median"]
    add_table(
        result,
        f"Where a step goes (batch N={config.batch_size}, {views} views, width "
        f"{config.width}, {torch.get_num_threads()} threads; ms of the fastest of {steps} "
        "steps and the median of each phase)",
        ["phase", "ms (fastest step)", "%", "ms (median)"],
        [
            [p, f"{fast[p]:.1f}", f"{100 * fast[p] / fast['total']:.0f}", f"{mid[p]:.1f}"]
            for p in PHASES
        ]
        + [
            [
                "total",
                f"{fast['total']:.1f}",
                f"{1000 * views / fast['total']:,.0f} views/s",
                f"{mid['total']:.1f}",
            ]
        ],
    )
    result["data"]["phases_ms"] = phases
    for pool_first in (True, False):  # which operators take the time, in both block orders
        operators = operator_shares(
            Stepper(config, images, channels_last=True, bf16=True, pool_first=pool_first), steps
        )
        order = "pool first (now)" if pool_first else "pool after BN and ReLU (before 2026-12-05)"
        add_table(
            result,
            f"Operators of a step, {order}, channels_last + bf16 (torch.profiler, self CPU time "
            f"over {steps} steps; the ten largest)",
            ["operator", "% of the step"],
            [[name, f"{100 * share:.0f}"] for name, share in operators[:10]],
        )
        result["data"][f"operators_pool_first_{pool_first}"] = operators

    # 2. one real train_simclr epoch, to check the written-out step against the package
    seed_everything(config.seed)
    history = train_simclr(build_model(config), images, replace(config, epochs=1), progress=False)
    result["data"]["train_simclr_views_per_second"] = history.images_per_second[-1]
    result["notes"].append(
        f"One real train_simclr epoch ({len(images):,} digits): "
        f"{history.images_per_second[-1]:,.0f} views/s "
        "(History.images_per_second)."
    )

    # 3. variants of the whole step, side by side
    variants = {
        "baseline: float32, contiguous (train_simclr before 2026-11-28)": dict(),
        "channels_last": dict(channels_last=True),
        "AdamW(foreach=True)": dict(optimizer={"foreach": True}),
        "AdamW(fused=True)": dict(optimizer={"fused": True}),
        "one BatchAugment call on 2N": dict(one_augment_call=True),
        "no per-step bookkeeping": dict(bookkeeping=False),
        "bf16 autocast": dict(bf16=True),
        "channels_last + bf16 autocast (as train_simclr now)": dict(channels_last=True, bf16=True),
        "channels_last + bf16 autocast, pool after BN and ReLU (before 2026-12-05)": dict(
            channels_last=True, bf16=True, pool_first=False
        ),
    }
    steppers = {name: Stepper(config, images, **kwargs) for name, kwargs in variants.items()}
    calls = {name: s.steps(unit) for name, s in steppers.items()}
    single = Stepper(config, images)
    calls["torch.set_num_threads(1)"] = lambda: _with_threads(1, single.steps(unit))
    times = interleaved(calls, repeats, warmup=1)
    timing = {name: stats([t / unit for t in values]) for name, values in times.items()}
    base = timing["baseline: float32, contiguous (train_simclr before 2026-11-28)"]["best"]
    rows = [
        [
            name,
            f"{1000 * t['best']:.1f}",
            f"{1000 * t['median']:.1f}",
            f"{views / t['best']:,.0f}",
            f"{base / t['best']:.2f}x",
        ]
        for name, t in timing.items()
    ]

    # 4. torch.compile: compile time apart, then steady state side by side with the baseline
    compile_info: dict[str, Any] = {"skipped": quick}
    if not quick:
        compiled = Stepper(config, images, compile_model=True)
        with tempfile.TemporaryDirectory() as cache, _environ(TORCHINDUCTOR_CACHE_DIR=cache):
            start = time.perf_counter()  # a cold compile, as a student's first run: empty cache
            compiled.step()  # traces and compiles forward + backward
            first = time.perf_counter() - start
        pair = interleaved(
            {"baseline": Stepper(config, images).steps(unit), "compiled": compiled.steps(unit)},
            repeats,
            warmup=1,
        )
        base_c, comp_c = (
            stats([t / unit for t in pair[k]])["best"] for k in ("baseline", "compiled")
        )
        overhead = first - comp_c
        saving = base_c - comp_c
        compile_info = {
            "first_step_s": first,
            "compile_overhead_s": overhead,
            "baseline_step_s": base_c,
            "compiled_step_s": comp_c,
            "break_even_steps": overhead / saving if saving > 0 else None,
        }
        rows.append(
            [
                "torch.compile(model), steady state",
                f"{1000 * comp_c:.1f}",
                "-",
                f"{views / comp_c:,.0f}",
                f"{base_c / comp_c:.2f}x (vs its own baseline run)",
            ]
        )
        steps_per_epoch = len(images) // config.batch_size
        result["notes"].append(
            f"torch.compile: first step {first:.1f} s with an empty inductor cache (compile "
            f"overhead {overhead:.1f} s); steady "
            f"step {1000 * comp_c:.1f} ms vs {1000 * base_c:.1f} ms; break-even after "
            + (
                f"{compile_info['break_even_steps']:,.0f} steps "
                f"(the default run has {config.epochs * steps_per_epoch} steps)"
                if saving > 0
                else "never (not faster)"
            )
            + "."
        )
    result["data"]["compile"] = compile_info
    add_table(
        result,
        f"Step variants (ms per step: best and median of {repeats} interleaved "
        f"rounds of {unit} steps each)",
        ["variant", "ms best", "ms median", "views/s", "speed-up"],
        rows,
    )
    result["data"]["variants"] = {"seconds_per_step": timing}

    # 5. embed: inference batch size over the 5,000 digits kNN evaluation embeds
    model = Stepper(config, images).model
    everything = torch.cat([data.train_images, data.test_images])
    if quick:
        everything = everything[:512]
    model_cl = Stepper(config, images, channels_last=True).model
    embeds = {
        f"batch_size={b}": (lambda b=b: embed(model, everything, batch_size=b))
        for b in (256, 1024, 4096)
    }
    for b in (256, 1024):
        embeds[f"batch_size={b}, channels_last model"] = lambda b=b: embed(
            model_cl, everything, batch_size=b
        )
    embed_times = {name: stats(t) for name, t in interleaved(embeds, repeats, warmup=1).items()}
    add_table(
        result,
        f"evaluate.embed of {len(everything):,} digits (best and median of "
        f"{repeats} interleaved rounds)",
        ["batch size", "s best", "s median", "digits/s"],
        [
            [name, f"{t['best']:.3f}", f"{t['median']:.3f}", f"{len(everything) / t['best']:,.0f}"]
            for name, t in embed_times.items()
        ],
    )
    result["data"]["embed_seconds"] = embed_times
    result["notes"].append(
        "Variants are measured side by side in one process, rounds interleaved; "
        "the speed-up is baseline best / variant best."
    )
    return result


@contextmanager
def _environ(**values: str) -> Iterator[None]:
    """Set environment variables inside the block, restore them after."""
    before = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _with_threads(n: int, function: Callable[[], None]) -> None:
    with num_threads(n):
        function()
