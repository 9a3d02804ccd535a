"""Tests of simclr_teach.method_study: one search per method, then seeds of its choice."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from simclr_teach import method_study
from simclr_teach.method_study import (
    COLUMNS,
    LEARNING_RATES,
    OWN_SETTING,
    STUDY_BASE,
    chosen,
    method_configs,
)
from simclr_teach.method_study import (
    method_study as run_study,
)
from tests.support import tiny_config


@pytest.mark.parametrize("method", list(OWN_SETTING))
def test_every_method_searches_the_same_number_of_runs(method):
    configs = method_configs(method)
    name, values = OWN_SETTING[method]
    assert len(configs) == len(LEARNING_RATES) * len(values) == 4
    assert {(c.lr, getattr(c, name)) for c in configs} == {
        (lr, v) for lr in LEARNING_RATES for v in values
    }
    assert all(c.method == method and c.epochs == STUDY_BASE.epochs for c in configs)
    assert all(c.batch_size == STUDY_BASE.batch_size == 64 for c in configs)  # equal steps


def test_the_first_run_of_a_search_is_the_base_recipe():
    # 08's runs (lr 2e-3, tau 0.2, m 0.99, ...) are each method's first: cached once, shared
    for method in ("simclr", "moco", "simsiam", "barlow_twins"):
        first = method_configs(method)[0]
        name = OWN_SETTING[method][0]
        assert first.lr == STUDY_BASE.lr and getattr(first, name) == getattr(STUDY_BASE, name)


def test_chosen_is_the_best_validation_score_never_a_diverged_run():
    rows = [
        {"method": "moco", "role": "search", "val_knn": 0.90, "lr": 1},
        {"method": "moco", "role": "search", "val_knn": math.nan, "lr": 2},
        {"method": "moco", "role": "search", "val_knn": 0.93, "lr": 3},
        {"method": "moco", "role": "search", "val_knn": 0.93, "lr": 4},  # a tie: the first stays
        {"method": "moco", "role": "seed", "val_knn": 0.99, "lr": 5},  # not a search row
        {"method": "byol", "role": "search", "val_knn": 0.99, "lr": 6},
    ]
    assert chosen(rows, "moco")["lr"] == 3
    with pytest.raises(ValueError, match="every search run of 'simsiam' diverged"):
        chosen([{"method": "simsiam", "role": "search", "val_knn": math.nan}], "simsiam")


def test_unknown_methods_and_repeated_seeds_fail_before_training(tmp_path):
    with pytest.raises(ValueError, match="methods must be among"):
        run_study(["simclr", "dino"], tmp_path / "m.csv")
    with pytest.raises(ValueError, match="seeds must be distinct"):
        run_study(["simclr"], tmp_path / "m.csv", seeds=[0, 0])
    with pytest.raises(ValueError, match="unknown method 'dino'"):
        method_configs("dino")
    assert list(tmp_path.iterdir()) == []


def test_a_diverged_run_is_a_row_of_nans(monkeypatch):
    def diverges(*args, **kwargs):
        raise FloatingPointError("diverged at epoch 1")

    monkeypatch.setattr(method_study, "load_or_train", diverges)
    row = method_study.study_row(method_configs("byol")[3], "search")
    assert math.isnan(row["val_knn"]) and math.isnan(row["train_seconds"])
    assert (row["method"], row["lr"], row["value"]) == ("byol", LEARNING_RATES[1], 0.9)


def test_a_small_study_writes_search_then_seeds_of_the_choice(tmp_path):
    base = tiny_config(width=2, batch_size=256)  # seconds per run
    out = tmp_path / "methods.csv"
    seen = []
    rows = run_study(["simsiam"], out, tmp_path / "cache", base, seeds=[3, 4], on_row=seen.append)
    assert [r["role"] for r in rows] == ["search"] * 4 + ["seed"] and seen == rows
    assert [r["seed"] for r in rows] == [3] * 4 + [4]  # the search runs with the first seed
    best = chosen(rows, "simsiam")
    assert (rows[-1]["lr"], rows[-1]["value"]) == (best["lr"], best["value"])
    assert all(0 <= r["val_knn"] <= 1 and 0 <= r["std_z"] <= 1 for r in rows)
    table = pd.read_csv(out)
    assert list(table.columns) == COLUMNS and len(table) == 5
    note = (tmp_path / "methods.txt").read_text()
    assert "python -m simclr_teach methods --out" in note and "runs: 5" in note
    assert not (tmp_path / "methods.csv.partial").exists()
