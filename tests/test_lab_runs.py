"""The lab (06): configs from controls, cached scored runs, the results store and sweeps."""

import csv
import json
import subprocess
import sys
from dataclasses import replace

import pytest

from simclr_teach import lab
from simclr_teach import train as train_module
from simclr_teach.augment import AugmentParams
from simclr_teach.cli import main
from simclr_teach.lab import (
    DEFAULT_ON,
    LAB_BASE,
    LabResults,
    ablated,
    describe,
    lab_config,
    lab_run,
    lab_state,
    sweep,
    sweep_configs,
)
from tests.support import tiny_config

TINY = tiny_config()
OTHER_SEED = max(LAB_BASE.seed, TINY.seed) + 1  # moved from both bases ($SIMCLR_TEACH_SEED: TINY's)


def test_lab_config_maps_controls_to_a_train_config():
    config = lab_config(
        {
            "temperature": 0.1,
            "batch_size": 128,
            "rotation": 30.0,
            "rotation_ablate": False,
            "noise_ablate": True,
            "epochs": 3,
        }
    )
    assert (config.temperature, config.batch_size, config.epochs) == (0.1, 128, 3)
    assert config.augment.rotation == 30.0 and config.augment.noise == 0.0
    assert config.width == LAB_BASE.width and config.data == "embedded"
    assert lab_config({}) == LAB_BASE
    with pytest.raises(ValueError, match="unknown lab control"):
        lab_config({"temprature": 0.1})
    with pytest.raises(ValueError, match="temperature"):
        lab_config({"temperature": 0.0})


def test_ablation_labels():
    assert ablated(LAB_BASE) == [] and describe(LAB_BASE) == "all on"
    no_rotation = lab_config({"rotation_ablate": True})
    assert ablated(no_rotation) == ["rotation"] and describe(no_rotation) == "no rotation"
    assert describe(lab_config({"strength": 0.0})) == "no augmentation"
    assert describe(lab_config({"shortcut_bits": 4})) == "all on, +4 bits"
    assert set(DEFAULT_ON) == {
        n
        for n, v in LAB_BASE.augment.__dict__.items()
        if v != AugmentParams.at_strength(0).__dict__[n]
    }


@pytest.mark.parametrize(
    "values,label",
    [
        ({"rotation": 45.0}, "rotation 45"),  # was "all on", like rotation 15
        ({"rotation": 45.0, "noise_ablate": True}, "no noise, rotation 45"),
        ({"elastic": 1.5}, "elastic 1.5"),  # off in LAB_BASE, switched on
        ({"strength": 2.0}, "strength 2"),
        ({"epochs": 20}, "all on, 20 epochs"),
        ({"seed": OTHER_SEED, "shortcut_bits": 4}, f"all on, seed {OTHER_SEED}, +4 bits"),
    ],
)
def test_labels_name_every_control_that_moved(values, label):
    assert describe(lab_config(values)) == label
    assert describe(lab_config(values, TINY), TINY) == label  # relative to the base given


def test_default_on_follows_lab_base_when_augment_params_defaults_move():
    code = """
from simclr_teach.augment import AugmentParams
defaults = dict(zip(("crop_scale", "rotation", "translate", "shear", "elastic", "noise", "blur",
                     "erase_p"), AugmentParams.__init__.__defaults__, strict=True))
AugmentParams.__init__.__defaults__ = tuple({**defaults, "elastic": 1.5, "blur": 1.0}.values())
assert AugmentParams().elastic == 1.5                      # the defaults moved
from simclr_teach import lab
assert lab.DEFAULT_ON == ["crop_scale", "rotation", "translate", "shear", "noise", "erase_p"], (
    lab.DEFAULT_ON)
assert len(lab.sweep_configs("ablation")) == len(lab.DEFAULT_ON) + 2
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_lab_curve_holds_only_runs_that_differ_in_tau_and_n(tmp_path):
    """Other epochs or magnitudes on one line per N would draw jumps between recipes."""
    runs = {
        "here": TINY,
        "tau": replace(TINY, temperature=0.1),
        "n": replace(TINY, batch_size=256),
        "epochs": replace(TINY, epochs=2, temperature=0.1),
        "rotation": replace(TINY, augment=replace(TINY.augment, rotation=45.0)),
        "ablated": replace(TINY, augment=TINY.augment.disabled("noise")),
    }
    store = LabResults(tmp_path / lab.RESULTS_FILE)
    for name, config in runs.items():
        store.add(
            result(
                config.key("embedded-5k"),
                label=name,
                temperature=config.temperature,
                batch_size=config.batch_size,
                epochs=config.epochs,
                strength=1.0,
                ablated="+".join(ablated(config, TINY)) or "-",
            )
        )
    state = lab_state({}, tmp_path, TINY)
    assert state["key"] == TINY.key("embedded-5k")
    assert [r["label"] for r in state["curve"]] == ["here", "tau", "n"]
    assert state["row"]["label"] == "here" and state["label"] == "all on"
    rotated = lab_state({"rotation": 45.0}, tmp_path, TINY)
    assert [r["label"] for r in rotated["curve"]] == ["rotation"]
    assert rotated["label"] == "rotation 45"


def result(key, **values):
    """A lab results row with every column."""
    return {**dict.fromkeys(lab.COLUMNS, 0), "ablated": "-", "key": key, **values}


def test_results_store_replaces_by_key_and_rejects_garbage(tmp_path):
    store = LabResults(tmp_path / "r.json")
    assert store.rows() == []
    store.add(result("a", loo_knn=0.5))
    store.add(result("b", loo_knn=0.6))
    store.add(result("a", loo_knn=0.7))
    assert [r["key"] for r in store.rows()] == ["b", "a"] and store.get("a")["loo_knn"] == 0.7
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a lab results file"):
        LabResults(tmp_path / "bad.json").rows()


@pytest.mark.parametrize(
    "content,message",
    [
        (
            '{"runs": [{"key": "a"}]}',
            r"row 0 of .*r.json is not a lab result \(missing \['ablated'",
        ),
        ('{"runs": ["a"]}', r"row 0 of .*r.json is not a lab result"),
        (
            json.dumps({"runs": [result("a", batch_size="64")]}),
            r"row 0 of .*r.json is not a lab result \(batch_size='64': not numbers\)",
        ),
        (
            json.dumps({"runs": [result("a", temperature=None, seed=True)]}),
            r"row 0 of .*r.json is not a lab result \(temperature=None, seed=True: not numbers\)",
        ),
        ('{"runs": 3}', r"r.json is not a lab results file \(\"runs\" is not a list\)"),
        ("[1, 2]", r"r.json is not a lab results file"),
        ('{"rows": []}', r"r.json is not a lab results file"),
    ],
)
def test_results_of_the_wrong_shape_name_the_file_and_the_fix(tmp_path, content, message):
    (tmp_path / "r.json").write_text(content)
    with pytest.raises(ValueError, match=message + ".*move"):
        LabResults(tmp_path / "r.json").rows()
    with pytest.raises(ValueError, match="missing"):
        LabResults(tmp_path / "new.json").add({"key": "a"})


def _add_rows(path, prefix, count):
    store = LabResults(path)
    for i in range(count):
        store.add(result(f"{prefix}{i}"))


def test_processes_adding_results_at_once_lose_no_row(tmp_path):
    import multiprocessing

    path = tmp_path / "r.json"
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_add_rows, args=(path, prefix, 40)) for prefix in "ab"]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert len(LabResults(path).rows()) == 80  # without the lock rows written between are lost


def test_lab_run_trains_once_scores_and_survives_a_restart(tmp_path, monkeypatch):
    epochs = []
    row = lab_run(TINY, tmp_path, on_epoch_end=lambda h: epochs.append(len(h.epoch)), base=TINY)
    assert epochs == [1]
    assert set(row) == set(lab.COLUMNS) and 0.0 < row["loo_knn"] <= 1.0
    assert row["label"] == "all on" and row["ablated"] == "-"
    stored = json.loads((tmp_path / lab.RESULTS_FILE).read_text())["runs"]
    assert stored == [row]

    def must_not_train(*args, **kwargs):
        raise AssertionError("trained again although the run was cached")

    monkeypatch.setattr(train_module, "train_simclr", must_not_train)
    assert lab_run(TINY, tmp_path) == row  # a new call (as after a restart) reads the file
    (tmp_path / lab.RESULTS_FILE).unlink()  # scores lost, checkpoint kept: rescored, no training
    assert lab_run(TINY, tmp_path)["loo_knn"] == row["loo_knn"]


def test_sweep_grids():
    grid = sweep_configs("temperature-batch")
    assert len(grid) == len(lab.TEMPERATURES) * len(lab.BATCH_SIZES)
    assert {(c.temperature, c.batch_size) for c in grid} == {
        (t, n) for t in lab.TEMPERATURES for n in lab.BATCH_SIZES
    }
    ablation = sweep_configs("ablation")
    assert [describe(c) for c in ablation] == (
        ["all on"] + [f"no {n}" for n in DEFAULT_ON] + ["no augmentation"]
    )
    assert [c.shortcut_bits for c in sweep_configs("shortcut")] == list(lab.SHORTCUT_BITS)
    with pytest.raises(ValueError, match="unknown grid"):
        sweep_configs("everything")


def test_sweep_writes_csv_and_command_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setattr(lab, "SEEDS", (0, 1))
    out = tmp_path / "sweep.csv"
    rows = sweep(["seeds"], out, tmp_path / "cache", base=TINY, progress=False)
    with out.open() as f:
        table = list(csv.DictReader(f))
    assert [int(r["seed"]) for r in table] == [0, 1] and list(table[0]) == lab.COLUMNS
    assert [float(r["loo_knn"]) for r in table] == [r["loo_knn"] for r in rows]
    assert "python -m simclr_teach sweep --grid seeds" in out.with_suffix(".txt").read_text()
    monkeypatch.setattr(train_module, "train_simclr", lambda *a, **k: 1 / 0)  # all cached now
    assert sweep(["seeds"], out, tmp_path / "cache", base=TINY, progress=False) == rows


def test_cli_sweep(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(lab, "SEEDS", (0,))
    argv = [
        "sweep",
        "--grid",
        "seeds",
        "--out",
        str(tmp_path / "s.csv"),
        "--cache",
        str(tmp_path / "c"),
        "--no-progress",
        "--width",
        "2",
        "--epochs",
        "1",
        "--batch-size",
        "512",
        "--proj-hidden",
        "8",
        "--proj-dim",
        "4",
    ]
    assert main(argv) == 0
    assert "wrote 1 runs" in capsys.readouterr().out
    note = (tmp_path / "s.txt").read_text()
    assert "python -m simclr_teach " + " ".join(argv) in note
    assert "'width': 2" in note
