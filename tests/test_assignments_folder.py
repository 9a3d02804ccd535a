"""`make assignments` run again on a course folder: an instructor's edits are never deleted.

A one-cell graded notebook stands in for the course's (nbgrader generates it in seconds);
tests/test_assignments.py checks the course's own notebooks.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import assignments  # noqa: E402


def _graded(grade_id: str, source: str, **meta) -> nbformat.NotebookNode:
    nbgrader = {"grade_id": grade_id, "locked": False, "schema_version": 3, **meta}
    return nbformat.v4.new_code_cell(source, metadata={"nbgrader": nbgrader})


@pytest.fixture
def course(tmp_path):
    """A course folder generated from one tiny graded notebook: (root, notebook)."""
    notebook = tmp_path / "notebooks" / "99_tiny.ipynb"
    notebook.parent.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        _graded(
            "answer", "### BEGIN SOLUTION\nx = 2\n### END SOLUTION", solution=True, grade=False
        ),
        _graded("check", "assert x == 2", solution=False, grade=True, points=1),
    ]
    nbformat.write(nb, notebook)
    root = tmp_path / "course"
    assignments.generate(root, [notebook])
    return root, notebook


def test_unchanged_course_is_regenerated(course):
    root, notebook = course
    (root / "submitted").mkdir()  # the instructor's other files stay
    assert assignments.edited(root, [notebook]) == []
    released = assignments.generate(root, [notebook])
    assert released == [root / "release" / "99_tiny" / "99_tiny.ipynb"] and released[0].is_file()
    assert (root / "submitted").is_dir() and (root / "gradebook.db").is_file()


@pytest.mark.parametrize(
    "edit",
    [
        lambda source: source.joinpath("99_tiny.ipynb").write_text(
            source.joinpath("99_tiny.ipynb")
            .read_text()
            .replace("x = 2", "x = 2  # my model answer")
        ),
        lambda source: source.joinpath("extra_data.csv").write_text("a,b\n1,2\n"),
        lambda source: source.joinpath("results", "mine").mkdir(),
        lambda source: source.joinpath("results", "lab_sweep.csv").unlink(),
    ],
    ids=["edited notebook", "extra file", "extra folder", "missing file"],
)
def test_edited_source_is_refused_and_kept(course, edit):
    root, notebook = course
    source = root / "source" / "99_tiny"
    edit(source)
    kept = {p.relative_to(source): p.read_bytes() for p in source.rglob("*") if p.is_file()}
    with pytest.raises(RuntimeError) as error:
        assignments.generate(root, [notebook])  # before the fix: rmtree(source)
    assert str(error.value) == (
        f"{source} differs from what make assignments generates (edited, or with extra files), "
        "so it was left as it is; to replace it with the generated version, run make "
        "assignments FORCE=1"
    )
    assert {p.relative_to(source): p.read_bytes() for p in source.rglob("*") if p.is_file()} == (
        kept
    )

    assignments.generate(root, [notebook], force=True)  # FORCE=1: the generated version
    assert assignments.edited(root, [notebook]) == []


def test_edited_config_is_refused_too(course):
    root, notebook = course
    config = root / "nbgrader_config.py"
    config.write_text(config.read_text() + "c.Execute.timeout = 60\n")
    with pytest.raises(RuntimeError, match="nbgrader_config.py differs from what make"):
        assignments.generate(root, [notebook])
    assert config.read_text().endswith("c.Execute.timeout = 60\n")


def test_script_refuses_with_one_line_and_force_replaces(course, monkeypatch, capsys):
    root, notebook = course
    (root / "source" / "99_tiny" / "notes.md").write_text("my notes")
    monkeypatch.setattr(assignments, "graded_notebooks", lambda: [notebook])
    assert assignments.main(["--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "FORCE=1" in err
    assert (root / "source" / "99_tiny" / "notes.md").is_file()
    assert assignments.main(["--root", str(root), "--force"]) == 0
    assert not (root / "source" / "99_tiny" / "notes.md").exists()


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("flags,force", [([], False), (["FORCE=1"], True), (["FORCE=0"], False)])
def test_make_assignments_passes_force(flags, force):
    # under another make (make test), make -n also prints "Entering directory" lines
    dry = subprocess.run(
        ["make", "-n", "--no-print-directory", "assignments", *flags],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (line,) = [x for x in dry.splitlines() if "scripts/assignments.py" in x]
    assert line.endswith("--force") == force
