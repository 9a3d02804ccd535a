"""Fixtures for the website's tests (`make test-site`): the built site served on 127.0.0.1.

The site is built by `make site` into site/_build/html before these run; Chromium is the
browser tests' (tests/browser/conftest.py), as `make test-browser` installs it.
"""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.conftest import browser  # noqa: F401 - the same Chromium, as a fixture

REPO = Path(__file__).resolve().parents[2]
SITE = REPO / "site" / "_build" / "html"
ARTIFACTS = REPO / "artifacts" / "site"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # one line per request would bury pytest's output
        pass


@pytest.fixture(scope="session")
def site() -> Iterator[str]:
    """The base URL of site/_build/html served on 127.0.0.1 (a free port)."""
    if not (SITE / "index.html").exists():
        pytest.fail(f"no site in {SITE}: build it first with `make site`")
    handler = functools.partial(_Quiet, directory=str(SITE))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        thread.join()
