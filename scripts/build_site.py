"""The course as a static website: `make site` (= python scripts/build_site.py).

Builds HTML from the committed, nbval-checked notebooks (nothing is executed) into
site/_build/html, with Sphinx, myst-nb and sphinx-book-theme (site/conf.py):

- a home page from README.md's opening, "Two commands" and "The course" (one source for both);
- one page per notebook, in course order, with the sidebar, previous / next links, the page's
  table of contents and the search box of the theme;
- the exercises as students get them (scripts/assignments.py releases them with nbgrader):
  answer cells as the student version has them, hidden tests removed, check cells without
  outputs, hints folded; ``--instructor`` builds the site with the solutions instead;
- every widget output shown as the picture of itself that it carries (an Explorer's text/html:
  its controls' values, picture and caption, and that it is live in JupyterLab), or else as a
  note saying so (a page never shows "Loading widget..." or a widget's repr); progress bars go;
- the install guard of each notebook's first code cell (scripts/normalise_notebooks.py) kept
  in the downloadable notebook but not shown on the page, which starts with the imports;
- MathJax served from the site itself: the npm package ``mathjax`` is installed once into
  site/_build/npm (the npm registry, no CDN) and its es5 build copied into _static.

Serve it with ``python -m http.server -d site/_build/html`` and open http://127.0.0.1:8000.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import assignments  # noqa: E402
from normalise_notebooks import repository_url, split_guard  # noqa: E402

SITE = REPO / "site"
BUILD = SITE / "_build"
MATHJAX = "mathjax@3.2.2"  # the npm package; its es5/ folder is what pages load
WIDGET = "application/vnd.jupyter.widget-view+json"
WIDGET_NOTE = (
    '<div class="admonition note widget-static"><p class="admonition-title">Interactive widget'
    "</p><p>This cell shows a widget with sliders that retrains or redraws as you move them. It "
    "is live in JupyterLab: run the notebook (<code>make lab</code>) to use it.</p></div>"
)
RUN_IT = (
    "> **Run this notebook yourself:** `make lab` in a clone of the course opens it in "
    "JupyterLab; `make test` checks that every notebook runs. The outputs below are those of "
    "the committed run. Opened alone (on Colab, say), the notebook's first cell installs the "
    "course first; those lines are in the notebook, not on this page."
)


def notebooks() -> list[Path]:
    """The course's notebooks, in order."""
    return sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def student_cells(root: Path) -> dict[str, dict[str, dict]]:
    """notebook stem -> {grade_id: the cell as nbgrader's student version has it}."""
    released = assignments.generate(root, assignments.graded_notebooks(), force=True)
    found = {}
    for path in released:
        cells = json.loads(path.read_text())["cells"]
        found[path.stem] = {
            c["metadata"]["nbgrader"]["grade_id"]: c
            for c in cells
            if "grade_id" in c.get("metadata", {}).get("nbgrader", {})
        }
    return found


def _is_progress_bar(data: dict) -> bool:
    """A tqdm bar's output: its last state says nothing on a page."""
    return WIDGET in data and re.search(r"\d+%\|", "".join(data.get("text/plain", ""))) is not None


def _page_outputs(outputs: list[dict]) -> list[dict]:
    """A code cell's outputs for a page: widgets show their picture (or a note), bars go."""
    kept = []
    for output in outputs:
        data = output.get("data", {})
        if WIDGET not in data:
            kept.append(output)
        elif _is_progress_bar(data):
            continue
        elif "text/html" in data:  # an Explorer's picture of itself (Explorer.static_html)
            kept.append({**output, "data": {"text/html": data["text/html"]}})
        else:
            note = {"text/html": WIDGET_NOTE}
            kept.append({"output_type": "display_data", "metadata": {}, "data": note})
    return kept


def widget_notebooks() -> list[str]:
    """The stems of the notebooks with a widget (not a progress bar) among their outputs."""
    found = []
    for path in notebooks():
        cells = json.loads(path.read_text())["cells"]
        outputs = [o.get("data", {}) for c in cells for o in c.get("outputs", [])]
        if any(WIDGET in data and not _is_progress_bar(data) for data in outputs):
            found.append(path.stem)
    return found


def _split_guard(cell: dict) -> list[dict]:
    """The first code cell as two: the install guard (hidden on the page, kept in the
    downloadable notebook) and the rest (the notebook's imports)."""
    guard, rest = split_guard("".join(cell["source"]))
    if not guard:
        return [cell]
    hidden = {
        "cell_type": "code",
        "id": "install-guard",
        "metadata": {"tags": ["remove-cell"]},
        "source": guard,
        "outputs": [],
        "execution_count": None,
    }
    return [hidden, {**cell, "source": rest}]


def page_notebook(path: Path, student: dict[str, dict] | None) -> dict:
    """The notebook as its page shows it: student exercises (unless ``student`` is None)."""
    nb = json.loads(path.read_text())
    cells = []
    for cell in nb["cells"]:
        cell = copy.deepcopy(cell)
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if student is not None and grade_id is not None:
            released = student[grade_id]
            cell["source"] = released["source"]
            if cell["cell_type"] == "code":
                cell["outputs"], cell["execution_count"] = [], None
        if cell["cell_type"] == "code":
            cell["outputs"] = _page_outputs(cell.get("outputs", []))
        cells.append(cell)
    first = next(i for i, c in enumerate(cells) if c["cell_type"] == "code")
    cells[first : first + 1] = _split_guard(cells[first])
    title = next(i for i, c in enumerate(cells) if c["cell_type"] == "markdown")
    run_it = {"cell_type": "markdown", "id": "run-it", "metadata": {}, "source": RUN_IT}
    cells.insert(title + 1, run_it)
    nb["cells"] = cells
    return nb


def home_page(names: list[str]) -> str:
    """index.md: README's opening, its "Two commands" and "The course", then the page list."""
    readme = (REPO / "README.md").read_text()
    sections = re.split(r"(?m)^## ", readme)
    opening = sections[0]
    kept = [
        s for s in sections[1:] if s.split("\n", 1)[0].strip() in ("Two commands", "The course")
    ]
    text = opening + "".join("## " + s for s in kept)
    for name in names:  # `00_setup.ipynb` in the course table -> a link to its page
        text = text.replace(f"`{name}.ipynb`", f"[{name}]({name}.ipynb)")
    toc = "\n".join(names)
    return f"{text}\n```{{toctree}}\n:hidden:\n:maxdepth: 1\n\n{toc}\n```\n"


def install_mathjax(static: Path) -> None:
    """Copy MathJax's es5 build into ``static``/mathjax, from the npm package (cached)."""
    npm = BUILD / "npm"
    es5 = npm / "node_modules" / "mathjax" / "es5"
    if not (es5 / "tex-chtml.js").exists():
        npm.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                "npm",
                "install",
                "--silent",
                "--no-audit",
                "--no-fund",
                "--prefix",
                str(npm),
                MATHJAX,
            ],
            check=True,
        )

    # the one combined file the pages load, and the folders it loads from on demand (fonts,
    # TeX extensions, the menu); not the package's other combined builds (two thirds of it)
    def other_builds(folder: str, names: list[str]) -> list[str]:
        top = Path(folder) == es5
        return [n for n in names if top and n.endswith(".js") and n != "tex-chtml.js"]

    shutil.copytree(es5, static / "mathjax", ignore=other_builds)


def build(
    out: Path, instructor: bool = False, strict: bool = True, repository: str | None = None
) -> Path:
    """Write the sources into site/_build/src and build the HTML into ``out``.

    ``repository``: the URL for the launch links (default: pyproject.toml's, `repository_url`).
    """
    if out.exists() and any(out.iterdir()) and not (out / ".buildinfo").exists():
        raise ValueError(f"{out} holds files that are not a built site: give another --out")
    shutil.rmtree(out, ignore_errors=True)  # no page or file of an earlier build stays
    src = BUILD / "src"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    shutil.copy2(SITE / "conf.py", src / "conf.py")
    install_mathjax(src / "_static")
    with tempfile.TemporaryDirectory(prefix="site-course-") as course:
        student = None if instructor else student_cells(Path(course))
        names = []
        for path in notebooks():
            page = page_notebook(path, None if student is None else student.get(path.stem, {}))
            (src / path.name).write_text(json.dumps(page, indent=1, ensure_ascii=False) + "\n")
            names.append(path.stem)
    (src / "index.md").write_text(home_page(names))
    url = repository_url() if repository is None else repository
    env = dict(os.environ, SIMCLR_SITE_REPOSITORY=url)
    command = [sys.executable, "-m", "sphinx", "-b", "html", "-q", str(src), str(out)]
    if strict:
        command[3:3] = ["-W", "--keep-going"]  # a warning fails the build
    subprocess.run(command, check=True, env=env)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=BUILD / "html", help="default: %(default)s")
    parser.add_argument("--instructor", action="store_true", help="show the solutions")
    parser.add_argument(
        "--repository", help="URL for the launch links (default: pyproject.toml's Repository)"
    )
    args = parser.parse_args(argv)
    try:
        out = build(args.out, args.instructor, repository=args.repository)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as error:
        print(
            f"error: {' '.join(map(str, error.cmd[:4]))} ... failed ({error.returncode})",
            file=sys.stderr,
        )
        return 1
    print(f"site: {out}/index.html (serve: python -m http.server -d {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
