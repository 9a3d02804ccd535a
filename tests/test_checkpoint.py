"""Atomic writes: permissions, leftovers of killed writes, and run folders checked up front."""

import os
import time

import pytest

from simclr_teach.checkpoint import check_run_folder
from simclr_teach.utils import STALE_SECONDS, atomic_write_csv, atomic_write_text


def test_written_files_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "metrics.json", "{}")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644  # mkstemp alone gives 0600


def test_stale_temporary_files_are_removed_on_the_next_write(tmp_path):
    stale = tmp_path / ".checkpoint.pt.abc123.tmp"  # a write killed long ago
    fresh = tmp_path / ".checkpoint.pt.def456.tmp"  # perhaps a write in progress
    other = tmp_path / ".metrics.json.ghi789.tmp"  # another file's
    for path in (stale, fresh, other):
        path.write_bytes(b"half")
    old = time.time() - STALE_SECONDS - 60
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    atomic_write_text(tmp_path / "checkpoint.pt", "new")
    assert not stale.exists() and fresh.exists() and other.exists()
    assert (tmp_path / "checkpoint.pt").read_text() == "new"


def test_run_folder_that_is_a_file(tmp_path):
    (tmp_path / "out").write_text("")
    with pytest.raises(NotADirectoryError, match=r"out is a file; pass a folder path to --out"):
        check_run_folder(tmp_path / "out")
    with pytest.raises(
        NotADirectoryError,
        match=r"cannot use .*out/run as a run folder: "
        r".*out is a file",
    ):
        check_run_folder(tmp_path / "out" / "run")


def test_checkpoint_path_that_is_a_folder(tmp_path):
    (tmp_path / "checkpoint.pt").mkdir()
    with pytest.raises(IsADirectoryError, match=r"checkpoint.pt is a folder.*move it away"):
        check_run_folder(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_run_folder(tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match=r"cannot write in .*make it writable or pass"):
            check_run_folder(tmp_path)
    finally:
        tmp_path.chmod(0o700)


def test_new_run_folder_is_created(tmp_path):
    assert check_run_folder(tmp_path / "a" / "b").is_dir()


def test_atomic_write_csv_keeps_the_columns_and_rounds(tmp_path):
    path = atomic_write_csv(
        tmp_path / "t.csv",
        [{"a": 0.123456, "b": "x", "extra": 1}, {"a": 2.5e-05, "b": "y"}],
        ["a", "b"],
        digits=3,
    )
    assert path.read_text() == "a,b\n0.123,x\n2.5e-05,y\n"  # significant digits: not 0.0
