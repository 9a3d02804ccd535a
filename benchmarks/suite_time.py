"""Item 5: wall time of the whole test suite, `make test`, in its two halves.

Runs `make test-unit` (pytest tests, browser tests excluded) and `make test-notebooks` (nbval
of every notebook) as subprocesses from the repository root and records each wall time, exit
code and pytest's closing line. Long (minutes), so not in the default run:
`python -m benchmarks --only suite`. --quick times `make -n test` (a dry run) instead.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from benchmarks.common import REPO_ROOT, RESULTS, add_table, new_result

NAME, TITLE = "suite", "Test suite time (item 5): make test"
COMMANDS = {"unit tests": ["make", "test-unit"], "notebooks (nbval)": ["make", "test-notebooks"]}


def time_command(command: list[str], timeout: float = 5400) -> dict[str, Any]:
    """Wall time, exit code and last output line of a command run from the repository root."""
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    return {
        "command": " ".join(command),
        "seconds": time.perf_counter() - start,
        "returncode": done.returncode,
        "last_line": lines[-1].strip() if lines else "",
    }


def run(quick: bool = False, out_dir: str | Path = RESULTS) -> dict[str, Any]:
    """Time each half of make test (quick: a dry run of make test)."""
    result = new_result(NAME, TITLE, quick)
    commands = {"make -n test (dry run)": ["make", "-n", "test"]} if quick else COMMANDS
    runs = {name: time_command(command) for name, command in commands.items()}
    total = sum(r["seconds"] for r in runs.values())
    add_table(
        result,
        "Wall time of each half of `make test` (one run each)",
        ["part", "command", "s", "exit", "last line"],
        [
            [name, f"`{r['command']}`", f"{r['seconds']:.0f}", r["returncode"], r["last_line"]]
            for name, r in runs.items()
        ]
        + [["total", "", f"{total:.0f}", "", ""]],
    )
    result["data"] = {"runs": runs, "total_seconds": total}
    result["notes"].append("Measured once (minutes long); the CI limit for a whole run is 90 min.")
    return result
