"""The training lab widget (06): controls -> config, Train -> a stored, plotted run."""

import pytest
import torch

from simclr_teach import lab
from simclr_teach import train as train_module
from simclr_teach.lab import lab_state
from simclr_teach.widgets import training_lab
from tests.support import tiny_config

TINY = tiny_config()


def test_lab_state_finds_stored_runs(tmp_path):
    state = lab_state({}, tmp_path, TINY)
    assert state["config"] == TINY and state["row"] is None and state["rows"] == []
    row = lab.lab_run(TINY, tmp_path)
    state = lab_state({}, tmp_path, TINY)
    assert state["row"] == row and state["curve"] == [row] and state["bars"] == [row]
    other = lab_state({"rotation_ablate": True}, tmp_path, TINY)
    assert other["row"] is None and other["key"] != state["key"] and other["rows"] == [row]


def test_training_lab_controls_train_and_cache(tmp_path, monkeypatch):
    explorer = training_lab(tmp_path, base=TINY)
    assert "not trained yet" in explorer.caption.value and bytes(explorer.image.value) == b""
    assert "<img" not in explorer.static_html()  # no picture yet: none shown, none broken
    assert explorer.controls["temperature"].value == pytest.approx(TINY.temperature)
    assert explorer.controls["rotation_ablate"].value is False
    assert explorer.controls["elastic_ablate"].value is True  # off in AugmentParams()

    explorer.controls["temperature"].value = 0.5
    explorer.controls["noise_ablate"].value = True
    explorer.controls["train"].click()  # what the button does
    row = explorer.state["row"]
    assert row is not None and row["temperature"] == 0.5 and row["label"] == "no noise"
    assert explorer.progress.value == explorer.progress.max == 1
    assert "LOO kNN" in explorer.progress.description
    assert (
        bytes(explorer.image.value).startswith(b"\x89PNG")
        and "leave-one-out kNN" in explorer.caption.value
    )
    assert "no noise" in explorer.caption.value  # the results table
    page = explorer.static_html()  # what the website shows: the run's values and picture
    assert "temperature tau: <b>0.5</b>" in page and "&#9745; ablate noise" in page
    assert "done: LOO kNN" in page and "data:image/png;base64," in page

    def must_not_train(*args, **kwargs):
        raise AssertionError("trained again although the run was cached")

    monkeypatch.setattr(train_module, "train_simclr", must_not_train)
    assert explorer.train() == row  # same settings: instant
    restarted = training_lab(tmp_path, base=TINY)  # as after a kernel restart
    restarted.controls["temperature"].value = 0.5
    restarted.controls["noise_ablate"].value = True
    assert restarted.state["row"] == row
    restarted.controls["noise_ablate"].value = False
    assert restarted.state["row"] is None and "not trained yet" in restarted.caption.value
    explorer.close()
    restarted.close()


def test_lab_and_temperature_explorer_share_one_slider_and_the_sweep_batch_sizes(tmp_path):
    from simclr_teach.widgets import temperature_explorer

    explorer = training_lab(tmp_path, base=TINY)
    tau = explorer.controls["temperature"]
    other = temperature_explorer(torch.randn(4, 3), torch.randn(4, 3)).controls["temperature"]
    assert (tau.min, tau.max, tau.base, tau.step) == (other.min, other.max, other.base, other.step)
    assert explorer.controls["batch_size"].options == tuple(
        sorted({*lab.BATCH_SIZES, TINY.batch_size})
    )
    explorer.close()


def test_lab_caption_escapes_run_labels_from_the_results_file(tmp_path):
    markup = "<img src=x onerror=alert(1)>"
    row = {column: 0 for column in lab.COLUMNS}
    row.update(
        grid="lab",
        label=markup,
        temperature=0.5,
        batch_size=64,
        epochs=1,
        loo_knn=0.5,
        train_seconds=1.0,
        key="edited by hand",
    )
    lab.LabResults(tmp_path / lab.RESULTS_FILE).add(row)
    explorer = training_lab(tmp_path, base=TINY)
    caption = explorer.caption.value
    assert "<td>&lt;img src=x onerror=alert(1)&gt;</td>" in caption  # the results table
    assert "<img" not in caption
    explorer.close()
