"""The install guard at the top of each notebook (scripts/normalise_notebooks.py).

Opened outside a clone of the course (Colab, a notebook downloaded alone) a notebook clones the
course from the repository URL and installs it with the `notebooks` extra; in a clone it does
nothing. The last test runs notebook 00 that way, from a copy outside the repository in a fresh
venv, with $SIMCLR_TEACH_REPOSITORY pointing at this clone (`make test-outside`, in .ci/run).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import normalise_notebooks  # noqa: E402

NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _first_code(path: Path) -> str:
    cells = json.loads(path.read_text())["cells"]
    return "".join(next(c for c in cells if c["cell_type"] == "code")["source"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_starts_with_the_guard_for_the_repository_url(path):
    guard = normalise_notebooks.install_guard(normalise_notebooks.repository_url())
    assert _first_code(path).startswith(guard), (
        f"{path.name}: its first code cell lacks the install guard for pyproject.toml's "
        "Repository URL: run python scripts/normalise_notebooks.py notebooks/*.ipynb"
    )


def test_guard_is_replaced_not_stacked_and_a_damaged_one_is_named():
    body = "import math\n"
    once = normalise_notebooks.with_guard(body, "https://example.org/a.git")
    again = normalise_notebooks.with_guard(once, "https://example.org/b.git")
    assert again == normalise_notebooks.install_guard("https://example.org/b.git") + body
    assert again.count(normalise_notebooks.GUARD_START) == 1
    damaged = once.replace(normalise_notebooks.GUARD_END, "")
    with pytest.raises(ValueError, match="damaged"):
        normalise_notebooks.with_guard(damaged, "")


def test_guard_does_nothing_in_a_clone_and_names_the_fix_without_a_url(tmp_path):
    guard = normalise_notebooks.install_guard("")
    env = {k: v for k, v in os.environ.items() if k != "SIMCLR_TEACH_REPOSITORY"}
    here = subprocess.run(  # simclr_teach is importable: nothing is cloned or installed
        [sys.executable, "-c", guard], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert here.returncode == 0 and not any(tmp_path.iterdir()), here.stderr
    missing = guard.replace('find_spec("simclr_teach")', 'find_spec("no_such_module_here")')
    away = subprocess.run(
        [sys.executable, "-c", missing], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert away.returncode != 0 and "SIMCLR_TEACH_REPOSITORY" in away.stderr
    assert "clone of the course (make lab)" in away.stderr.replace('"\n', "").replace("  ", "")


def _pinned(name: str) -> str:
    """requirements.txt's line for ``name``, e.g. 'ipykernel==7.4.0'."""
    lines = (REPO / "requirements.txt").read_text().splitlines()
    return next(line for line in lines if line.startswith(f"{name}=="))


@pytest.mark.outside_clone
@pytest.mark.timeout(900)
def test_notebook_00_installs_the_course_itself_outside_a_clone(tmp_path):
    """A fresh venv with only a kernel in it; 00 copied outside the repository and executed.
    Its first cell must clone the course (this repository's HEAD), install it and go on."""
    fresh = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(fresh)
    python = fresh / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, _pinned("ipykernel")], check=True)
    kernels = tmp_path / "jupyter"
    subprocess.run(
        [str(python), "-m", "ipykernel", "install", "--prefix", str(kernels), "--name", "fresh"],
        check=True,
        capture_output=True,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIMCLR_TEACH_", "PYTHON"))}
    work = tmp_path / "work"  # outside the repository: the kernel's working directory
    work.mkdir()
    found = subprocess.run(
        [str(python), "-c", "import importlib.util as u; print(u.find_spec('simclr_teach'))"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert found.stdout.strip() == "None", "the fresh venv must not see the course's package"

    notebook = json.loads((REPO / "notebooks" / "00_setup.ipynb").read_text())
    where = "import simclr_teach\nprint('simclr_teach from', simclr_teach.__file__)"
    cell = {"cell_type": "code", "metadata": {}, "source": where, "outputs": []}
    notebook["cells"].append(cell | {"execution_count": None})
    (work / "00_setup.ipynb").write_text(json.dumps(notebook))
    env |= {
        "SIMCLR_TEACH_REPOSITORY": REPO.as_uri(),  # file:///...: git clones HEAD
        "JUPYTER_PATH": str(kernels / "share" / "jupyter"),
    }
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "jupyter",
            "nbconvert",
            "--to",
            "notebook",
            "--execute",
            "--inplace",
            "--ExecutePreprocessor.kernel_name=fresh",
            "--ExecutePreprocessor.timeout=600",
            str(work / "00_setup.ipynb"),
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    executed = json.loads((work / "00_setup.ipynb").read_text())
    last = "".join(executed["cells"][-1]["outputs"][0]["text"])
    assert f"simclr_teach from {work / 'simclr-teach' / 'simclr_teach'}" in last, last
    for cell in executed["cells"]:
        errors = [o for o in cell.get("outputs", []) if o["output_type"] == "error"]
        assert not errors or "raises-exception" in cell["metadata"].get("tags", []), errors
