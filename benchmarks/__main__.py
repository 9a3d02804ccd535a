"""`python -m benchmarks [--only augment,loss] [--quick] [--out DIR]`: run, print, save.

Prints a markdown section per benchmark and writes DIR/<name>.json and DIR/summary.md
(default DIR: benchmarks/results, the published figures).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time

from benchmarks import BENCHMARKS, DEFAULT
from benchmarks.common import RESULTS, describe_machine, machine_info, render, save
from simclr_teach.plots import use_style
from simclr_teach.utils import use_free_cores


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--only",
        default=",".join(DEFAULT),
        help=f"comma-separated subset of {', '.join(BENCHMARKS)} "
        f"(default: {','.join(DEFAULT)}; 'suite' runs make test, ~long)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes: checks the harness runs, the numbers mean nothing",
    )
    parser.add_argument("--out", default=str(RESULTS), help="results folder (default: %(default)s)")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="FIELD=VALUE,...",
        help="time_to_accuracy: also train TrainConfig(FIELD=VALUE, ...); "
        "repeatable, e.g. --variant width=16 "
        "--variant 'temperature=0.2,epochs=10'",
    )
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in args.only if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    use_free_cores()  # once, as a notebook does; the machine line below records the choice
    use_style()  # figures in the course's one style
    print(f"# Benchmarks\n\nMachine: {describe_machine(machine_info())}.\n", flush=True)
    for name in args.only:
        module = importlib.import_module(BENCHMARKS[name])
        start = time.perf_counter()
        extra = {"variants": args.variant} if name == "time_to_accuracy" else {}
        result = module.run(quick=args.quick, out_dir=args.out, **extra)
        result["wall_seconds"] = round(time.perf_counter() - start, 1)
        path = save(result, args.out)
        print(render(result), flush=True)
        print(f"({name}: {result['wall_seconds']:.0f} s, saved {path})\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
