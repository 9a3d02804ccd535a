"""Self-check: grade your own copy of a course notebook with every check, as the instructor would.

    make grade NB=path/to/09_capstone.ipynb      (= python scripts/grade.py path/to/...)

It releases that notebook's assignment into a scratch nbgrader course (nothing in the repository
changes), submits your notebook as the student "self-check", and runs nbgrader's autograder: your
notebook is executed from the top in a fresh kernel, and each check cell is the instructor's,
hidden tests included. It prints the points of every exercise and, for a check that failed, the
last line of its error, which says what is wrong. Answers graded by a person are listed with
their points; the instructor version holds their rubric.

Your file is found by its name (``09_capstone.ipynb``, also ``09_capstone-mine.ipynb`` or
``09_capstone (1).ipynb``); ``--as 09_capstone`` names the assignment otherwise. Files your
notebook reads beside it are those of the student version (``notebooks/results``).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import assignments  # noqa: E402

STUDENT = "self-check"


@dataclass
class Exercise:
    """One graded cell of the report: its id, points and, for a failed check, why."""

    grade_id: str
    points: float
    score: float | None  # None: graded by a person
    error: str = ""


def assignment_of(notebook: Path, name: str | None = None) -> Path:
    """The course notebook that ``notebook`` is a copy of (by ``name``, else by its file name)."""
    graded = {path.stem: path for path in assignments.graded_notebooks()}
    wanted = name or next(
        (stem for stem in graded if re.match(rf"{re.escape(stem)}\b", notebook.stem)), None
    )
    if wanted not in graded:
        raise ValueError(
            f"{notebook.name} is not a copy of a graded notebook (by its name); name it with "
            f"--as, one of: {', '.join(graded)}"
        )
    return graded[wanted]


def _check_errors(autograded: Path) -> dict[str, str]:
    """grade_id -> why each check cell failed in the autograded notebook ("Name: message")."""
    errors = {}
    for cell in json.loads(autograded.read_text())["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error" and meta:  # a check or an answer cell
                errors[meta["grade_id"]] = f"{output['ename']}: {output['evalue']}".strip()
    for grade_id in [g for g in errors if g.endswith("-check")]:
        if errors.get(grade_id.replace("-check", "-answer"), "").startswith("NotImplementedError"):
            errors[grade_id] = "not answered yet: the answer cell raises NotImplementedError()"
        elif errors[grade_id].startswith("NotImplementedError"):  # a function left blank
            errors[grade_id] = "not answered yet: your function raises NotImplementedError()"
    return errors


def _hand_graded(source: Path) -> list[tuple[str, float]]:
    """(grade_id, points) of the answers a person grades (markdown answers)."""
    return [
        (meta["grade_id"], meta["points"])
        for cell in json.loads(source.read_text())["cells"]
        if cell["cell_type"] == "markdown"
        and (meta := cell.get("metadata", {}).get("nbgrader", {})).get("grade")
    ]


def grade(notebook: Path, name: str | None = None, root: Path | None = None) -> list[Exercise]:
    """Autograde ``notebook`` in a scratch course at ``root`` (a temporary folder by default)."""
    notebook = Path(notebook).resolve()
    if not notebook.is_file():
        raise ValueError(f"{notebook}: no such notebook (give the path of your .ipynb file)")
    try:
        json.loads(notebook.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{notebook} is not a notebook file (JSON): {error}") from None
    source = assignment_of(notebook, name)
    scratch = root is None
    root = Path(tempfile.mkdtemp(prefix="grade-")) if root is None else Path(root)
    try:
        released = assignments.generate(root, [source], force=True)[0]
        submission = root / "prepared" / source.stem
        shutil.copytree(released.parent, submission)
        shutil.copyfile(notebook, submission / source.name)
        scores = assignments.autograde(root, submission / source.name, STUDENT)
        errors = _check_errors(root / "autograded" / STUDENT / source.stem / source.name)
    finally:
        if scratch:
            shutil.rmtree(root, ignore_errors=True)
    found = [
        Exercise(grade_id, top, score, errors.get(grade_id, ""))
        for grade_id, (score, top) in sorted(scores.items())
    ]
    return found + [Exercise(grade_id, points, None) for grade_id, points in _hand_graded(source)]


def report(notebook: Path, exercises: list[Exercise]) -> str:
    """The per-exercise table and the total, as ``make grade`` prints it."""
    auto = [e for e in exercises if e.score is not None]
    got, top = sum(e.score for e in auto), sum(e.points for e in auto)
    by_hand = sum(e.points for e in exercises if e.score is None)
    lines = [f"{notebook.name}: {got:g} of {top:g} autograded points"]
    if by_hand:
        lines[0] += f" ({by_hand:g} more are graded by a person)"
    for e in sorted(exercises, key=lambda e: e.grade_id):
        if e.score is None:
            lines.append(f"  {e.grade_id:<22}  -/{e.points:g}  graded by a person")
            continue
        why = f"  {e.error.splitlines()[-1][:300]}" if e.error else ""
        lines.append(f"  {e.grade_id:<22} {e.score:g}/{e.points:g}{why}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebook", nargs="?", type=Path, help="your notebook (.ipynb)")
    parser.add_argument(
        "--as", dest="name", help="the course notebook it answers, e.g. 09_capstone"
    )
    args = parser.parse_args(argv)
    if args.notebook is None:
        print("error: which notebook? make grade NB=path/to/your.ipynb", file=sys.stderr)
        return 2
    # nbgrader's own database warnings (SQLAlchemy's "not in session") say nothing to a student
    warnings.filterwarnings("ignore", message=".*not in session.*")
    try:
        exercises = grade(args.notebook, args.name)
    except (ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report(args.notebook, exercises))
    return 0


if __name__ == "__main__":
    sys.exit(main())
