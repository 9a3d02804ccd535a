"""`sweep` and `few-labels` never lose a results table: their --out, its run note, two at once.

Each test runs the real command (``main`` or two ``python -m simclr_teach``-like processes) in a
temporary folder. The few-label study itself is replaced by a fake that reports rows at once
where the test is about the files, not the numbers.
"""

from __future__ import annotations

import csv
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simclr_teach import lab
from simclr_teach import protocol as protocol_module
from simclr_teach.cli import main
from simclr_teach.protocol import FEW_LABEL_COLUMNS
from simclr_teach.utils import partial_path, writing_results

TINY_RUN = "--width 2 --epochs 1 --batch-size 512 --proj-hidden 8 --proj-dim 4".split()
TRAIN_FLAGS = "--data embedded --no-progress".split() + TINY_RUN
OLD = "per_class,seed,method\n1,0,old row of a long study\n"  # an existing results table


def sweep_argv(out: Path, cache: Path) -> list[str]:
    return ["sweep", "--grid", "seeds", "--out", str(out), "--cache", str(cache), "--no-progress"]


@pytest.fixture
def one_seed(monkeypatch):
    monkeypatch.setattr(lab, "SEEDS", (0,))  # a sweep of one tiny run


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny trained model for few-labels --checkpoint."""
    folder = tmp_path_factory.mktemp("run")
    assert main(["train", "--out", str(folder), *TRAIN_FLAGS]) == 0
    return folder / "checkpoint.pt"


def fake_row(i: int) -> dict:
    return {
        **dict.fromkeys(FEW_LABEL_COLUMNS, ""),
        "per_class": 1,
        "seed": i,
        "method": "kNN on h",
        "choice": "k=1",
        "test_accuracy": 0.5,
    }


def fake_study(count: int, then: BaseException | None = None):
    """A few_label_study that reports ``count`` rows at once, then raises ``then`` if given."""

    def study(*args, on_row, **kwargs):
        rows = [fake_row(i) for i in range(count)]
        for row in rows:
            on_row(row)
        if then is not None:
            raise then
        return rows

    return study


def read_rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def note_command(note: Path) -> list[str]:
    first = note.read_text().split("\n")[0]
    assert first.startswith("command: ")
    return shlex.split(first.removeprefix("command: "))


# --- 1: the run note never overwrites the results --------------------------------------------


def test_sweep_out_ending_in_txt_is_refused_before_any_run(tmp_path, capsys, one_seed):
    out = tmp_path / "s.txt"
    assert main([*sweep_argv(out, tmp_path / "cache"), *TINY_RUN]) == 1
    err = capsys.readouterr().err
    assert f"{out} ends in .txt, the name of the run note" in err and "s.csv" in err
    assert err.count("\n") == 1
    assert not out.exists() and not (tmp_path / "cache").exists()  # nothing trained


def test_few_labels_out_ending_in_txt_is_refused(tmp_path, capsys, monkeypatch, checkpoint):
    monkeypatch.setattr(protocol_module, "few_label_study", fake_study(3))
    out = tmp_path / "fl.txt"
    assert main(["few-labels", "--out", str(out), "--checkpoint", str(checkpoint)]) == 1
    assert f"{out} ends in .txt" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # before: the 3 rows, then the note over them


def test_sweep_rows_and_note_are_two_files(tmp_path, one_seed):
    out = tmp_path / "s.csv"
    assert main([*sweep_argv(out, tmp_path / "cache"), *TINY_RUN]) == 0
    assert [r["seed"] for r in read_rows(out)] == ["0"]
    assert (tmp_path / "s.txt").read_text().startswith("command: python -m simclr_teach sweep")
    assert not partial_path(out).exists()


# --- 2: an existing table is replaced only by a complete one ---------------------------------


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--seeds", "0", "-1"], "seeds must be integers in [0, 2**32 - 1], got [0, -1]"),
        (["--budgets", "0"], "budgets must be labelled digits per class, integers >= 1"),
    ],
)
def test_few_labels_bad_argument_leaves_the_results_alone(
    tmp_path, capsys, checkpoint, flags, message
):
    """The real study: before the fix, rows computed before the error replaced good.csv."""
    good = tmp_path / "good.csv"
    good.write_text(OLD)
    argv = ["few-labels", "--out", str(good), "--checkpoint", str(checkpoint), "--budgets", "1"]
    assert main([*argv, *flags]) == 1
    assert good.read_text() == OLD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.csv"]  # no partial, no note
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1  # found before the first row


def test_few_labels_error_mid_study_keeps_the_old_table_and_the_new_rows(
    tmp_path, capsys, monkeypatch, checkpoint
):
    good = tmp_path / "good.csv"
    good.write_text(OLD)
    argv = ["few-labels", "--out", str(good), "--checkpoint", str(checkpoint)]
    monkeypatch.setattr(protocol_module, "few_label_study", fake_study(2, ValueError("no memory")))
    assert main(argv) == 1
    assert good.read_text() == OLD
    err = capsys.readouterr().err
    assert f"{good} is unchanged; the 2 rows computed before it stopped are in" in err
    assert "error: no memory" in err
    assert [r["seed"] for r in read_rows(partial_path(good))] == ["0", "1"]
    assert not good.with_suffix(".txt").exists()

    monkeypatch.setattr(protocol_module, "few_label_study", fake_study(3))
    assert main(argv) == 0  # complete: now it replaces the table
    assert [r["seed"] for r in read_rows(good)] == ["0", "1", "2"]
    assert not partial_path(good).exists()
    assert "rows: 3" in good.with_suffix(".txt").read_text()


def test_interrupted_sweep_leaves_the_old_table(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(lab, "SEEDS", (0, 1))
    out = tmp_path / "s.csv"
    out.write_text(OLD)
    real = lab.lab_run

    def fails_on_the_second(config, *args, **kwargs):
        if config.seed != lab.SEEDS[0]:
            raise ValueError("out of disk")
        return real(config, *args, **kwargs)

    monkeypatch.setattr(lab, "lab_run", fails_on_the_second)
    assert main([*sweep_argv(out, tmp_path / "cache"), *TINY_RUN, "--seed", "0"]) == 1
    assert "out of disk" in capsys.readouterr().err
    assert out.read_text() == OLD  # before: the one row done replaced it
    assert len(read_rows(partial_path(out))) == 1


def test_writing_results_keeps_rows_only_where_there_are_some(tmp_path):
    out = tmp_path / "t.csv"
    with pytest.raises(ValueError), writing_results(out):
        raise ValueError("before the first row")
    assert list(tmp_path.iterdir()) == []  # nothing to keep
    with pytest.raises(KeyboardInterrupt), writing_results(out) as save:
        save("a\n1\n")
        raise KeyboardInterrupt
    assert partial_path(out).read_text() == "a\n1\n" and not out.exists()
    with writing_results(out) as save:  # a later run takes over the stopped one's partial file
        save("a\n2\n")
    assert out.read_text() == "a\n2\n" and not partial_path(out).exists()


# --- 3: two processes writing one table ------------------------------------------------------

RUNNER = """
import sys, time
from pathlib import Path

from simclr_teach import lab, protocol
from simclr_teach.cli import main

hold, argv = sys.argv[1], sys.argv[2:]
lab.SEEDS = (0,)


def wait_if_held():  # the first process stops here until the test lets it go
    if hold != "-":
        (Path(hold) / "started").touch()
        deadline = time.time() + 120
        while not (Path(hold) / "release").exists() and time.time() < deadline:
            time.sleep(0.05)


real_lab_run = lab.lab_run


def lab_run(*args, **kwargs):
    wait_if_held()
    return real_lab_run(*args, **kwargs)


def few_label_study(*args, on_row, **kwargs):
    row = {"per_class": 1, "seed": 0, "method": "kNN on h", "choice": hold,
           "test_accuracy": 0.5}
    on_row(row)
    wait_if_held()
    return [row]


lab.lab_run, protocol.few_label_study = lab_run, few_label_study
sys.exit(main(argv))
"""


def run_two_at_once(tmp_path: Path, argv: list[str]) -> tuple[subprocess.Popen, object]:
    """Start a first process on ``argv`` and hold it mid-way; run a second one to its end."""
    hold = tmp_path / "hold"
    hold.mkdir()
    command = [sys.executable, "-c", RUNNER]
    first = subprocess.Popen(
        [*command, str(hold), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 120
    while not (hold / "started").exists():
        assert first.poll() is None, first.communicate()
        assert time.time() < deadline, "the first process never started its work"
        time.sleep(0.05)
    second = subprocess.run([*command, "-", *argv], capture_output=True, text=True, timeout=300)
    (hold / "release").touch()
    return first, second


def test_two_sweeps_one_csv(tmp_path):
    out = tmp_path / "s.csv"
    argv = [*sweep_argv(out, tmp_path / "cache"), *TINY_RUN]
    first, second = run_two_at_once(tmp_path, argv)
    assert second.returncode == 1, second  # before: both wrote s.csv and reported success
    assert f"another process is writing {out}" in second.stderr
    assert "pass another --out" in second.stderr and "Traceback" not in second.stderr
    assert first.wait(300) == 0, first.communicate()
    assert [r["seed"] for r in read_rows(out)] == ["0"]
    assert not partial_path(out).exists()


def test_two_few_label_studies_one_csv(tmp_path, checkpoint):
    out = tmp_path / "fl.csv"
    argv = ["few-labels", "--out", str(out), "--checkpoint", str(checkpoint)]
    first, second = run_two_at_once(tmp_path, argv)
    assert second.returncode == 1, second
    assert f"another process is writing {out} (its rows so far: {out}.partial)" in second.stderr
    assert first.wait(300) == 0, first.communicate()
    assert [r["choice"] for r in read_rows(out)] == [str(tmp_path / "hold")]  # the first's rows


def test_a_table_being_written_refuses_the_sweep_at_once(tmp_path, capsys, one_seed):
    out = tmp_path / "s.csv"
    with writing_results(out, busy="busy") as save:  # as a sweep running now would hold it
        save(OLD)
        assert main([*sweep_argv(out, tmp_path / "cache"), *TINY_RUN]) == 1
        assert not (tmp_path / "cache").exists()  # nothing trained
    assert "another process is writing" in capsys.readouterr().err
    assert out.read_text() == OLD  # the holder's table, complete


# --- 7: the saved command reruns ---------------------------------------------------------------


def test_sweep_note_quotes_an_out_with_a_space(tmp_path, one_seed):
    out = tmp_path / "my results" / "lab sweep.csv"
    argv = [*sweep_argv(out, tmp_path / "cache"), *TINY_RUN]
    assert main(argv) == 0
    assert note_command(out.with_suffix(".txt")) == ["python", "-m", "simclr_teach", *argv]


def test_few_labels_note_quotes_an_out_with_a_space(tmp_path, monkeypatch, checkpoint):
    monkeypatch.setattr(protocol_module, "few_label_study", fake_study(1))
    out = tmp_path / "few labels; rm -rf x.csv"
    argv = ["few-labels", "--out", str(out), "--checkpoint", str(checkpoint)]
    assert main(argv) == 0
    assert note_command(out.with_suffix(".txt")) == ["python", "-m", "simclr_teach", *argv]
