"""The exercises as assignments: complete metadata, student versions, nbgrader's autograder.

The notebooks in notebooks/ are the instructor version (solutions in; nbval runs them).
`scripts/assignments.py` (make assignments) releases the student version with nbgrader. That the
blank answers score nothing and the checks reject wrong answers is checked in nbval's own run of
each notebook, by the plugin tests/nbval_grading.py (its cases: WRONG_ANSWERS there).
"""

import json
import re
import shutil
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "tests"))

import assignments  # noqa: E402
from nbval_grading import WRONG_ANSWERS, nbgrader_of  # noqa: E402

from tests.support import code_cell_errors  # noqa: E402

GRADED = assignments.graded_notebooks()


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """One course folder with every graded notebook released."""
    root = tmp_path_factory.mktemp("course")
    return root, assignments.generate(root)


def test_some_notebooks_have_graded_exercises():
    assert [path.name for path in GRADED][:1] == ["00_setup.ipynb"]


@pytest.mark.parametrize("path", GRADED, ids=lambda p: p.stem)
def test_every_exercise_is_complete(path):
    """Each answer cell is followed by its check; each check has a visible part; ids unique."""
    cells = json.loads(path.read_text())["cells"]
    graded = [(i, nbgrader_of(c)) for i, c in enumerate(cells) if nbgrader_of(c)]
    ids = [meta["grade_id"] for _, meta in graded]
    assert len(ids) == len(set(ids)), "grade ids must be unique"
    for i, meta in graded:
        cell = cells[i]
        text = "".join(cell["source"])
        if meta["solution"] and cell["cell_type"] == "code":
            check = nbgrader_of(cells[i + 1])
            assert check.get("grade") and not check.get("solution"), f"no check after {meta}"
            assert "### BEGIN SOLUTION" in text and "### END SOLUTION" in text
        if meta["solution"] and cell["cell_type"] == "markdown":
            assert meta["grade"] and meta["points"] > 0, "an open question is graded by hand"
            assert "### BEGIN SOLUTION" in text, "with a model answer for the instructor"
    hints = sum("<summary>Hint</summary>" in "".join(c["source"]) for c in cells)
    answers = sum(1 for _, m in graded if m["solution"])
    assert hints >= answers, "every exercise has a hint"


RUBRIC = re.compile(r"\*\*Rubric \((\d+) points\)\.\*\*\sFull marks:\s.+\sNo marks:\s", re.S)


@pytest.mark.parametrize("path", GRADED, ids=lambda p: p.stem)
def test_points_follow_difficulty_and_open_answers_have_a_rubric(path):
    """Points 1-3 by difficulty, not all equal in a notebook; a rubric for each hand-graded answer.

    1: follow the lesson to a number; 2: apply it to a new case or write a short function; 3:
    transfer, design, or explain with evidence from the notebook. The rubric of an open answer sits
    in its solution region (nbgrader strips it from the student version), after the model answer,
    and names the cell's own points, so that two graders agree on what earns them.
    """
    cells = json.loads(path.read_text())["cells"]
    points = {}
    for cell in cells:
        meta = nbgrader_of(cell)
        if not meta:
            continue
        if meta["solution"] and cell["cell_type"] == "code":
            assert "points" not in meta or not meta["points"], f"{meta['grade_id']}: an answer cell"
            continue
        assert meta.get("grade"), meta
        assert isinstance(meta["points"], int) and 1 <= meta["points"] <= 3, meta
        points[meta["grade_id"]] = meta["points"]
        if meta["solution"]:  # a hand-graded markdown answer
            text = "".join(cell["source"])
            solution = text.split("### BEGIN SOLUTION", 1)[1].split("### END SOLUTION", 1)[0]
            rubric = RUBRIC.search(solution)
            name = meta["grade_id"]
            assert rubric, f"{name}: no **Rubric (P points).** Full marks: ... No marks: ..."
            assert int(rubric.group(1)) == meta["points"], f"{name}: the rubric's points"
            assert solution.strip().index("**Rubric") > 0, f"{name}: the rubric after the answer"
    assert len(set(points.values())) > 1, f"{path.stem}: every exercise has the same points"


def test_student_version_hides_solutions_and_hidden_tests(course):
    _, released = course
    assert [p.name for p in released] == [p.name for p in GRADED]
    for path in released:
        nb = nbformat.read(path, as_version=4)
        text = "\n".join(cell.source for cell in nb.cells)
        assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text
        assert "Rubric" not in text, f"{path.name}: a grader's rubric in the student version"
        assert not any(cell.get("outputs") for cell in nb.cells if cell.cell_type == "code")
        for cell in nb.cells:
            meta = nbgrader_of(cell)
            if meta.get("solution") and cell.cell_type == "code":
                assert "raise NotImplementedError" in cell.source
            if meta.get("solution") and cell.cell_type == "markdown":
                assert "YOUR ANSWER HERE" in cell.source


# nbgrader's own autograder, on the cheapest notebook: its plumbing (submission folders, the
# gradebook, scores of code grade cells). For every notebook the same verdicts come from nbval's
# run with tests/nbval_grading.py (make test-notebooks, make test-variant): it executes the
# instructor version (hidden tests included), so every model answer passes its check, which is
# full marks, since a grade cell scores its points exactly when it does not fail; and in the same
# kernel it runs each blank answer (NotImplementedError, its check fails: no marks) and the wrong
# answers of WRONG_ANSWERS, then goes on with the variables a student's kernel holds. So each
# notebook is executed once per CI variant, not once more here and twice more by nbgrader.
AUTOGRADED = "00_setup"


def test_autograder_full_marks_for_the_instructor_none_for_a_blank_student(course):
    """Autograde the instructor version and the untouched student version of one notebook."""
    root, released = course
    source = next(path for path in GRADED if path.stem == AUTOGRADED)
    student = next(path for path in released if path.stem == AUTOGRADED)
    # the instructor version, submitted with the files the student version comes with
    full = root / "instructor-copy" / source.stem
    shutil.copytree(student.parent, full)
    (full / source.name).write_bytes(source.read_bytes())
    instructor = assignments.autograde(root, full / source.name, "instructor")
    blank = assignments.autograde(root, student, "blank")
    assert instructor and all(score == top for score, top in instructor.values()), instructor
    assert set(blank) == set(instructor)
    assert all(score == 0 for score, _ in blank.values()), blank

    executed = root / "autograded" / "blank" / source.stem / source.name
    for meta, cell_source, errors in code_cell_errors(executed):
        if meta.get("solution"):
            assert errors == ["NotImplementedError"], cell_source
        elif not meta.get("grade"):
            assert not errors, f"{source.name}: a lesson cell failed:\n{cell_source}"


def test_every_wrong_answer_names_a_check_of_its_notebook():
    """tests/nbval_grading.py's WRONG_ANSWERS: a case whose check was renamed would be skipped."""
    for name, cases in WRONG_ANSWERS.items():
        path = REPO / "notebooks" / f"{name}.ipynb"
        assert path in GRADED, f"{name}: not a graded notebook"
        cells = json.loads(path.read_text())["cells"]
        checks = {nbgrader_of(c)["grade_id"] for c in cells if nbgrader_of(c).get("grade")}
        answers = {
            nbgrader_of(c)["grade_id"]: "".join(c["source"])
            for c in cells
            if nbgrader_of(c).get("solution") and c["cell_type"] == "code"
        }
        for check, variable, _ in cases:
            assert check in checks, f"{name}: no check cell {check}"
            answer = answers.get(check.replace("-check", "-answer"))
            assert answer is not None, f"{name}: no answer cell for {check}"
            for part in variable.split(","):
                assert part.strip() in answer, f"{name}: {check}'s answer sets no {part}"
