"""scripts/build_site.py without Sphinx: what each page is made of (`make site` builds them).

The built site itself is checked in a browser by `make test-site` (tests/site/).
"""

import json
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import build_site  # noqa: E402


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    return build_site.student_cells(tmp_path_factory.mktemp("course"))


def _page(name: str, student: dict | None) -> str:
    path = REPO / "notebooks" / f"{name}.ipynb"
    nb = build_site.page_notebook(path, None if student is None else student[name])
    return json.dumps(nb)


def test_pages_show_the_student_version_with_the_lesson_outputs(student):
    for path in build_site.notebooks():
        page = json.loads(_page(path.stem, student))
        text = json.dumps(page)
        assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text
        assert "Rubric (" not in text
        sources = ["".join(c["source"]) for c in page["cells"]]
        assert build_site.RUN_IT in sources[:3], "how to run it, under the title"
        lessons = [c for c in page["cells"] if c["cell_type"] == "code" and c.get("outputs")]
        assert lessons, f"{path.name}: the lesson outputs are kept"


def test_the_instructor_site_keeps_the_solutions():
    assert "BEGIN SOLUTION" in _page("09_capstone", None)


def test_the_notebooks_with_widgets_are_the_four_explorers():
    assert build_site.widget_notebooks() == [
        "01_augmentations",
        "02_nt_xent_loss",
        "05_evaluation_tsne_knn",
        "06_temperature_augmentation_lab",
    ]


@pytest.mark.parametrize("name", build_site.widget_notebooks())
def test_widgets_show_their_picture_and_progress_bars_go(student, name):
    """Each explorer's output carries a picture of itself (widgets.Explorer.static_html): the
    page shows it in place of the widget, which needs a kernel."""
    page = _page(name, student)
    assert build_site.WIDGET not in page and "live in JupyterLab" in page
    assert page.count('class=\\"simclr-widget-static\\"') == 1 and "data:image/png;base64" in page
    assert not re.search(r"\d+%\|", page), "a progress bar is left on the page"


def test_a_progress_bar_goes_and_other_outputs_stay():
    bar = {"data": {build_site.WIDGET: {}, "text/plain": "SimCLR:  40%|####  | 2/5 [00:01<00:01]"}}
    text = {"output_type": "stream", "name": "stdout", "text": "done\n"}
    assert build_site._page_outputs([bar, text]) == [text]


def test_a_widget_without_a_picture_becomes_a_note():
    bare = {"output_type": "display_data", "data": {build_site.WIDGET: {}, "text/plain": "VBox()"}}
    [note] = build_site._page_outputs([bare])
    assert "live in JupyterLab" in note["data"]["text/html"]


def test_the_home_page_links_every_notebook_in_order():
    names = [path.stem for path in build_site.notebooks()]
    home = build_site.home_page(names)
    assert home.startswith("# simclr-teach") and "## Two commands" in home
    assert "## The course as a website" not in home and "## Exercises" not in home
    assert all(f"[{name}]({name}.ipynb)" in home for name in names)
    toc = home.split("```{toctree}")[1]
    assert [line for line in toc.splitlines() if line[:2].isdigit()] == names


def test_the_install_guard_is_in_the_download_not_on_the_page(student):
    page = json.loads(_page("00_setup", student))
    code = [c for c in page["cells"] if c["cell_type"] == "code"]
    guard, imports = code[0], code[1]
    assert "".join(guard["source"]).startswith("# Outside a clone of the course")
    assert guard["metadata"]["tags"] == ["remove-cell"]  # myst-nb leaves it off the page
    assert "".join(imports["source"]).startswith("import math")
    assert imports["execution_count"] is not None and guard["execution_count"] is None
