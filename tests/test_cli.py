"""python -m simclr_teach: a tiny train + evaluate, and its errors."""

import json
import subprocess
import sys

import pytest

from simclr_teach.cli import main

TINY_FLAGS = ["--data", "embedded", "--epochs", "1", "--width", "4", "--proj-hidden", "16",
              "--proj-dim", "8", "--batch-size", "512", "--no-progress"]


def test_train_then_evaluate(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path), *TINY_FLAGS, "--rotation", "5"]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["config"]["width"] == 4 and metrics["config"]["augment"]["rotation"] == 5.0
    assert len(metrics["history"]["loss"]) == 1
    assert main(["evaluate", str(tmp_path / "checkpoint.pt"), "--no-probe"]) == 0
    out = capsys.readouterr().out
    for row in ("SimCLR h", "raw pixels", "random-init"):
        assert row in out


def test_bad_flag_exits_2_with_usage():
    result = subprocess.run([sys.executable, "-m", "simclr_teach", "train", "--out", "x", "--epoks", "3"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "usage:" in result.stderr and "--epoks" in result.stderr


def test_missing_checkpoint_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "simclr_teach", "evaluate", str(tmp_path / "x.pt")],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "no checkpoint at" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_value_is_one_line(capsys):
    assert main(["train", "--out", "unused", "--temperature", "-1"]) == 1
    assert "temperature" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [[], ["fly"]])
def test_no_or_unknown_command_exits_2(argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
