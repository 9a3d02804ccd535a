"""How long a student waits for each notebook: with an empty run cache (a fresh clone) and warm.

Usage: python scripts/notebook_times.py [--readme] [notebooks/*.ipynb]  (make notebook-times)

Each notebook is executed top to bottom by a fresh Jupyter kernel, as Run All does, twice:
first with an empty run cache (``$SIMCLR_TEACH_RUNS`` set to a new temporary folder, so every
model a notebook needs is trained as on a fresh clone; the committed result files in
notebooks/results are read, as on a fresh clone), then again with the cache that the first pass
filled. The notebooks run in order, so 05 finds the run that 04 trained, as a student who works
through the course does; the "cold" column is therefore what each notebook adds on a fresh clone
taken in order. Nothing is written into the notebooks.

Writes notebooks/results/notebook_times.csv (one row per notebook, with the CPU and the load of
the machine) and prints a markdown table; ``--readme`` also replaces the table between the
``<!-- notebook-times -->`` markers in README.md.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
OUT = REPO_ROOT / "notebooks" / "results" / "notebook_times.csv"
MARK = "<!-- notebook-times -->"
BUDGET_MINUTES = 5  # issue 25: every notebook under 5 minutes on a fresh clone, 04 excepted
COLUMNS = ["notebook", "cold_seconds", "warm_seconds", "cpu", "load_at_start", "date"]


def execute(path: Path, runs: Path) -> float:
    """Seconds to execute ``path`` in a fresh kernel with ``$SIMCLR_TEACH_RUNS=runs``."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    before = os.environ.get("SIMCLR_TEACH_RUNS")
    os.environ["SIMCLR_TEACH_RUNS"] = str(runs)  # the kernel inherits this process's environment
    for name in ("SIMCLR_TEACH_MEMO", "SIMCLR_TEACH_SEED", "SIMCLR_TEACH_PRECISION"):
        os.environ.pop(
            name, None
        )  # as a student runs them: no memo, the default seed and precision
    try:
        client = NotebookClient(
            notebook,
            timeout=1800,
            kernel_name="python3",
            resources={"metadata": {"path": str(path.parent)}},
        )
        start = time.perf_counter()
        client.execute()
        return time.perf_counter() - start
    finally:
        if before is None:
            del os.environ["SIMCLR_TEACH_RUNS"]
        else:
            os.environ["SIMCLR_TEACH_RUNS"] = before


def table(rows: list[dict[str, str]]) -> str:
    """The markdown table README shows (minutes and seconds)."""

    def clock(seconds: str) -> str:
        minutes, rest = divmod(round(float(seconds)), 60)
        return f"{minutes}:{rest:02d}"

    lines = [
        "| notebook | fresh clone (empty cache) | cache warm |",
        "| --- | --- | --- |",
        *[
            f"| {r['notebook']} | {clock(r['cold_seconds'])} | {clock(r['warm_seconds'])} |"
            for r in rows
        ],
    ]
    first = rows[0]
    return "\n".join(lines) + (
        f"\n\nMeasured by `python scripts/notebook_times.py --readme` on {first['cpu']} "
        f"(load average {first['load_at_start']} at start), {first['date']}: each notebook in a "
        "fresh kernel, in order, first with an empty run cache, then again with the cache warm."
    )


def update_readme(text: str, readme: Path = REPO_ROOT / "README.md") -> None:
    """Replace the block between the two MARK lines of README.md with ``text``."""
    content = readme.read_text()
    parts = content.split(MARK)
    if len(parts) != 3:
        raise SystemExit(f"README.md needs exactly two {MARK} lines around the table")
    readme.write_text(parts[0] + MARK + "\n" + text + "\n" + MARK + parts[2])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--readme", action="store_true", help="also update README.md's table")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO_ROOT))
    from benchmarks.common import cpu_model
    from simclr_teach.utils import atomic_write_text

    notebooks = args.notebooks or sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = f"{os.getloadavg()[0]:.2f}"
    cold, warm = {}, {}
    with tempfile.TemporaryDirectory(prefix="notebook-times-") as runs:
        for path in notebooks:
            cold[path.name] = execute(path.resolve(), Path(runs))
            print(f"{path.name}: {cold[path.name]:.0f} s with an empty cache", flush=True)
        for path in notebooks:
            warm[path.name] = execute(path.resolve(), Path(runs))
            print(f"{path.name}: {warm[path.name]:.0f} s with the cache warm", flush=True)
    rows = [
        {
            "notebook": name,
            "cold_seconds": f"{cold[name]:.0f}",
            "warm_seconds": f"{warm[name]:.0f}",
            "cpu": cpu_model(),
            "load_at_start": load,
            "date": date,
        }
        for name in cold
    ]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(OUT, buffer.getvalue())
    text = table(rows)
    print(text)
    over = [r["notebook"] for r in rows if float(r["cold_seconds"]) > 60 * BUDGET_MINUTES]
    print(f"over {BUDGET_MINUTES} minutes with an empty cache: {over or 'none'}")
    if args.readme:
        update_readme(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
