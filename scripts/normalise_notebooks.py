"""Normalise the course's notebooks before they are executed (`make notebooks` runs this first).

- every cell gets an id;
- cells marked `# NBVAL_RAISES_EXCEPTION` get the tag `raises-exception`: nbval reads the
  comment, JupyterLab's Run All reads the tag and goes on past the cell that is meant to fail;
- the first code cell starts with the install guard (`install_guard`): opened outside a clone
  of the course (Colab, a notebook downloaded alone) it clones the course from the repository
  URL, pyproject.toml's [project.urls] Repository, and installs it; in a clone it does nothing.

Only sources and metadata change, so it also runs on executed notebooks: after the repository
URL changes, `python scripts/normalise_notebooks.py notebooks/*.ipynb` writes it everywhere.
Usage: python scripts/normalise_notebooks.py notebooks/*.ipynb
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
# The guard, as each notebook's first code cell starts (after GUARD_START); {url} is filled in.
GUARD = """{start} (Colab, a notebook downloaded alone) simclr_teach is missing:
# fetch the course and install it. In a clone (make lab) this does nothing.
import importlib.util, os, subprocess, sys  # noqa: E401
if importlib.util.find_spec("simclr_teach") is None:
    url = os.environ.get("SIMCLR_TEACH_REPOSITORY", "{url}")
    if not url:
        raise ModuleNotFoundError("simclr_teach is not installed: open this notebook in a "
                                  "clone of the course (make lab), or set "
                                  "SIMCLR_TEACH_REPOSITORY to the course's git URL")
    if not os.path.isdir("simclr-teach"):
        subprocess.run(["git", "clone", "-q", "--depth", "1", url, "simclr-teach"], check=True)
    pip = [sys.executable, "-m", "pip", "install", "-q", "-e"]
    subprocess.run([*pip, "./simclr-teach[notebooks]"], check=True)
{end}
"""
GUARD_START = "# Outside a clone of the course"
GUARD_END = '    sys.path.insert(0, os.path.abspath("simclr-teach"))  # this kernel: no restart\n'


def repository_url() -> str:
    """pyproject.toml's [project.urls] Repository, the one setting for launch links ("" none)."""
    text = (REPO / "pyproject.toml").read_text()
    try:
        import tomllib  # noqa: PLC0415 - Python 3.11+; the course allows 3.10
    except ModuleNotFoundError:
        found = re.search(r'(?m)^Repository\s*=\s*"([^"]*)"', text)
        return found.group(1) if found else ""
    return tomllib.loads(text)["project"].get("urls", {}).get("Repository", "")


def install_guard(url: str) -> str:
    """The lines that start each notebook's first code cell (``url``: where the course lives).

    $SIMCLR_TEACH_REPOSITORY overrides ``url`` (tests/test_install_guard.py points it at a local
    clone). The clone is installed editable with the `notebooks` extra, so notebooks that read
    the course's committed results files find them, and a restarted kernel imports it too.
    """
    if '"' in url or "\n" in url:
        raise ValueError(f"not a repository URL: {url!r}")
    return GUARD.format(start=GUARD_START, url=url, end=GUARD_END.rstrip("\n"))


def split_guard(source: str) -> tuple[str, str]:
    """``source`` as (its install guard, the rest); ("", source) if it has none."""
    if not source.startswith(GUARD_START):
        return "", source
    end = source.find(GUARD_END)
    if end < 0:
        raise ValueError("the install guard of the first code cell is damaged: delete it")
    end += len(GUARD_END)
    return source[:end], source[end:].removeprefix("\n")


def with_guard(source: str, url: str) -> str:
    """``source`` with the install guard at its top, replacing an older guard."""
    return install_guard(url) + split_guard(source)[1]


def normalise(path: str | Path, url: str | None = None) -> int:
    """Ids, raises-exception tags and the install guard; returns how many cells were tagged."""
    url = repository_url() if url is None else url
    nb = nbformat.read(path, as_version=4)
    missing_ids, nb = nbformat.validator.normalize(nb)  # cells added by scripts lack an id
    nb = nbformat.from_dict(nb)
    changed = 0
    for cell in nb.cells:
        if cell.cell_type == "code" and "NBVAL_RAISES_EXCEPTION" in cell.source:
            tags = cell.metadata.setdefault("tags", [])
            if "raises-exception" not in tags:
                tags.append("raises-exception")
                changed += 1
    first = next(c for c in nb.cells if c.cell_type == "code")
    guarded = with_guard(first.source, url)
    if changed or missing_ids or guarded != first.source:
        first.source = guarded
        nbformat.write(nb, path)
    return changed


if __name__ == "__main__":
    for notebook in sys.argv[1:]:
        print(f"{notebook}: tagged {normalise(notebook)} cell(s)")
