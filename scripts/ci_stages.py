"""How long each stage of `.ci/run` took, as a Markdown table with the machine it ran on.

`.ci/run` appends one "stage<TAB>seconds" line per finished stage to artifacts/ci_stages.tsv
and calls this at the end, which writes artifacts/ci_stages.md. A run worth keeping (a clean
clone on an idle machine) is copied to benchmarks/results/ci_stages.md, the one source of
README's "How long CI takes" (tests/test_readme.py compares the two).

Usage: python3 scripts/ci_stages.py artifacts/ci_stages.tsv > artifacts/ci_stages.md
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("unknown" elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def table(stages: list[tuple[str, int]]) -> str:
    """The stages and their seconds as Markdown, with the total in minutes and seconds."""
    total = sum(seconds for _, seconds in stages)
    rows = [f"| {name} | {seconds:,} |" for name, seconds in stages]
    rows.append(f"| all | {total:,} ({total // 60} min {total % 60} s) |")
    return "\n".join(["| stage | seconds |", "| --- | --- |", *rows])


def main(path: str) -> None:
    lines = Path(path).read_text().splitlines()[1:]  # the header: stage, seconds
    stages = [(name, int(seconds)) for name, seconds in (line.split("\t") for line in lines)]
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    print("# `.ci/run`, stage by stage\n")
    print(
        f"Commit {commit or 'unknown'}, {time.strftime('%Y-%m-%d', time.gmtime())}; "
        f"{cpu_model()}, {os.cpu_count()} CPUs.\n"
    )
    print(table(stages))


if __name__ == "__main__":
    main(sys.argv[1])
