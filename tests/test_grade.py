"""`make grade NB=...` (scripts/grade.py): a student grades a copy of a notebook, every check run.

Graded on 00, the cheapest notebook: one exercise answered right, one wrong, the rest blank.
"""

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import assignments  # noqa: E402
import grade  # noqa: E402

NAME = "00_setup"


@pytest.fixture(scope="module")
def students_notebook(tmp_path_factory) -> Path:
    """The student version of 00 with exercise 1 answered right and exercise 4 wrong."""
    root = tmp_path_factory.mktemp("course")
    released = assignments.generate(root, [REPO / "notebooks" / f"{NAME}.ipynb"])[0]
    nb = nbformat.read(released, as_version=4)
    answers = {
        "ex00-1-answer": "my_answer = math.log(2 * 16 - 1)",
        "ex00-4-answer": "head_parameters = count_parameters(model)",  # the whole model
    }
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in answers:
            cell.source = answers[grade_id]
    mine = tmp_path_factory.mktemp("student") / f"{NAME} (1).ipynb"  # a browser's download name
    nbformat.write(nb, mine)
    return mine


def test_each_exercise_is_scored_and_a_failed_check_says_why(students_notebook):
    exercises = {e.grade_id: e for e in grade.grade(students_notebook)}
    first, head = exercises["ex00-1-check"], exercises["ex00-4-check"]
    assert first.score == first.points > 0 and not first.error
    assert head.score == 0 and head.error.startswith("AssertionError"), head
    assert exercises["ex00-3-check"].score == 0  # blank
    assert exercises["ex00-3-check"].error.startswith("not answered yet")
    assert exercises["ex00-2-prediction"].score is None  # a person grades it

    text = grade.report(students_notebook, list(exercises.values()))
    got = sum(e.score for e in exercises.values() if e.score is not None)
    assert text.splitlines()[0].startswith(f"{students_notebook.name}: {got:g} of ")
    assert "graded by a person" in text and head.error.splitlines()[-1][:60] in text


def test_a_notebook_that_is_no_course_notebook_is_named():
    other = REPO / "README.md"
    with pytest.raises(ValueError, match="not a notebook file"):
        grade.grade(other)
    with pytest.raises(ValueError, match="not a copy of a graded notebook.*--as"):
        grade.assignment_of(Path("my_homework.ipynb"))
    assert grade.assignment_of(Path("mine.ipynb"), NAME).stem == NAME


def test_make_grade_without_a_notebook_says_how():
    result = subprocess.run(
        ["make", "--no-print-directory", "grade"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "make grade NB=path/to/your.ipynb" in result.stderr
