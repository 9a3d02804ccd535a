"""Shared test set-up: results kept by ``simclr_teach.memo`` are read only where a test asks.

nbval's runs of the notebooks (``make test-notebooks``) set $SIMCLR_TEACH_MEMO; a unit test runs
with it off, whatever the shell holds, unless it is marked ``memo`` (tests/test_memo.py sets it
itself): a test of an evaluation must compute it, not read what an earlier run stored.
"""

import pytest

from simclr_teach.memo import MEMO_ENV


@pytest.fixture(autouse=True)
def _memo_only_where_marked(request, monkeypatch):
    if request.node.get_closest_marker("memo") is None:
        monkeypatch.delenv(MEMO_ENV, raising=False)
