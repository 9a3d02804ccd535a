"""The exercises as assignments: student versions, autograding, checks that reject wrong answers.

The notebooks in notebooks/ are the instructor version (solutions in; nbval runs them).
`scripts/assignments.py` (make assignments) releases the student version with nbgrader.
"""

import copy
import json
import os
import shutil
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import assignments  # noqa: E402

GRADED = assignments.graded_notebooks()


def _nbgrader(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


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
    graded = [(i, _nbgrader(c)) for i, c in enumerate(cells) if _nbgrader(c)]
    ids = [meta["grade_id"] for _, meta in graded]
    assert len(ids) == len(set(ids)), "grade ids must be unique"
    for i, meta in graded:
        cell = cells[i]
        text = "".join(cell["source"])
        if meta["solution"] and cell["cell_type"] == "code":
            check = _nbgrader(cells[i + 1])
            assert check.get("grade") and not check.get("solution"), f"no check after {meta}"
            assert "### BEGIN SOLUTION" in text and "### END SOLUTION" in text
        if meta["solution"] and cell["cell_type"] == "markdown":
            assert meta["grade"] and meta["points"] > 0, "an open question is graded by hand"
            assert "### BEGIN SOLUTION" in text, "with a model answer for the instructor"
    hints = sum("<summary>Hint</summary>" in "".join(c["source"]) for c in cells)
    answers = sum(1 for _, m in graded if m["solution"])
    assert hints >= answers, "every exercise has a hint"


def test_student_version_hides_solutions_and_hidden_tests(course):
    _, released = course
    assert [p.name for p in released] == [p.name for p in GRADED]
    for path in released:
        nb = nbformat.read(path, as_version=4)
        text = "\n".join(cell.source for cell in nb.cells)
        assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text
        assert not any(cell.get("outputs") for cell in nb.cells if cell.cell_type == "code")
        for cell in nb.cells:
            meta = _nbgrader(cell)
            if meta.get("solution") and cell.cell_type == "code":
                assert "raise NotImplementedError" in cell.source
            if meta.get("solution") and cell.cell_type == "markdown":
                assert "YOUR ANSWER HERE" in cell.source


def _execute(path: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=1800,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    return nb


def test_student_version_runs_except_the_exercises(course):
    """Every lesson cell runs in the student version; exercise cells are the only errors."""
    _, released = course
    for path in released:
        nb = _execute(path)
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            errors = [o for o in cell.outputs if o.output_type == "error"]
            meta = _nbgrader(cell)
            if meta.get("solution"):
                assert [e.ename for e in errors] == ["NotImplementedError"], cell.source
            elif not meta.get("grade"):
                assert not errors, f"{path.name}: a lesson cell failed:\n{cell.source}"


def test_autograder_gives_the_instructor_full_marks_and_the_student_none(course):
    root, released = course
    for source, student in zip(GRADED, released, strict=True):
        # the instructor version, submitted with the files the student version comes with
        full = root / "instructor-copy" / source.stem
        full.mkdir(parents=True)
        for item in student.parent.iterdir():
            target = full / item.name
            if item.is_dir():
                shutil.copytree(item, target)
            elif item.name != source.name:
                target.write_bytes(item.read_bytes())
        (full / source.name).write_bytes(source.read_bytes())
        instructor = assignments.autograde(root, full / source.name, "instructor")
        blank = assignments.autograde(root, student, "blank")
        assert instructor and all(score == top for score, top in instructor.values()), instructor
        assert set(blank) == set(instructor)
        assert all(score == 0 for score, _ in blank.values()), blank


# ---- the checks reject plausible wrong answers --------------------------------------------------

# notebook -> [(check grade_id, variable, wrong answer as Python source)]
WRONG_ANSWERS = {
    "00_setup": [
        ("ex00-1-check", "my_answer", "math.log(2 * 16)"),  # 2N: counted the anchor itself
        ("ex00-1-check", "my_answer", "math.log(2 * 16 - 2)"),  # 2N - 2: forgot the partner
        ("ex00-1-check", "my_answer", "math.log(16)"),  # N: one view per digit
        ("ex00-1-check", "my_answer", "31"),  # no log
        ("ex00-1-check", "my_answer", "math.log10(31)"),  # the wrong logarithm
        ("ex00-3-check", "my_function", "mnist_files_present()"),  # its result, not the function
        ("ex00-3-check", "my_function", "load_mnist"),  # the loader
        ("ex00-4-check", "head_parameters", "count_parameters(model)"),  # the whole model
        ("ex00-4-check", "head_parameters", "count_parameters(model.encoder)"),  # what is kept
        (
            "ex00-4-check",
            "head_parameters",
            "sum(p.numel() for n, p in model.head.named_parameters() if n.endswith('weight'))",
        ),  # weights without biases
    ],
    "02_nt_xent_loss": [
        ("ex02-1-check", "my_floor", "math.log(1 + (2 * TRAIN_N - 1) * math.exp(-1 / 0.1))"),
        ("ex02-1-check", "my_floor", "(2 * TRAIN_N - 2) * math.exp(-1 / 0.1)"),  # no log
        ("ex02-1-check", "my_floor", "loss_floor(TRAIN_N, TEMPERATURE)"),  # the wrong tau
        ("ex02-1-check", "my_floor", "loss_floor(N_PAIRS, 0.1)"),  # the wrong N
        ("ex02-2-check", "simplex", "torch.eye(8)"),  # orthogonal, not a simplex
        ("ex02-2-check", "simplex", "torch.eye(8) - 1 / 7"),  # centred by the wrong amount
        ("ex02-2-check", "simplex", "-torch.eye(8)"),
        ("ex02-3-check", "decoupled", "nt_xent"),  # the partner still in the denominator
        ("ex02-3-check", "decoupled", "lambda z1, z2, t: nt_xent(z1, z2, t) - 0.1"),
        ("ex02-3-check", "decoupled", "lambda z1, z2, t: nt_xent(z1, z2, t)[None]"),
    ],
}


@pytest.fixture(scope="module")
def lessons():
    """name -> (namespace after every code cell before the exercises, cells by grade id)."""
    cache = {}

    def load(name: str):
        if name not in cache:
            path = REPO / "notebooks" / f"{name}.ipynb"
            cells = json.loads(path.read_text())["cells"]
            first = next(i for i, c in enumerate(cells) if _nbgrader(c))
            namespace: dict = {"__name__": "__lesson__"}
            cwd = os.getcwd()
            os.chdir(path.parent)
            try:
                for cell in cells[:first]:
                    if cell["cell_type"] == "code":
                        exec(compile("".join(cell["source"]), name, "exec"), namespace)
            finally:
                os.chdir(cwd)
            by_id = {_nbgrader(c)["grade_id"]: "".join(c["source"]) for c in cells if _nbgrader(c)}
            cache[name] = namespace, by_id
        return cache[name]

    return load


@pytest.mark.parametrize(
    "name, check, variable, wrong",
    [(name, *case) for name, cases in WRONG_ANSWERS.items() for case in cases],
)
def test_checks_reject_wrong_answers(lessons, name, check, variable, wrong):
    namespace, cells = lessons(name)
    answer = check.replace("-check", "-answer")
    right = copy.copy(namespace)
    exec(cells[answer], right)  # the model solution passes the check, hidden tests included
    exec(cells[check], right)
    wrong_ns = copy.copy(namespace)
    exec(f"{variable} = {wrong}", wrong_ns)
    with pytest.raises((AssertionError, TypeError, RuntimeError, ValueError)):
        exec(cells[check], wrong_ns)
