"""The grading plugin (tests/nbval_grading.py) on a tiny graded notebook: what it lets through
and what it stops. One nbval run in a subprocess, as `make test-notebooks` runs it."""

import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]


def _cell(kind: str, source: str, grade_id: str | None = None, check: bool = False):
    make = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
    cell = make(textwrap.dedent(source).strip())
    if grade_id:
        meta = {"grade": check, "grade_id": grade_id, "locked": check, "schema_version": 3}
        cell.metadata["nbgrader"] = {**meta, "solution": not check, "task": False}
        if check:
            cell.metadata["nbgrader"]["points"] = 1
    return cell


def _exercise(n: int, answer: str, check: str) -> list:
    answer = f"### BEGIN SOLUTION\n{answer}\n### END SOLUTION"
    return [
        _cell("code", answer, f"ex-{n}-answer"),
        _cell("code", check, f"ex-{n}-check", check=True),
    ]


# exercise 1 is sound; exercise 2's check passes a blank answer (it checks nothing); exercise 3's
# check lets a wrong total through, and after it a lesson cell reads the answer's variable,
# which a student's kernel does not hold
CELLS = [
    _cell("markdown", "# A tiny graded notebook"),
    _cell("code", "import math\nvalues = [3, 1, 2]"),
    *_exercise(1, "largest = max(values)", "assert largest == 3\nprint('right')"),
    _cell("code", "print(sorted(values))  # a lesson cell"),
    *_exercise(2, "smallest = min(values)", "print('no check at all')"),
    *_exercise(3, "total = sum(values)", "assert total > 0  # too weak: a wrong total passes"),
    _cell("code", "print(total * 2)  # reads the answer"),
]

CASES = """
from tests import nbval_grading

nbval_grading.WRONG_ANSWERS["tiny"] = [
    ("ex-1-check", "largest", "min(values)"),     # rejected
    ("ex-1-check", "largest", "values[0]"),       # the model answer's value: nothing to reject
    ("ex-3-check", "total", "len(values) * 2"),  # 6 as well: nothing to reject
    ("ex-3-check", "total", "1"),                # passes the weak check: reported
]
"""


@pytest.fixture(scope="module")
def nbval_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    notebook = nbformat.v4.new_notebook(cells=CELLS)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nbformat.write(notebook, folder / "tiny.ipynb")
    (folder / "tiny_cases.py").write_text(CASES)
    command = [
        sys.executable,
        "-m",
        "pytest",
        "--nbval-lax",
        "--nbval-current-env",
        "-p",
        "no:cacheprovider",
        "-p",
        "tests.nbval_grading",
        "-p",
        "tiny_cases",
        "-o",
        "addopts=",
        "--rootdir",
        str(folder),
        str(folder / "tiny.ipynb"),
    ]
    env = {**__import__("os").environ, "PYTHONPATH": f"{REPO}:{folder}"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    return done.stdout + done.stderr


def _failed(output: str) -> set[int]:
    return {
        int(line.split("Cell ")[1].split()[0])
        for line in output.splitlines()
        if line.startswith("FAILED") and "Cell " in line
    }


def test_a_sound_exercise_passes_and_its_wrong_answer_is_rejected(nbval_run):
    # code cells: 0 imports, 1-2 exercise 1, 3 lesson, 4-5 exercise 2, 6-7 exercise 3, 8 lesson
    assert 2 not in _failed(nbval_run), nbval_run
    assert "3 exercises graded blank and wrong, 1 wrong answers rejected" in nbval_run
    assert "2 equal to the model answer on this run" in nbval_run


def test_a_check_that_passes_a_blank_answer_fails(nbval_run):
    assert 5 in _failed(nbval_run), nbval_run
    assert "ex-2-check: the check passes on the blank answer" in nbval_run


def test_an_accepted_wrong_answer_fails(nbval_run):
    assert 7 in _failed(nbval_run), nbval_run
    assert "ex-3-check: total = 1 was not rejected" in nbval_run


def test_a_lesson_cell_that_reads_an_answer_fails_as_for_a_student(nbval_run):
    assert 8 in _failed(nbval_run), nbval_run
    assert "NameError" in nbval_run
    assert _failed(nbval_run) == {5, 7, 8}
