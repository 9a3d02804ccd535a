"""Student versions of the course's exercises, and their autograding, with nbgrader.

`make assignments` (= `python scripts/assignments.py`) turns every notebook of `notebooks/` whose
exercises carry nbgrader metadata into one nbgrader assignment, in an nbgrader course folder
(default `assignments/`, git-ignored: it is generated, and holds the instructor's gradebook):

    assignments/nbgrader_config.py       course settings (cell timeout long enough for training)
    assignments/source/<notebook>/       the instructor version (a copy of notebooks/, solutions in)
    assignments/release/<notebook>/      the student version: solutions replaced by
                                         `raise NotImplementedError()`, hidden tests removed,
                                         outputs cleared; hand this out
    assignments/gradebook.db             nbgrader's database of cells and grades

The instructor then runs nbgrader's own commands in `assignments/` (collect, autograde,
generate_feedback); see README, "Exercises". `autograde` below is what the tests use.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
DEFAULT_ROOT = REPO / "assignments"
CELL_TIMEOUT = 1800  # seconds: notebook 04 trains the default run in one cell

CONFIG = f"""# Written by scripts/assignments.py (make assignments); nbgrader reads it here.
c = get_config()  # noqa: F821
c.CourseDirectory.course_id = "simclr-teach"
c.Execute.timeout = {CELL_TIMEOUT}
"""


def graded_notebooks(folder: Path = NOTEBOOKS) -> list[Path]:
    """The notebooks in ``folder`` that have at least one nbgrader cell, in course order."""
    found = []
    for path in sorted(folder.glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        if any("nbgrader" in cell.get("metadata", {}) for cell in cells):
            found.append(path)
    return found


def _api(root: Path):
    # nbgrader runs `alembic` (its database migrations) as a command: it must find the one of
    # this environment even when the environment is not activated (make calls .venv/bin/python)
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config import Config

    config = Config()
    config.CourseDirectory.root = str(root)
    config.CourseDirectory.course_id = "simclr-teach"
    config.Execute.timeout = CELL_TIMEOUT
    config.Exchange.root = str(root / "exchange")  # release/collect need one; a local folder
    return NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)


def _check(result: dict, what: str) -> None:
    if not result.get("success"):
        raise RuntimeError(f"nbgrader {what} failed:\n{result.get('error') or result.get('log')}")


def generate(root: Path = DEFAULT_ROOT, notebooks: list[Path] | None = None) -> list[Path]:
    """Build the course folder at ``root`` and release one assignment per graded notebook.

    Returns the student notebooks (``root/release/<name>/<name>.ipynb``).
    """
    root = Path(root)
    notebooks = graded_notebooks() if notebooks is None else notebooks
    if not notebooks:
        raise RuntimeError(f"no notebook in {NOTEBOOKS} has nbgrader cells")
    root.mkdir(parents=True, exist_ok=True)
    (root / "nbgrader_config.py").write_text(CONFIG)
    api = _api(root)
    released = []
    for notebook in notebooks:
        name = notebook.stem
        source = root / "source" / name
        shutil.rmtree(source, ignore_errors=True)
        source.mkdir(parents=True)
        shutil.copy2(notebook, source / notebook.name)
        if (NOTEBOOKS / "results").is_dir():  # committed results some notebooks read
            shutil.copytree(NOTEBOOKS / "results", source / "results")
        _check(api.generate_assignment(name, force=True), f"generate_assignment {name}")
        released.append(root / "release" / name / notebook.name)
    return released


def autograde(root: Path, notebook: Path, student: str) -> dict[str, tuple[float, float]]:
    """Submit ``notebook`` (with the files beside it) as ``student`` and autograde it.

    Returns {grade_id: (score, max_score)} for the autograded test cells.
    """
    from nbgrader.api import Gradebook

    root, notebook = Path(root), Path(notebook)
    name = notebook.stem
    submitted = root / "submitted" / student / name
    shutil.rmtree(submitted, ignore_errors=True)
    shutil.copytree(notebook.parent, submitted)
    _check(_api(root).autograde(name, student, force=True), f"autograde {name} for {student}")
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        submission = gradebook.find_submission_notebook(name, name, student)
        # code grade cells are the autograded checks; markdown ones wait for a person
        return {
            grade.name: (grade.score, grade.max_score)
            for grade in submission.grades
            if grade.cell_type == "code"
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--root", type=Path, default=DEFAULT_ROOT, help="course folder (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    for path in generate(args.root):
        print(f"student version: {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
