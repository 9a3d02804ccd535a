"""simclr_teach.memo: a result is read back only for the same function, inputs, precision, code."""

import json
import math

import numpy as np
import pytest
import torch

from simclr_teach import memo
from simclr_teach.memo import MEMO_ENV, fingerprint, memoised
from simclr_teach.protocol import tuned_scores
from simclr_teach.utils import PRECISION_ENV

pytestmark = pytest.mark.memo  # these tests set $SIMCLR_TEACH_MEMO themselves


@pytest.fixture
def counted():
    """A memoised function that counts its calls and returns every type a result may hold."""
    calls = []

    @memoised
    def evaluate(x, scale=1.0, model=None, progress=None):
        calls.append(1)
        if progress is not None:
            progress(x)
        total = float(x.float().sum()) * scale
        return (
            {"total": total, "nan": math.nan, "none": None, "name": "ok", "n": 3},
            [np.arange(6, dtype=np.float32).reshape(2, 3) * scale, np.int64(7)],
        )

    return evaluate, calls


def test_off_unless_asked(monkeypatch, counted, tmp_path):
    evaluate, calls = counted
    monkeypatch.delenv(MEMO_ENV, raising=False)
    assert memo.memo_dir() is None
    x = torch.ones(3)
    evaluate(x), evaluate(x)
    assert len(calls) == 2
    monkeypatch.setenv(MEMO_ENV, "0")
    evaluate(x)
    assert len(calls) == 3 and memo.memo_dir() is None


def test_second_call_reads_the_same_result(monkeypatch, counted, tmp_path):
    evaluate, calls = counted
    monkeypatch.setenv(MEMO_ENV, str(tmp_path))
    x = torch.arange(12).reshape(3, 4)
    first = evaluate(x, scale=2.0)
    second = evaluate(x.clone(), scale=2.0)  # equal contents, another tensor
    assert len(calls) == 1
    assert type(second) is tuple and second[0]["none"] is None and math.isnan(second[0]["nan"])
    assert second[0]["total"] == first[0]["total"] and second[0]["n"] == 3
    array = second[1][0]
    assert array.dtype == np.float32 and array.shape == (2, 3)
    assert np.array_equal(array, first[1][0]) and second[1][1] == 7
    assert len(list(tmp_path.rglob("*.json"))) == 1


def test_any_change_of_input_computes_again(monkeypatch, counted, tmp_path):
    evaluate, calls = counted
    monkeypatch.setenv(MEMO_ENV, str(tmp_path))
    x = torch.zeros(4)
    model = torch.nn.Linear(2, 2)
    evaluate(x, model=model)
    changed = x.clone()
    changed[2] = 1e-6  # one element
    evaluate(changed, model=model)
    evaluate(x, scale=1.5, model=model)  # another argument
    evaluate(x.double(), model=model)  # another dtype
    with torch.no_grad():
        model.weight[0, 0] += 1  # another model state
    evaluate(x, model=model)
    monkeypatch.setenv(PRECISION_ENV, "float32")  # another precision
    evaluate(x)
    monkeypatch.setattr(memo, "source_digest", lambda: "edited")  # another package source
    evaluate(x)
    assert len(calls) == 7


def test_unhashable_arguments_and_unreadable_files_compute(monkeypatch, counted, tmp_path):
    evaluate, calls = counted
    monkeypatch.setenv(MEMO_ENV, str(tmp_path))
    seen = []
    evaluate(torch.ones(2), progress=seen.append)  # a callback: no key, it is called
    assert len(calls) == 1 and len(seen) == 1 and not list(tmp_path.rglob("*.json"))
    with pytest.raises(memo._NoMemo):
        fingerprint(object())
    x = torch.ones(2)
    evaluate(x)
    (path,) = tmp_path.rglob("*.json")
    path.write_text('{"function": "evaluate", "res')  # cut short
    evaluate(x)
    assert len(calls) == 3
    assert json.loads(path.read_text())["result"]  # replaced by a whole file
    evaluate(x)
    assert len(calls) == 3


def test_a_result_that_cannot_be_stored_is_returned_unstored(monkeypatch, tmp_path):
    monkeypatch.setenv(MEMO_ENV, str(tmp_path))

    @memoised
    def features(x):
        return x * 2  # a tensor: not stored as JSON

    assert torch.equal(features(torch.ones(2)), torch.full((2,), 2.0))
    assert not list(tmp_path.rglob("*.json"))


def test_tuned_scores_read_back_equal_what_they_compute(monkeypatch, tmp_path):
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(60) % 3
    train = torch.randn(60, 5, generator=generator) + labels[:, None]  # (60, 5)
    test = torch.randn(30, 5, generator=generator) + (torch.arange(30) % 3)[:, None]
    val = torch.arange(60) % 4 == 0
    args = (train, labels, val, test, torch.arange(30) % 3, (1, 5), (0.1,), (1.0,))
    fresh = tuned_scores(*args)  # memo off
    monkeypatch.setenv(MEMO_ENV, "1")
    monkeypatch.setenv("SIMCLR_TEACH_RUNS", str(tmp_path))
    assert memo.memo_dir() == tmp_path / "cache" / "memo"
    stored, read = tuned_scores(*args), tuned_scores(*args)
    assert fresh == stored == read and isinstance(read, tuple)
    assert len(list((tmp_path / "cache" / "memo" / "tuned_scores").glob("*.json"))) == 1
