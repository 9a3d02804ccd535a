"""Shared test set-up: results kept by ``simclr_teach.memo`` are read only where a test asks.

``make test`` sets $SIMCLR_TEACH_MEMO so that the student runs of tests/test_assignments.py and
nbval share their slow evaluations. Every other test runs with it off: a test of an evaluation
must compute it, not read what an earlier run stored.
"""

import pytest

from simclr_teach.memo import MEMO_ENV


@pytest.fixture(autouse=True)
def _memo_only_where_marked(request, monkeypatch):
    if request.node.get_closest_marker("memo") is None:
        monkeypatch.delenv(MEMO_ENV, raising=False)
