"""Command line: ``python -m simclr_teach train | evaluate | sweep | few-labels``. See README.md."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, fields, replace
from pathlib import Path

_TYPES = {"int": int, "float": float, "str": str}


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _add_dataclass_flags(parser: argparse.ArgumentParser, cls: type, defaults: object) -> None:
    """One ``--flag`` per field of a config dataclass, with its default shown."""
    for f in fields(cls):
        kind = _bool if f.type == "bool" else _TYPES.get(str(f.type))
        if kind is None:
            continue  # nested configs get their own flags
        # SUPPRESS: only the flags given on the command line reach the namespace
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, dest=f.name,
                            default=argparse.SUPPRESS, help=f"default: {getattr(defaults, f.name)}")


def _parser() -> argparse.ArgumentParser:
    from simclr_teach.augment import AugmentParams
    from simclr_teach.train import TrainConfig

    parser = argparse.ArgumentParser(prog="python -m simclr_teach",
                                     description="Train and evaluate SimCLR on MNIST.")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a SimCLR model (defaults = the course's run)")
    train.add_argument("--out", type=Path, required=True, help="writes OUT/checkpoint.pt, OUT/metrics.json")
    train.add_argument("--preset", choices=["default", "gpu"], default="default",
                       help="gpu: full MNIST, wider encoder, batch 1024 (flags still override)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_dataclass_flags(train, TrainConfig, TrainConfig())
    _add_dataclass_flags(train.add_argument_group("augmentations at strength 1"),
                         AugmentParams, AugmentParams())
    evaluate = commands.add_parser("evaluate", help="kNN and linear-probe table for a checkpoint")
    evaluate.add_argument("checkpoint", type=Path)
    evaluate.add_argument("--data", default=None, help="auto | embedded | mnist (default: the checkpoint's)")
    evaluate.add_argument("--no-probe", action="store_true", help="skip the linear probe (faster)")
    from simclr_teach.lab import GRIDS, LAB_BASE

    sweep = commands.add_parser("sweep", help="lab runs over a grid (06 lab), scores to a CSV")
    sweep.add_argument("--grid", nargs="+", choices=GRIDS, required=True, help="grids to run, in order")
    sweep.add_argument("--out", type=Path, required=True, help="CSV to write (and OUT.txt: the command)")
    sweep.add_argument("--cache", type=Path, default=None, help="run cache (default: runs/cache)")
    sweep.add_argument("--no-progress", action="store_true", help="no progress output")
    _add_dataclass_flags(sweep.add_argument_group("the base run (default: lab.LAB_BASE)"),
                         TrainConfig, LAB_BASE)
    from simclr_teach.protocol import FEW_LABEL_BUDGETS

    few = commands.add_parser("few-labels", help="kNN, linear probe, supervised CNN and fine-tuning "
                              "on a few labels per class (05), to a CSV")
    few.add_argument("--out", type=Path, required=True, help="CSV to write (and OUT.txt: the command)")
    few.add_argument("--checkpoint", type=Path, default=None,
                     help="SimCLR model (default: the course's default run, trained if not cached)")
    few.add_argument("--budgets", type=int, nargs="+", default=list(FEW_LABEL_BUDGETS),
                     help="labelled digits per class")
    few.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="draws of the labels")
    few.add_argument("--steps", type=int, default=1000, help="classifier schedule length")
    return parser


def _train(args: argparse.Namespace) -> int:
    from simclr_teach import distributed
    from simclr_teach.augment import AugmentParams
    from simclr_teach.data import load_mnist
    from simclr_teach.train import TrainConfig, build_model, train_simclr, validation_split
    from simclr_teach.utils import seed_everything

    given = vars(args)  # holds only the flags that were typed
    base = TrainConfig.gpu_preset() if args.preset == "gpu" else TrainConfig()
    augment = replace(base.augment, **{f.name: given[f.name] for f in fields(AugmentParams)
                                        if f.name in given})
    config = replace(base, augment=augment, **{f.name: given[f.name] for f in fields(TrainConfig)
                                               if f.name in given})
    data = load_mnist(config.data, verbose=os.environ.get("RANK", "0") == "0")  # torchrun: 1 line
    seed_everything(config.seed)
    model = build_model(config)
    val = validation_split(data.train_labels)
    monitor = (data.train_images[~val], data.train_labels[~val],
               data.train_images[val], data.train_labels[val])
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with distributed.process_group(config.device):  # torchrun: join its group, leave it at the end
        history = train_simclr(model, data.train_images, config, progress=not args.no_progress,
                               monitor=monitor, checkpoint_path=args.out / "checkpoint.pt")
        rank, world_size = distributed.rank(), distributed.world_size()
    if rank > 0:
        return 0  # rank 0 wrote the checkpoint; it also writes the metrics and reports
    metrics = {"config": asdict(config), "data": data.name, "history": history.to_dict(),
               "world_size": world_size, "wall_seconds_this_call": time.perf_counter() - start}
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    print(f"trained {config.epochs} epochs in {history.seconds[-1]:.0f} s; final loss "
          f"{history.loss[-1]:.3f}, validation kNN {history.knn[-1]:.1%}")
    print(f"wrote {args.out / 'checkpoint.pt'} and {args.out / 'metrics.json'}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from simclr_teach.checkpoint import load_checkpoint, load_model
    from simclr_teach.data import load_mnist
    from simclr_teach.evaluate import format_table
    from simclr_teach.protocol import evaluation_table

    state = load_checkpoint(args.checkpoint)
    model = load_model(args.checkpoint)
    data = load_mnist(args.data or state["config"]["data"])
    rows, chosen = evaluation_table(model, data.train_images, data.train_labels,
                                    data.test_images, data.test_labels, probe=not args.no_probe)
    print(f"{args.checkpoint}: trained on {data.name}, {len(state['history']['epoch'])} epochs; "
          f"test split of {len(data.test_labels)} digits")
    print(format_table(rows))
    print("chosen on the validation split (50 training digits per class), then the test split "
          "scored once:")
    for name, values in chosen.items():
        print(f"  {name}: " + ", ".join(f"{key} {value:g}" for key, value in values.items()
                                        if not key.startswith("temperature@")
                                        or key == f"temperature@{values['k']}"))
    return 0


def _sweep(args: argparse.Namespace, argv: list[str]) -> int:
    from simclr_teach.lab import LAB_BASE, sweep
    from simclr_teach.train import TrainConfig

    given = vars(args)
    base = replace(LAB_BASE, **{f.name: given[f.name] for f in fields(TrainConfig) if f.name in given})
    rows = sweep(args.grid, args.out, args.cache, base, progress=not args.no_progress,
                 command="python -m simclr_teach " + " ".join(argv))
    print(f"wrote {len(rows)} runs to {args.out} (command in {args.out.with_suffix('.txt')})")
    return 0


def _few_labels(args: argparse.Namespace, argv: list[str]) -> int:
    from simclr_teach.checkpoint import atomic_write_text, load_checkpoint, load_model
    from simclr_teach.data import load_mnist
    from simclr_teach.protocol import few_label_study, write_rows
    from simclr_teach.train import TrainConfig, load_or_train
    from simclr_teach.utils import run_note

    if args.checkpoint is None:
        config = TrainConfig()
        model, _ = load_or_train(config, progress=True)
    else:
        config = TrainConfig.from_dict(load_checkpoint(args.checkpoint)["config"])
        model = load_model(args.checkpoint)
    data = load_mnist(config.data)
    rows, start = [], time.perf_counter()

    def report(row: dict) -> None:
        rows.append(row)
        write_rows(rows, args.out)
        print(f"{row['per_class']:4d} per class, seed {row['seed']}: {row['method']:18s} "
              f"test {row['test_accuracy']:.1%} ({row['choice']})", flush=True)

    few_label_study(model, data.train_images, data.train_labels, data.test_images,
                    data.test_labels, args.budgets, args.seeds, steps=args.steps, progress=report)
    note = run_note("python -m simclr_teach " + " ".join(argv), model=asdict(config),
                    data=data.name, rows=len(rows),
                    minutes=round((time.perf_counter() - start) / 60, 1))
    atomic_write_text(args.out.with_suffix(".txt"), note)
    print(f"wrote {len(rows)} rows to {args.out} (command in {args.out.with_suffix('.txt')})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for a bad flag, 1 for a one-line error)."""
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    try:
        if args.command == "sweep":
            return _sweep(args, argv)
        if args.command == "few-labels":
            return _few_labels(args, argv)
        return _train(args) if args.command == "train" else _evaluate(args)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
