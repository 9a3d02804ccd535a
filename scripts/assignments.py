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

Run again, it regenerates `source/` and `release/` from `notebooks/` and keeps the gradebook and
everything else in the folder. An instructor may edit the source version (that is what
nbgrader's source folder is for): a `source/<notebook>/` or `nbgrader_config.py` that differs
from what would be generated (edited, or with extra files) is an error, and nothing is
written; `make assignments FORCE=1` (`--force`) replaces them.
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


def _source_files(notebook: Path) -> dict[str, Path]:
    """What ``generate`` writes to ``source/<name>/``: relative path -> the file it copies."""
    files = {notebook.name: notebook}
    results = NOTEBOOKS / "results"  # committed results some notebooks read
    if results.is_dir():
        files["results"] = results
        for path in sorted(results.rglob("*")):  # a folder before what it holds
            files[str(Path("results") / path.relative_to(results))] = path
    return files


def _same(folder: Path, files: dict[str, Path]) -> bool:
    """Whether ``folder`` holds exactly ``files`` (relative path -> original), byte for byte."""
    here = {str(path.relative_to(folder)) for path in folder.rglob("*")}
    return here == set(files) and all(
        source.is_dir() == (folder / name).is_dir()
        and (source.is_dir() or (folder / name).read_bytes() == source.read_bytes())
        for name, source in files.items()
    )


def edited(root: Path, notebooks: list[Path]) -> list[Path]:
    """The files and folders of ``root`` that ``generate`` would replace and that differ from
    what it writes (an instructor's edits or extra files): ``nbgrader_config.py`` and
    ``source/<name>/``, where they exist."""
    config = Path(root) / "nbgrader_config.py"
    changed = [config] if config.exists() and config.read_bytes() != CONFIG.encode() else []
    for notebook in notebooks:
        source = Path(root) / "source" / notebook.stem
        if source.exists() and not _same(source, _source_files(notebook)):
            changed.append(source)
    return changed


def generate(
    root: Path = DEFAULT_ROOT, notebooks: list[Path] | None = None, force: bool = False
) -> list[Path]:
    """Build the course folder at ``root`` and release one assignment per graded notebook.

    ``root`` may hold an earlier course: its gradebook, submissions and other files are kept,
    and the source versions and ``nbgrader_config.py`` are written again. Where those differ
    from what would be written (``edited``), nothing is written and RuntimeError names them,
    unless ``force``, which replaces them.

    Returns the student notebooks (``root/release/<name>/<name>.ipynb``).
    """
    root = Path(root)
    notebooks = graded_notebooks() if notebooks is None else notebooks
    if not notebooks:
        raise RuntimeError(f"no notebook in {NOTEBOOKS} has nbgrader cells")
    changed = [] if force else edited(root, notebooks)
    if changed:
        more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
        raise RuntimeError(
            f"{changed[0]}{more} differs from what make assignments generates (edited, or "
            "with extra files), so it was left as it is; to replace it with the generated "
            "version, run make assignments FORCE=1"
        )
    root.mkdir(parents=True, exist_ok=True)
    (root / "nbgrader_config.py").write_text(CONFIG)
    api = _api(root)
    released = []
    for notebook in notebooks:
        name = notebook.stem
        source = root / "source" / name
        shutil.rmtree(source, ignore_errors=True)  # checked above: the generated one, or forced
        source.mkdir(parents=True)
        for relative, original in _source_files(notebook).items():
            if original.is_dir():
                (source / relative).mkdir()
            else:
                shutil.copy2(original, source / relative)
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
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace source versions and nbgrader_config.py that differ from the generated ones "
        "(make assignments FORCE=1)",
    )
    args = parser.parse_args(argv)
    try:
        released = generate(args.root, force=args.force)
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for path in released:
        print(f"student version: {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
