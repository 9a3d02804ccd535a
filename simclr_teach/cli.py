"""Command line: ``python -m simclr_teach train | evaluate | sweep | few-labels | methods``.

See README.md.

The package's modules are imported inside the functions that need them, unlike everywhere else
in the package: so ``--help`` and a mistyped flag answer at once, before torch is loaded (a
few seconds on a laptop), and a command loads only what it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from simclr_teach.data import MNISTData
    from simclr_teach.train import History, TrainConfig

_TYPES = {"int": int, "float": float, "str": str}


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _add_dataclass_flags(parser: argparse.ArgumentParser, cls: type, defaults: object) -> None:
    """One ``--flag`` per field of a config dataclass, with its choices and default shown."""
    from simclr_teach.train import CHOICES

    for f in fields(cls):
        kind = _bool if f.type == "bool" else _TYPES.get(str(f.type))
        if kind is None:
            continue  # nested configs get their own flags
        text = f"default: {getattr(defaults, f.name)}"
        if f.name == "device":
            text = f"auto, cpu, cuda, cuda:<i>, mps or xpu; {text}"
        # SUPPRESS: only the flags given on the command line reach the namespace
        parser.add_argument(
            f"--{f.name.replace('_', '-')}",
            type=kind,
            dest=f.name,
            default=argparse.SUPPRESS,
            help=text,
            choices=CHOICES.get(f.name),
        )


def _parser() -> argparse.ArgumentParser:
    from simclr_teach.augment import AugmentParams
    from simclr_teach.train import CHOICES, MONITOR_POINTS, TrainConfig

    parser = argparse.ArgumentParser(
        prog="python -m simclr_teach", description="Train and evaluate SimCLR on MNIST."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a SimCLR model (defaults = the course's run)")
    train.add_argument(
        "--out", type=Path, required=True, help="writes OUT/checkpoint.pt, OUT/metrics.json"
    )
    train.add_argument(
        "--preset",
        choices=["default", "gpu"],
        default="default",
        help="gpu: full MNIST, wider encoder, batch 1024 (flags still override)",
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument(
        "--monitor-points",
        type=int,
        default=MONITOR_POINTS,
        help=f"about how many epochs the kNN monitor scores (default {MONITOR_POINTS}; "
        "--monitor-points EPOCHS scores every epoch)",
    )
    _add_dataclass_flags(train, TrainConfig, TrainConfig())
    _add_dataclass_flags(
        train.add_argument_group("augmentations at strength 1"), AugmentParams, AugmentParams()
    )
    evaluate = commands.add_parser("evaluate", help="kNN and linear-probe table for a checkpoint")
    evaluate.add_argument("checkpoint", type=Path, help="a checkpoint.pt written by train")
    evaluate.add_argument(
        "--data",
        default=None,
        choices=CHOICES["data"],
        help="digits to evaluate on (default: those it was trained on)",
    )
    evaluate.add_argument("--no-probe", action="store_true", help="skip the linear probe (faster)")
    from simclr_teach.lab import GRIDS, LAB_BASE

    sweep = commands.add_parser("sweep", help="lab runs over a grid (06 lab), scores to a CSV")
    sweep.add_argument(
        "--grid", nargs="+", choices=GRIDS, required=True, help="grids to run, in order"
    )
    sweep.add_argument(
        "--out",
        type=Path,
        required=True,
        help="CSV to write once complete; the command goes beside it (.csv -> .txt)",
    )
    sweep.add_argument("--cache", type=Path, default=None, help="run cache (default: runs/cache)")
    sweep.add_argument("--no-progress", action="store_true", help="no progress output")
    _add_dataclass_flags(
        sweep.add_argument_group("the base run (default: lab.LAB_BASE)"), TrainConfig, LAB_BASE
    )
    from simclr_teach.protocol import FEW_LABEL_BUDGETS

    few = commands.add_parser(
        "few-labels",
        help="kNN, linear probe, supervised CNN and fine-tuning "
        "on a few labels per class (05), to a CSV",
    )
    few.add_argument(
        "--out",
        type=Path,
        required=True,
        help="CSV to write once complete; the command goes beside it (.csv -> .txt)",
    )
    few.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="one SimCLR model for every seed (default: the course's default run pretrained "
        "with each seed, trained if not cached)",
    )
    few.add_argument(
        "--budgets",
        type=int,
        nargs="+",
        default=list(FEW_LABEL_BUDGETS),
        help="labelled digits per class",
    )
    few.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0, 1, 2],
        help="draws of the labels, and of the SimCLR pretraining unless --checkpoint",
    )
    from simclr_teach.method_study import SEEDS, STUDY_METHODS

    study = commands.add_parser(
        "methods", help="each method of 08 tuned with the same budget, then seeds, to a CSV"
    )
    study.add_argument(
        "--out",
        type=Path,
        required=True,
        help="CSV to write once complete; the command goes beside it (.csv -> .txt)",
    )
    study.add_argument(
        "--method", nargs="+", choices=STUDY_METHODS, default=list(STUDY_METHODS), dest="methods"
    )
    study.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    study.add_argument("--cache", type=Path, default=None, help="run cache (default: runs/cache)")
    return parser


def _train_command(args: argparse.Namespace) -> int:
    """``train``: the flags made a ``TrainConfig``, the run folder checked and locked."""
    from simclr_teach.augment import AugmentParams
    from simclr_teach.checkpoint import check_run_folder
    from simclr_teach.train import TrainConfig
    from simclr_teach.utils import locked, pick_device

    given = vars(args)  # holds only the flags that were typed
    base = TrainConfig.gpu_preset() if args.preset == "gpu" else TrainConfig()
    augment = replace(
        base.augment, **{f.name: given[f.name] for f in fields(AugmentParams) if f.name in given}
    )
    config = replace(
        base,
        augment=augment,
        **{f.name: given[f.name] for f in fields(TrainConfig) if f.name in given},
    )
    pick_device(config.device)  # a wrong device fails now, not after loading the data
    made = [p for p in (args.out, *args.out.parents) if not p.exists()]  # folders this run makes
    out = check_run_folder(args.out)  # so does a folder the run cannot write
    try:
        if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 holds the lock for all
            return _train_into_folder(out, config, args.no_progress, args.monitor_points)
        busy = (
            f"another process is training into {out}; wait for it to finish, or pass another --out"
        )
        with locked(out, wait=False, busy=busy):
            return _train_into_folder(out, config, args.no_progress, args.monitor_points)
    finally:
        if os.environ.get("RANK", "0") == "0":
            _remove_empty(made)  # a run that failed before its first checkpoint leaves no folder


def _remove_empty(folders: list[Path]) -> None:
    """Remove each of ``folders`` (deepest first) that is still empty."""
    for folder in folders:
        try:
            folder.rmdir()  # only an empty folder
        except OSError:
            return  # not empty (or gone): nor are the folders above it


def _train_into_folder(
    out: Path, config: TrainConfig, no_progress: bool, monitor_points: int
) -> int:
    """Train ``config`` into the run folder ``out``, resuming its checkpoint; the exit status."""
    from simclr_teach import distributed
    from simclr_teach.checkpoint import load_checkpoint
    from simclr_teach.train import MonitorDigits, build_model, train_simclr
    from simclr_teach.utils import seed_everything

    path, first = out / "checkpoint.pt", os.environ.get("RANK", "0") == "0"
    data = _training_data(config, path, verbose=first)
    seed_everything(config.seed)
    model = build_model(config)
    monitor = MonitorDigits.split(data.train_images, data.train_labels)
    start = time.perf_counter()
    try:
        with distributed.process_group(config.device):  # torchrun: join its group, leave at the end
            history = train_simclr(
                model,
                data.train_images,
                config,
                progress=not no_progress,
                monitor=monitor,
                checkpoint_path=path,
                data_name=data.name,
                monitor_points=monitor_points,
            )
            rank, world_size = distributed.rank(), distributed.world_size()
    except KeyboardInterrupt:
        done = len(load_checkpoint(path)["history"]["epoch"]) if path.is_file() else 0
        if first:
            print(
                f"\ninterrupted after epoch {done} of {config.epochs}; rerun the same command "
                "to resume",
                file=sys.stderr,
            )
        return 130
    if rank > 0:
        return 0  # rank 0 wrote the checkpoint; it also writes the metrics and reports
    _write_metrics(out, config, data.name, history, world_size, time.perf_counter() - start)
    print(
        f"trained {config.epochs} epochs on {data.name} in {history.seconds[-1]:.0f} s; final "
        f"loss {history.loss[-1]:.3f}, validation kNN {history.knn[-1]:.1%}"
    )
    print(f"wrote {path} and {out / 'metrics.json'}")
    return 0


def _training_data(config: TrainConfig, path: Path, verbose: bool) -> MNISTData:
    """The digits a run trains on: a resumed run's "auto" keeps the digits it started on."""
    from simclr_teach.checkpoint import load_checkpoint
    from simclr_teach.data import SOURCES, load_mnist

    source = config.data
    recorded = load_checkpoint(path)["data"] if path.is_file() else None
    if source == "auto" and recorded is not None and recorded["name"] in SOURCES:
        source = SOURCES[recorded["name"]]  # "auto" may point elsewhere since the run began
        if verbose:
            print(f"Resuming {path} on {recorded['name']}, the digits it started on.")
    return load_mnist(source, verbose=verbose)  # torchrun: 1 line


def _write_metrics(
    out: Path, config: TrainConfig, data_name: str, history: History, world: int, seconds: float
) -> None:
    """``out/metrics.json`` (atomically): the run's config, data and history, how it ran."""
    import torch

    from simclr_teach.utils import atomic_write_text

    # a seeded run repeats bit for bit at the same thread count, not across thread counts
    metrics = {
        "config": asdict(config),
        "data": data_name,
        "history": history.to_dict(),
        "world_size": world,
        "torch_threads": torch.get_num_threads(),
        "wall_seconds_this_call": seconds,
    }
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=1))


def _evaluate(args: argparse.Namespace) -> int:
    from simclr_teach.checkpoint import load_checkpoint
    from simclr_teach.data import SOURCES, fingerprint, load_mnist
    from simclr_teach.evaluate import format_table
    from simclr_teach.protocol import evaluation_table
    from simclr_teach.train import load_model

    state = load_checkpoint(args.checkpoint)
    model = load_model(args.checkpoint)
    recorded = state["data"]  # None in checkpoints written before the data was recorded
    source = args.data or SOURCES.get((recorded or {}).get("name"), state["config"]["data"])
    data = load_mnist(source, verbose=False)
    if recorded is None:
        trained = "trained on unrecorded data (an older checkpoint)"
    else:
        trained = f"trained on {recorded['name'] or 'digits'} ({recorded['size']:,})"
        here = fingerprint(data.train_images)
        if data.name == recorded["name"] and recorded["fingerprint"] != here:
            trained += " that differ from the ones here"
    print(
        f"{args.checkpoint}: {trained}, {len(state['history']['epoch'])} epochs; evaluated on "
        f"{data.name}: kNN bank and probe on its {len(data.train_labels):,} training digits, "
        f"test split of {len(data.test_labels):,}"
    )
    rows, chosen = evaluation_table(
        model,
        data.train_images,
        data.train_labels,
        data.test_images,
        data.test_labels,
        probe=not args.no_probe,
    )
    print(format_table(rows))
    print(
        "chosen on the training digits (kNN: leave-one-out over all of them; probe: the "
        "validation split of 50 per class), then the test split scored once:"
    )
    for name, values in chosen.items():
        print(
            f"  {name}: "
            + ", ".join(
                f"{key} {value:g}"
                for key, value in values.items()
                if not key.startswith("temperature@") or key == f"temperature@{values['k']}"
            )
        )
    readers = [row["features"] for row in rows if row["features"].startswith("SimCLR")]
    readout = max(readers, key=lambda name: chosen[name]["val_knn"])  # h or z, on validation
    print(
        f"kNN readout chosen by leave-one-out: {readout} (k {chosen[readout]['k']}): test "
        f"{next(r['knn'] for r in rows if r['features'] == readout):.1%}"
    )
    return 0


def _command(argv: list[str]) -> str:
    """The command line that reruns ``argv``, quoted for a shell (an --out with a space)."""
    return shlex.join(["python", "-m", "simclr_teach", *argv])


def _sweep(args: argparse.Namespace, argv: list[str]) -> int:
    from simclr_teach.lab import LAB_BASE, sweep
    from simclr_teach.train import TrainConfig
    from simclr_teach.utils import note_path

    given = vars(args)
    base = replace(
        LAB_BASE, **{f.name: given[f.name] for f in fields(TrainConfig) if f.name in given}
    )
    rows = sweep(
        args.grid,
        args.out,
        args.cache,
        base,
        progress=not args.no_progress,
        command=_command(argv),
    )
    print(f"wrote {len(rows)} runs to {args.out} (command in {note_path(args.out)})")
    return 0


def _methods(args: argparse.Namespace, argv: list[str]) -> int:
    from simclr_teach.method_study import method_study
    from simclr_teach.utils import note_path

    def report(row: dict) -> None:
        print(
            f"{row['method']} {row['role']}: lr={row['lr']:g} {row['setting']}={row['value']:g} "
            f"seed {row['seed']}: validation kNN {row['val_knn']:.1%}",
            flush=True,
        )

    rows = method_study(
        args.methods, args.out, args.cache, seeds=args.seeds, on_row=report, command=_command(argv)
    )
    print(f"wrote {len(rows)} runs to {args.out} (command in {note_path(args.out)})")
    return 0


def _few_label_rows(
    args: argparse.Namespace, rows: list[dict], save: Callable[[str], None]
) -> dict[str, object]:
    """Run the study of ``few-labels``, appending to ``rows`` and saving the table after each.

    Returns the facts of the run note: the model's config, the data, rows and minutes.
    """
    from simclr_teach.checkpoint import load_checkpoint
    from simclr_teach.data import load_mnist
    from simclr_teach.protocol import FEW_LABEL_COLUMNS, few_label_study
    from simclr_teach.train import TrainConfig, load_model, load_or_train
    from simclr_teach.utils import csv_text

    start = time.perf_counter()
    if args.checkpoint is None:  # the default run pretrained with each seed
        configs = [replace(TrainConfig(), seed=seed) for seed in args.seeds]
        models = [load_or_train(config, progress=True)[0] for config in configs]
    else:
        configs = [TrainConfig.from_dict(load_checkpoint(args.checkpoint)["config"])]
        models = [load_model(args.checkpoint)] * len(args.seeds)
        configs *= len(args.seeds)
    config = configs[0]
    data = load_mnist(config.data)

    def report(row: dict) -> None:
        rows.append(row)
        save(csv_text(rows, FEW_LABEL_COLUMNS, digits=4))
        print(
            f"{row['per_class']:4d} per class, seed {row['seed']}: {row['method']:18s} "
            f"test {row['test_accuracy']:.1%} ({row['choice']})",
            flush=True,
        )

    few_label_study(
        models,
        data.train_images,
        data.train_labels,
        data.test_images,
        data.test_labels,
        args.budgets,
        args.seeds,
        pretrain_seeds=[c.seed for c in configs],
        on_row=report,
    )
    minutes = round((time.perf_counter() - start) / 60, 1)  # pretraining included
    model = {**asdict(config), "seed": sorted({c.seed for c in configs})}
    return {"model": model, "data": data.name, "rows": len(rows), "minutes": minutes}


def _few_labels(args: argparse.Namespace, argv: list[str]) -> int:
    from simclr_teach.protocol import check_few_label_arguments
    from simclr_teach.utils import (
        atomic_write_text,
        note_path,
        partial_path,
        run_note,
        writing_results,
    )

    note = note_path(args.out)  # every argument is checked before a model is trained
    check_few_label_arguments(args.budgets, args.seeds)
    partial = partial_path(args.out)
    busy = (
        f"another process is writing {args.out} (its rows so far: {partial}); wait for it to "
        "finish, or pass another --out"
    )
    rows: list[dict] = []
    with writing_results(args.out, busy) as save:  # args.out is replaced once every row is in
        try:
            facts = _few_label_rows(args, rows, save)
        except BaseException:
            if rows:  # these rows are kept nowhere else: say where they are
                print(
                    f"{args.out} is unchanged; the {len(rows)} rows computed before it stopped "
                    f"are in {partial}",
                    file=sys.stderr,
                )
            raise
        atomic_write_text(note, run_note(_command(argv), **facts))
    print(f"wrote {len(rows)} rows to {args.out} (command in {note})")
    return 0


# What a command interrupted by Ctrl-C leaves, and how to go on (train's loop says more itself).
AFTER_CTRL_C = {
    "train": "rerun the same command to resume from its last saved epoch",
    "evaluate": "nothing was written, so rerun the same command to evaluate",
    "sweep": "finished runs are cached, so the same command continues from there",
    "few-labels": "rerun the same command to start the study again",
    "methods": "finished runs are cached, so the same command continues from there",
}


def main(argv: list[str] | None = None) -> int:
    """Entry point; the exit status: 2 for a bad flag, 1 for a one-line error, 130 after Ctrl-C."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        from simclr_teach.utils import use_free_cores

        args = _parser().parse_args(argv)
        use_free_cores()  # once, before any work: every command shares a busy CPU gracefully
        if args.command == "sweep":
            return _sweep(args, argv)
        if args.command == "few-labels":
            return _few_labels(args, argv)
        if args.command == "methods":
            return _methods(args, argv)
        return _train_command(args) if args.command == "train" else _evaluate(args)
    except (OSError, ValueError, FloatingPointError) as error:  # files, network, locks, values
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # anywhere: start-up, data loading, evaluating, between runs
        command = argv[0] if argv and argv[0] in AFTER_CTRL_C else ""
        advice = f"; {AFTER_CTRL_C[command]}" if command else ""
        print(f"\n{command or 'command'} interrupted{advice}", file=sys.stderr)
        return 130
