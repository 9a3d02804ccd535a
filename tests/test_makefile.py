"""The README's commands as make would run them (dry runs: nothing is installed or started)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def dry_run(*args: str) -> str:
    return subprocess.run(
        ["make", "-n", *args], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_lab_allows_root_only_as_root():
    # JupyterLab exits 1 as root ("Running as root is not recommended") unless --allow-root
    line = next(x for x in dry_run("lab").splitlines() if "jupyter lab" in x)
    assert ("--allow-root" in line) == (os.getuid() == 0)
    assert line.rstrip().endswith("notebooks/")


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_lab_passes_server_options():
    line = next(
        x
        for x in dry_run("lab", "LAB_ARGS=--no-browser --port=9").splitlines()
        if "jupyter lab" in x
    )
    assert "--no-browser --port=9" in line


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_test_variant_runs_the_notebooks_as_another_machine():
    line = dry_run("test-variant").replace("\\\n", " ")
    line = next(x for x in line.splitlines() if "--nbval-lax" in x)
    assert "SIMCLR_TEACH_SEED=1" in line and "SIMCLR_TEACH_PRECISION=float32" in line
    assert line.rstrip().endswith("notebooks/")
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test\n" in ci and "make test-variant\n" in ci, "CI runs both passes"


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_both_nbval_passes_grade_the_exercises_and_keep_slow_evaluations():
    """Both nbval passes load the grading plugin (the exercises are checked in the one run of
    each notebook) and keep simclr_teach.memo's results; `make notebooks`, which writes the
    committed outputs, computes every one."""
    for target in ("test-notebooks", "test-variant"):
        line = dry_run(target).replace("\\\n", " ")
        line = next(x for x in line.splitlines() if "pytest" in x)
        assert "SIMCLR_TEACH_MEMO=1" in line, target
        assert "-p tests.nbval_grading" in line, target
    assert "SIMCLR_TEACH_MEMO" not in dry_run("notebooks", "NB=notebooks/00_setup.ipynb")
