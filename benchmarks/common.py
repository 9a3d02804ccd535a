"""What every benchmark shares: the machine description, side-by-side timing, tables, results.

Timing rule: variants that are compared run in the same process, interleaved round by round
(round r starts at variant r mod V), after a warm-up call each, so drift of a busy machine
(other processes, CPU frequency) hits all variants alike. We report the best time (noise only
ever adds time) and the median beside it; a ratio is computed from the best times.
"""

from __future__ import annotations

import json
import os
import platform
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from statistics import median
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"
REPO_ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    """The CPU's "model name" from /proc/cpuinfo (platform.processor() elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else platform.processor() or "unknown"


# The instruction sets that decide a CPU's kernels here: AVX-512 and its bfloat16, and AMX.
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


def cpu_flags() -> list[str]:
    """Which of CPU_FLAGS /proc/cpuinfo lists (empty where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    match = re.search(r"^flags\s*:\s*(.+)$", text, re.MULTILINE)
    present = set(match.group(1).split()) if match else set()
    return [flag for flag in CPU_FLAGS if flag in present]


def machine_info() -> dict[str, Any]:
    """Where and when the numbers were measured; stored with every result."""
    import torchvision

    try:
        cores = len(os.sched_getaffinity(0))  # the cores this process may use
    except AttributeError:
        cores = os.cpu_count() or 1
    try:
        memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        memory_gib = float("nan")
    return {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cores": cores,
        "logical_cpus": os.cpu_count(),
        "memory_gib": round(memory_gib, 1),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def describe_machine(info: Mapping[str, Any]) -> str:
    """One line for a table caption."""
    flags = info.get("cpu_flags")  # results saved before 2026-12-05 lack it
    cpu = f"{info['cpu']} ({' '.join(flags) or 'no AVX2'})" if flags is not None else info["cpu"]
    return (
        f"{cpu}, {info['cores']} cores, {info['memory_gib']} GiB, "
        f"torch {info['torch']} ({info['torch_threads']} threads), Python {info['python']}, "
        f"load average {info['load_average_1min']} at start, {info['date']}"
    )


@contextmanager
def num_threads(n: int) -> Iterator[None]:
    """torch.set_num_threads(n) inside the block, the previous value after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def interleaved(
    variants: Mapping[str, Callable[[], Any]], repeats: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Seconds per call of each variant, measured side by side.

    Args:
        variants: name -> function doing one unit of work.
        repeats: timed calls per variant.
        warmup: untimed calls per variant first (allocator, caches, lazy init, thread pools).

    Returns:
        name -> list of `repeats` wall-clock seconds.
    """
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names)  # rotate who goes first: no variant always runs cold
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - start)
    return times


def stats(seconds: Sequence[float]) -> dict[str, float]:
    """Best and median of repeated timings, in seconds."""
    return {"best": min(seconds), "median": median(seconds), "repeats": len(seconds)}


def timeit(function: Callable[[], Any], repeats: int, warmup: int = 1) -> dict[str, float]:
    """stats() of one function alone (for things that are not compared side by side)."""
    return stats(interleaved({"f": function}, repeats, warmup)["f"])


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats are printed as given (format them before). A "|" inside
    a cell is escaped, so it cannot split the cell."""

    def line(cells: Sequence[Any]) -> str:
        return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"

    lines = [line(headers), "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += [line(row) for row in rows]
    return "\n".join(lines)


def quick_data(data: Any, train: int, test: int) -> Any:
    """The first ``train`` training and ``test`` test digits of an ``MNISTData`` (--quick runs)."""
    return type(data)(
        data.train_images[:train],
        data.train_labels[:train],
        data.test_images[:test],
        data.test_labels[:test],
        data.name + "-quick",
    )


def new_result(name: str, title: str, quick: bool) -> dict[str, Any]:
    """The dict every benchmark fills: tables, targets, notes and raw data, saved as JSON."""
    return {
        "name": name,
        "title": title,
        "quick": quick,
        "machine": machine_info(),
        "tables": [],
        "targets": [],
        "notes": [],
        "data": {},
    }


def add_table(
    result: dict, title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    result["tables"].append(
        {
            "title": title,
            "headers": list(headers),
            "rows": [[str(cell) for cell in row] for row in rows],
        }
    )


def add_target(result: dict, what: str, value: float | None, goal: str, met: bool | None) -> None:
    """A target of the issue: the measured value, the goal as text, and whether it holds."""
    result["targets"].append({"what": what, "value": value, "goal": goal, "met": met})


def render(result: Mapping[str, Any]) -> str:
    """The markdown of one result: title, machine, targets, tables, notes."""
    parts = [f"## {result['title']}", "", f"Machine: {describe_machine(result['machine'])}."]
    if result.get("quick"):
        parts.append("**--quick run: tiny sizes, the numbers mean nothing.**")
    parts.append("")
    if result["targets"]:
        parts.append(
            markdown_table(
                ["target", "measured", "goal", "holds"],
                [
                    [
                        t["what"],
                        "-" if t["value"] is None else f"{t['value']:.3g}",
                        t["goal"],
                        {True: "yes", False: "**no**", None: "n/a"}[t["met"]],
                    ]
                    for t in result["targets"]
                ],
            )
        )
        parts.append("")
    for table in result["tables"]:
        parts += [f"**{table['title']}**", "", markdown_table(table["headers"], table["rows"]), ""]
    parts += [f"- {note}" for note in result["notes"]]
    return "\n".join(parts).rstrip() + "\n"


def save(result: Mapping[str, Any], out_dir: str | Path = RESULTS) -> Path:
    """Write out_dir/<name>.json, then rebuild out_dir/summary.md from every JSON there."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{result['name']}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    write_summary(out_dir)
    return path


ORDER = [
    "augment",
    "loss",
    "train",
    "time_to_accuracy",
    "frontier",
    "peer",
    "busy_cpu",
    "suite",
]  # order of the summary


def write_summary(out_dir: str | Path = RESULTS) -> Path:
    """summary.md: every saved result rendered, in the order of the issue's items."""
    out_dir = Path(out_dir)
    results = [json.loads(path.read_text()) for path in sorted(out_dir.glob("*.json"))]
    results.sort(key=lambda r: ORDER.index(r["name"]) if r["name"] in ORDER else len(ORDER))
    header = (
        "# Benchmark results\n\nWritten by `make bench` (`python -m benchmarks`); see "
        "benchmarks/README.md for what each number means and how it is measured. Each "
        "section names the machine and the date it was measured on.\n"
    )
    path = out_dir / "summary.md"
    path.write_text(header + "".join("\n" + render(r) for r in results))
    return path
