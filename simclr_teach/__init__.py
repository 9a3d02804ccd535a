"""simclr_teach: the helper package of the SimCLR course (see README.md).

The names a notebook uses most are here: ``from simclr_teach import load_mnist, nt_xent``.
Each is imported from its module on first use (PEP 562), so ``import simclr_teach`` itself loads
neither torch nor scikit-learn; the modules (``simclr_teach.loss``, ...) hold everything else.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> the module that defines it
_HOMES = {
    "load_mnist": "data",
    "BatchAugment": "augment",
    "nt_xent": "loss",
    "SimCLR": "model",
    "TrainConfig": "train",
    "train_simclr": "train",
    "load_or_train": "train",
    "load_model": "train",
    "embed": "evaluate",
    "knn_accuracy": "evaluate",
    "linear_probe": "evaluate",
    "seed_everything": "utils",
}

__all__ = ["__version__", *_HOMES]


def __getattr__(name: str) -> Any:
    """Import ``name`` from its module the first time it is asked for, then keep it here."""
    if name not in _HOMES:
        raise AttributeError(f"module 'simclr_teach' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"simclr_teach.{_HOMES[name]}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
