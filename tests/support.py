"""Set-up shared by several test files: tiny training configs, fake MNIST files, Ctrl-C.

Imported as ``from tests.support import ...`` (the repository root is on sys.path under pytest).
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from simclr_teach.data import MNIST_FILES
from simclr_teach.train import History, TrainConfig


def tiny_config(**overrides: Any) -> TrainConfig:
    """The smallest run worth training: the embedded digits on the CPU, a 2-wide encoder, one
    epoch of 512-pair batches; ``overrides`` change any TrainConfig field.
    """
    # the CPU, not "auto": a test must not land on a GPU (other numbers, other speed)
    fields: dict[str, Any] = dict(
        data="embedded",
        width=2,
        proj_hidden=8,
        proj_dim=4,
        epochs=1,
        batch_size=512,
        warmup_epochs=0,
        device="cpu",
    )
    return TrainConfig(**{**fields, **overrides})


def small_config(**overrides: Any) -> TrainConfig:
    """A run that learns a little and still takes a second: a 4-wide encoder, 32-pair batches,
    2 epochs (the first warms up), for tests of the loop and the methods; ``overrides`` as above.
    """
    fields: dict[str, Any] = dict(
        width=4, proj_hidden=16, proj_dim=8, epochs=2, batch_size=32, warmup_epochs=1
    )
    return tiny_config(**{**fields, **overrides})


def write_fake_mnist(raw: Path, corrupt: str | None = None) -> None:
    """Write the four MNIST files, full size, into ``raw`` (made here): valid headers, random
    pixels and labels 0..9 (seeded), with the file named ``corrupt`` cut short.
    """
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    headers = {
        "images": lambda n: np.array([2051, n, 28, 28], ">i4").tobytes(),
        "labels": lambda n: np.array([2049, n], ">i4").tobytes(),
    }
    for name in MNIST_FILES:
        n = 60_000 if name.startswith("train") else 10_000
        kind = "images" if "images" in name else "labels"
        body = rng.integers(
            0,
            256 if kind == "images" else 10,
            size=n * (784 if kind == "images" else 1),
            dtype=np.uint8,
        ).tobytes()
        if name == corrupt:
            body = body[:100]
        (raw / name).write_bytes(headers[kind](n) + body)


def interrupt_after(epochs: int) -> Callable[[History], None]:
    """An ``on_epoch_end`` callback that presses Ctrl-C once ``epochs`` epochs are done."""

    def stop(history: History) -> None:
        if len(history.epoch) == epochs:
            raise KeyboardInterrupt  # what Ctrl-C raises

    return stop


def code_cell_errors(notebook: Path) -> list[tuple[dict, str, list[str]]]:
    """(nbgrader metadata, source, names of the errors it raised) of each code cell of an
    executed notebook (nbgrader's autograded copy, say)."""
    import nbformat  # noqa: PLC0415 - only the grading tests need it

    found = []
    for cell in nbformat.read(notebook, as_version=4).cells:
        if cell.cell_type == "code":
            errors = [o.ename for o in cell.get("outputs", []) if o.output_type == "error"]
            found.append((cell.metadata.get("nbgrader", {}), cell.source, errors))
    return found
