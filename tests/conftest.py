"""Shared test set-up: results kept by ``simclr_teach.memo`` are read only where a test asks.

nbval's runs of the notebooks (``make test-notebooks``) set $SIMCLR_TEACH_MEMO; a unit test runs
with it off, whatever the shell holds, unless it is marked ``memo`` (tests/test_memo.py sets it
itself): a test of an evaluation must compute it, not read what an earlier run stored.
Also here: the ``close_figures`` fixture, and the repository root on sys.path for
``from tests.support import ...``.
"""

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from simclr_teach.memo import MEMO_ENV

# `python -m pytest` from the root has it already; plain `pytest`, or a run from another folder,
# would not, and every file that imports tests.support would fail to collect
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@pytest.fixture(autouse=True)
def _memo_only_where_marked(request, monkeypatch):
    if request.node.get_closest_marker("memo") is None:
        monkeypatch.delenv(MEMO_ENV, raising=False)


@pytest.fixture
def close_figures() -> Iterator[None]:
    """Close every matplotlib figure after the test: pyplot keeps them all open otherwise, and a
    file of plotting tests would hold hundreds (and warn past 20).
    """
    yield
    # imported here, not at the top: a test file picks the Agg backend before pyplot is imported
    import matplotlib.pyplot as plt

    plt.close("all")
