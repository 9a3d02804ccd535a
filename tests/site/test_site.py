"""The course's website in a real browser: `make test-site` (after `make site`).

Every page is opened in Chromium from a server on 127.0.0.1: no error output, every image
loaded, every formula typeset by MathJax, the sidebar lists the course in order, no request
leaves 127.0.0.1. The HTML is read for what must not be there (the exercises' solutions and
hidden tests) and for links and anchors that lead nowhere. Screenshots of the home page, 02
(math), 05 (figures) and 06 (a widget) go to artifacts/site/ for a person to look at.
"""

from __future__ import annotations

import json
import re
import sys
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.site.conftest import ARTIFACTS, REPO, SITE

sys.path.insert(0, str(REPO / "scripts"))
import build_site  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
PAGES = ["index", *(path.stem for path in NOTEBOOKS)]
# page -> what its second screenshot shows (the first is the top of the page)
SCREENSHOTS = {
    "index": None,
    "02_nt_xent_loss": "mjx-container[display='true']",  # the derivation
    "05_evaluation_tsne_knn": "article img",  # the figures
    "06_temperature_augmentation_lab": ".simclr-widget-static",  # a widget's picture
}


def _solutions() -> list[str]:
    """A distinctive line of every model answer and hidden test of the instructor notebooks."""
    found = []
    for path in NOTEBOOKS:
        for cell in json.loads(path.read_text())["cells"]:
            text = "".join(cell["source"])
            for block in re.findall(
                r"### BEGIN (?:SOLUTION|HIDDEN TESTS)\n(.*?)### END", text, re.S
            ):
                lines = [line.strip() for line in block.splitlines() if len(line.strip()) > 25]
                if lines:
                    found.append(max(lines, key=len))
    return found


@pytest.fixture
def page(browser, site):
    """A page that records the host of every request it makes."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, device_scale_factor=2)
    tab = context.new_page()
    tab.hosts = set()
    tab.on("request", lambda request: tab.hosts.add(urlsplit(request.url).netloc))
    yield tab
    context.close()


@pytest.mark.parametrize("name", PAGES)
def test_the_page_renders_from_this_host_alone(page, site, name):
    page.goto(f"{site}{name}.html", wait_until="networkidle")
    page.wait_for_function(
        "() => !window.MathJax || window.MathJax.startup?.promise", timeout=30_000
    )
    page.evaluate("() => window.MathJax?.startup?.promise")  # typesetting done
    text = page.inner_text("article")
    assert "Traceback (most recent call last)" not in text
    assert page.locator(".output.traceback, .output.error").count() == 0
    broken = page.eval_on_selector_all(
        "article img",
        "imgs => imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)",
    )
    assert not broken, f"images that did not load: {broken}"
    raw = [mark for mark in ("$$", "\\frac", "\\sum", "\\tau") if mark in text]
    assert not raw, f"formulas left untypeset ({raw})"
    assert "Loading widget" not in text and "children=(" not in text, "a widget's repr"
    assert page.hosts == {urlsplit(site).netloc}, f"requests to other hosts: {page.hosts}"
    if name in SCREENSHOTS:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"))
        if SCREENSHOTS[name]:
            page.locator(SCREENSHOTS[name]).first.scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / f"{name}-detail.png"))


def test_the_derivation_is_typeset(page, site):
    page.goto(f"{site}02_nt_xent_loss.html", wait_until="networkidle")
    page.evaluate("() => window.MathJax.startup.promise")
    assert page.locator("mjx-container[display='true']").count() >= 3  # eq. 1 and its parts
    assert page.locator("mjx-container").count() >= 50


def test_the_sidebar_lists_the_course_in_order(page, site):
    page.goto(f"{site}index.html", wait_until="networkidle")
    links = page.eval_on_selector_all(
        "nav.bd-links a", "links => links.map(a => a.getAttribute('href'))"
    )
    pages = [href.removesuffix(".html") for href in links if re.match(r"\d\d_", href)]
    assert pages == [path.stem for path in NOTEBOOKS]


@pytest.mark.parametrize("name", build_site.widget_notebooks())
def test_each_widget_shows_its_picture_not_a_repr(page, site, name):
    """An explorer's cell shows its controls' values, its picture (loaded) and that it is live
    in JupyterLab."""
    page.goto(f"{site}{name}.html", wait_until="networkidle")
    shown = page.locator(".simclr-widget-static")
    assert shown.count() == 1, f"{name}: {shown.count()} widget pictures"
    assert "live in JupyterLab" in shown.inner_text()
    width = shown.locator("img").evaluate("img => img.complete ? img.naturalWidth : 0")
    assert width > 200, f"{name}: the widget's picture is {width} px wide"


def _plain(text: str) -> str:
    """Text without markup, for a search: no markdown marks, whitespace collapsed."""
    return re.sub(r"\s+", " ", re.sub(r"[`*_\\]", "", text)).strip()


def _site_texts(root: Path) -> dict[str, str]:
    """Each page's text (tags removed: code is split into highlighted spans) and each
    downloadable notebook's cells, as plain text."""
    texts = {}
    for path in root.rglob("*.html"):
        texts[str(path.relative_to(root))] = _plain(
            unescape(re.sub(r"<[^>]+>", "", path.read_text()))
        )
    for path in root.rglob("*.ipynb"):
        cells = json.loads(path.read_text())["cells"]
        texts[str(path.relative_to(root))] = _plain(" ".join("".join(c["source"]) for c in cells))
    return texts


def solutions_shown(root: Path) -> list[tuple[str, list[str]]]:
    """(model answer line, pages that show it) for every solution line found under ``root``."""
    texts = _site_texts(root)
    found = [
        (line, [name for name, text in texts.items() if _plain(line) in text])
        for line in _solutions()
    ]
    return [(line, pages) for line, pages in found if pages]


def test_no_solution_or_hidden_test_is_on_the_site():
    shown = solutions_shown(SITE)
    assert not shown, f"{len(shown)} model answers are on the site, first: {shown[0]}"
    assert not [name for name, text in _site_texts(SITE).items() if "Rubric (" in text]


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs) -> None:
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("href"):
            self.hrefs.append(attrs["href"])


def test_every_internal_link_and_anchor_leads_somewhere():
    parsed = {}
    for path in SITE.glob("*.html"):
        links = _Links()
        links.feed(path.read_text())
        parsed[path.name] = links
    missing = []
    for name, links in parsed.items():
        for href in links.hrefs:
            parts = urlsplit(href)
            if parts.scheme or href.startswith(("mailto:", "javascript:")):
                continue
            target = parts.path or name
            if not (SITE / target).exists():
                missing.append(f"{name}: {href} (no file)")
            elif parts.fragment and target.endswith(".html"):
                if parts.fragment not in parsed[Path(target).name].ids:
                    missing.append(f"{name}: {href} (no anchor)")
    assert not missing, "\n".join(missing[:20])


@pytest.mark.parametrize("name", [path.stem for path in NOTEBOOKS])
def test_the_install_guard_is_downloadable_but_not_on_the_page(name):
    assert "SIMCLR_TEACH_REPOSITORY" not in (SITE / f"{name}.html").read_text()
    assert "SIMCLR_TEACH_REPOSITORY" in (SITE / "_sources" / f"{name}.ipynb").read_text()


def test_launch_links_follow_the_one_repository_setting(tmp_path):
    """With a repository URL, each notebook's page links to Binder, Colab and the repository;
    the site built from pyproject.toml has them exactly when its Repository is set."""
    url = "https://github.com/example-owner/simclr-teach"
    built = build_site.build(tmp_path / "html", repository=url)
    page = (built / "02_nt_xent_loss.html").read_text()
    notebook = "notebooks/02_nt_xent_loss.ipynb"
    binder = "https://mybinder.org/v2/gh/example-owner/simclr-teach/main?urlpath=lab/tree/"
    colab = "https://colab.research.google.com/github/example-owner/simclr-teach/blob/main/"
    assert binder + notebook in page and colab + notebook in page
    assert f'href="{url}"' in page
    ours = (SITE / "02_nt_xent_loss.html").read_text()
    assert ("mybinder.org" in ours) == bool(build_site.repository_url())
