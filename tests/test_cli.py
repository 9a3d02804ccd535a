"""python -m simclr_teach: a tiny train + evaluate, and its errors."""

import json
import subprocess
import sys
from collections.abc import Callable

import pytest

from simclr_teach.cli import main
from simclr_teach.train import History
from tests.support import interrupt_after, write_fake_mnist

TINY_FLAGS = (
    "--data embedded --epochs 1 --width 4 --proj-hidden 16 --proj-dim 8 --batch-size 512 "
    "--no-progress"
).split()


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
    result = subprocess.run(
        [sys.executable, "-m", "simclr_teach", "train", "--out", "x", "--epoks", "3"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "usage:" in result.stderr and "--epoks" in result.stderr


def test_missing_checkpoint_is_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "simclr_teach", "evaluate", str(tmp_path / "x.pt")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "no checkpoint at" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_value_is_one_line(capsys):
    assert main(["train", "--out", "unused", "--temperature", "-1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert "invalid TrainConfig field(s) ['temperature']: [-1.0]" in err


def test_nan_weight_decay_is_blamed_on_weight_decay(capsys):
    assert main(["train", "--out", "unused", "--weight-decay", "nan"]) == 1
    err = capsys.readouterr().err
    assert "invalid TrainConfig field(s) ['weight_decay']: [nan]" in err
    assert "learning rate" not in err


@pytest.mark.parametrize("argv", [[], ["fly"]])
def test_no_or_unknown_command_exits_2(argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2


def test_metrics_record_the_thread_count(tmp_path):
    import torch

    assert main(["train", "--out", str(tmp_path), *TINY_FLAGS]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["torch_threads"] == torch.get_num_threads()  # bit-identical only at this count
    assert (tmp_path / "metrics.json").stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask():
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_second_train_into_a_busy_folder_fails_at_once(tmp_path, capsys):
    from simclr_teach.utils import locked

    with locked(tmp_path, wait=False):  # as a first `train` into this folder would hold it
        assert main(["train", "--out", str(tmp_path), *TINY_FLAGS]) == 1
    err = capsys.readouterr().err
    assert (
        f"another process is training into {tmp_path}; wait for it to finish, or pass "
        "another --out" in err
    )
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_two_train_processes_one_folder(tmp_path):
    # the real race: two processes, different configs, one --out; exactly one may write
    commands = [
        [
            sys.executable,
            "-m",
            "simclr_teach",
            "train",
            "--out",
            str(tmp_path),
            *TINY_FLAGS,
            "--seed",
            str(seed),
        ]
        for seed in (0, 1)
    ]
    runs = [
        subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for c in commands
    ]
    results = [(run.wait(120), *run.communicate()) for run in runs]
    codes = sorted(code for code, _, _ in results)
    errors = "".join(err for _, _, err in results)
    # one wins; the other fails at once, or (if it started after) refuses the other config
    assert codes == [0, 1], results
    assert "another process is training into" in errors or "another config (seed" in errors
    assert errors.count("wrote ") == 0


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda p: p.write_text(""), "is a file; pass a folder path to --out"),
        (lambda p: (p.mkdir(), (p / "checkpoint.pt").mkdir()), "checkpoint.pt is a folder"),
    ],
)
def test_unusable_out_folder_fails_before_training(tmp_path, capsys, monkeypatch, make, message):
    from simclr_teach import train as train_module

    monkeypatch.setattr(train_module, "train_simclr", lambda *a, **k: pytest.fail("trained"))
    make(tmp_path / "out")
    assert main(["train", "--out", str(tmp_path / "out"), *TINY_FLAGS]) == 1
    assert message in capsys.readouterr().err


def test_out_under_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert main(["train", "--out", str(tmp_path / "file" / "run"), *TINY_FLAGS]) == 1
    assert "file is a file" in capsys.readouterr().err


def _interrupted_after_epoch_1(train: Callable[..., History]) -> Callable[..., History]:
    """``train`` (train_simclr) as if Ctrl-C were pressed once its first epoch is done."""
    return lambda *args, **kwargs: train(*args, **kwargs, on_epoch_end=interrupt_after(1))


def test_ctrl_c_says_how_to_resume_and_exits_130(tmp_path, capsys, monkeypatch):
    from simclr_teach import train as train_module

    real = train_module.train_simclr

    flags = ["train", "--out", str(tmp_path), *TINY_FLAGS, "--epochs", "2"]
    monkeypatch.setattr(train_module, "train_simclr", _interrupted_after_epoch_1(real))
    assert main(flags) == 130
    err = capsys.readouterr().err
    assert "interrupted after epoch 1 of 2; rerun the same command to resume" in err
    assert "Traceback" not in err
    monkeypatch.setattr(train_module, "train_simclr", real)
    assert main(flags) == 0  # resumes
    assert json.loads((tmp_path / "metrics.json").read_text())["history"]["epoch"] == [1, 2]


@pytest.mark.parametrize("device", ["bogus", "gpu", "CPU"])
def test_bad_device_is_one_line_naming_the_devices(tmp_path, capsys, device):
    assert main(["train", "--out", str(tmp_path), *TINY_FLAGS, "--device", device]) == 1
    err = capsys.readouterr().err
    assert f"device '{device}' is not available on this machine; use 'auto' or one of ['cpu'" in err
    assert list(tmp_path.iterdir()) == []


def test_batch_larger_than_the_data_is_an_error(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path), *TINY_FLAGS, "--batch-size", "100000"]) == 1
    assert "batch_size 100000 is larger than the 4,000 training digits" in capsys.readouterr().err


def test_failed_download_is_one_line(tmp_path, monkeypatch, capsys):
    from urllib.error import URLError

    from simclr_teach import data as data_module

    def no_network(folder):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(data_module, "_fetch_mnist", no_network)
    monkeypatch.setenv("SIMCLR_TEACH_DOWNLOAD", "1")
    monkeypatch.setenv("SIMCLR_TEACH_DATA", str(tmp_path / "data"))
    flags = [f for f in TINY_FLAGS if f != "embedded"]
    flags[flags.index("--data") + 1 : flags.index("--data") + 1] = ["mnist"]
    assert main(["train", "--out", str(tmp_path / "run"), *flags]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: downloading MNIST failed") and err.count("\n") == 1
    assert "check the network" in err


def test_help_lists_choices_and_the_checkpoint_argument():
    train = subprocess.run(
        [sys.executable, "-m", "simclr_teach", "train", "--help"], capture_output=True, text=True
    ).stdout
    for choices in (
        "{auto,embedded,mnist}",
        "{conv,mlp}",
        "{adamw,sgd}",
        "{none,linear,sqrt}",
        "auto, cpu, cuda, cuda:<i>, mps or xpu",
    ):
        assert choices in train
    evaluate = subprocess.run(
        [sys.executable, "-m", "simclr_teach", "evaluate", "--help"], capture_output=True, text=True
    ).stdout
    assert "a checkpoint.pt written by train" in evaluate and "{auto,embedded,mnist}" in evaluate


def test_auto_run_resumes_and_evaluates_on_the_digits_it_started_on(tmp_path, monkeypatch, capsys):
    from simclr_teach import protocol as protocol_module
    from simclr_teach import train as train_module
    from simclr_teach.checkpoint import load_checkpoint
    from simclr_teach.data import embedded_mnist, fingerprint

    monkeypatch.setenv("SIMCLR_TEACH_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("SIMCLR_TEACH_DOWNLOAD", raising=False)
    flags = ["train", "--out", str(tmp_path / "run"), *TINY_FLAGS[2:], "--epochs", "2"]  # auto
    real = train_module.train_simclr
    monkeypatch.setattr(train_module, "train_simclr", _interrupted_after_epoch_1(real))
    assert main(flags) == 130  # epoch 1 on the embedded digits: no full MNIST yet
    write_fake_mnist(tmp_path / "data" / "MNIST" / "raw")  # now "auto" means full MNIST
    monkeypatch.setattr(train_module, "train_simclr", real)
    assert main(flags) == 0
    assert "Resuming" in capsys.readouterr().out
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert state["data"]["name"] == "embedded-5k"
    assert state["data"]["fingerprint"] == fingerprint(embedded_mnist().train_images)

    seen = {}

    def table(model, train_images, *args, **kwargs):
        seen["train"] = len(train_images)
        return (
            [{"features": "SimCLR h", "dim": 16, "knn@1": 0.5, "knn": 0.5}],
            {"SimCLR h": {"temperature@1": 0.1, "k": 1, "val_knn": 0.5}},
        )

    monkeypatch.setattr(protocol_module, "evaluation_table", table)
    assert main(["evaluate", str(tmp_path / "run" / "checkpoint.pt")]) == 0
    out = capsys.readouterr().out
    assert "trained on embedded-5k (4,000), 2 epochs; evaluated on embedded-5k" in out
    assert seen["train"] == 4000


@pytest.mark.parametrize(
    "flag,value",
    [("proj-hidden", "-5"), ("proj-dim", "-1"), ("proj-hidden", "0"), ("proj-dim", "0")],
)
def test_bad_projection_size_is_one_line_before_anything_is_made(tmp_path, capsys, flag, value):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *TINY_FLAGS, f"--{flag}", value]) == 1
    err = capsys.readouterr().err
    field = flag.replace("-", "_")
    assert f"invalid TrainConfig field(s) ['{field}']: [{value}]" in err and err.count("\n") == 1
    assert not out.exists()


def _untrained_checkpoint(path, **config):
    from simclr_teach.checkpoint import save_checkpoint
    from simclr_teach.train import History, TrainConfig, build_model

    config = TrainConfig(data="embedded", width=4, proj_hidden=16, proj_dim=8, **config)
    return save_checkpoint(path, build_model(config), config, History())


def test_checkpoint_whose_weights_do_not_match_its_config_is_one_line(tmp_path, capsys):
    import torch

    from simclr_teach.checkpoint import load_checkpoint

    path = _untrained_checkpoint(tmp_path / "checkpoint.pt")
    state = load_checkpoint(path)
    state["config"]["width"] = 8  # as an edited checkpoint, or another model's weights
    torch.save(state, path)
    assert main(["evaluate", str(path), "--no-probe"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: the weights in {path} do not match its config")
    assert err.count("\n") == 1 and "size mismatch" not in err


def _main_interrupted(argv):
    try:
        return main(argv)
    except KeyboardInterrupt:
        pytest.fail("KeyboardInterrupt escaped main: a traceback instead of a sentence")


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt  # what Ctrl-C raises, wherever it lands


@pytest.mark.parametrize(
    "command,module,name,message",
    [
        ("train", "data", "load_mnist", "train interrupted; rerun the same command to resume"),
        ("evaluate", "protocol", "evaluation_table", "evaluate interrupted; nothing was written"),
        ("sweep", "lab", "sweep", "sweep interrupted; finished runs are cached"),
        ("few-labels", "train", "load_or_train", "few-labels interrupted; rerun the same command"),
    ],
)
def test_ctrl_c_anywhere_is_one_sentence_and_exit_130(
    tmp_path, capsys, monkeypatch, command, module, name, message
):
    import importlib

    monkeypatch.setattr(importlib.import_module(f"simclr_teach.{module}"), name, _interrupt)
    argv = {
        "train": ["train", "--out", str(tmp_path / "run"), *TINY_FLAGS],
        "evaluate": ["evaluate", str(_untrained_checkpoint(tmp_path / "checkpoint.pt"))],
        "sweep": ["sweep", "--grid", "seeds", "--out", str(tmp_path / "sweep.csv")],
        "few-labels": ["few-labels", "--out", str(tmp_path / "few.csv")],
    }[command]
    assert _main_interrupted(argv) == 130
    err = capsys.readouterr().err
    assert err.strip().startswith(message) and err.strip().count("\n") == 0
    assert "Traceback" not in err


def test_evaluate_a_folder_suggests_the_right_path(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["evaluate", str(empty)]) == 1
    err = capsys.readouterr().err
    assert f"python -m simclr_teach train --out {empty}`" in err and err.count("\n") == 1
    assert main(["evaluate", str(tmp_path / "missing")]) == 1
    assert f"train --out {tmp_path / 'missing'}`" in capsys.readouterr().err
    run = tmp_path / "run"
    _untrained_checkpoint(run / "checkpoint.pt")
    assert main(["evaluate", str(run)]) == 1
    err = capsys.readouterr().err
    assert f"pass the checkpoint file in it, {run / 'checkpoint.pt'}" in err
    assert "train one" not in err


@pytest.mark.parametrize(
    "content,reason",
    [
        (b"", "the file is empty"),
        (b"hello", "it is damaged, cut short or not written by torch.save"),
        (None, "it holds Python objects, not only tensors and plain values"),
    ],
)
def test_unreadable_checkpoint_is_our_sentence_never_weights_only_false(
    tmp_path, capsys, content, reason
):
    import argparse

    import torch

    path = tmp_path / "checkpoint.pt"
    if content is None:
        torch.save({"config": argparse.Namespace(width=4)}, path)  # unpickling it could run code
    else:
        path.write_bytes(content)
    assert main(["evaluate", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path} is not a readable checkpoint ({reason}")
    assert err.count("\n") == 1 and "weights_only" not in err


def test_unreadable_checkpoint_file_says_so(tmp_path, capsys, monkeypatch):
    import errno
    import os

    import torch

    path = _untrained_checkpoint(tmp_path / "checkpoint.pt")

    def denied(*args, **kwargs):  # chmod 000 does not stop root, who may run the tests
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(torch, "load", denied)
    assert main(["evaluate", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"cannot read {path} (Permission denied); make it readable" in err
    assert "delete it" not in err


def test_sweep_into_a_folder_fails_before_training(tmp_path, capsys, monkeypatch):
    from simclr_teach import lab

    monkeypatch.setattr(lab, "lab_run", lambda *a, **k: pytest.fail("trained a run first"))
    assert main(["sweep", "--grid", "seeds", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path} is a folder" in err and f"--out {tmp_path / 'results.csv'}" in err


def test_full_disk_names_the_file(tmp_path, capsys, monkeypatch):
    import errno
    import os

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *TINY_FLAGS]) == 1
    err = capsys.readouterr().err
    assert f"cannot write {out / 'checkpoint.pt'} (No space left on device)" in err
    assert err.count("\n") == 1


def test_failed_config_leaves_no_empty_out_folder(tmp_path, capsys):
    out = tmp_path / "new" / "run"
    assert main(["train", "--out", str(out), *TINY_FLAGS, "--batch-size", "100000"]) == 1
    assert "batch_size 100000 is larger" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # neither run nor new, both made by this command
    assert main(["train", "--out", str(tmp_path), *TINY_FLAGS, "--batch-size", "100000"]) == 1
    assert tmp_path.is_dir()  # a folder that was there before stays
