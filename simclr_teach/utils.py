"""Seeding and device choice, the two things every notebook does first."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch so a run repeats exactly. Used at the top of every notebook.

    Args:
        seed: any non-negative integer.

    Returns:
        A CPU ``torch.Generator`` seeded with ``seed``, for code that takes an explicit generator.
    """
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    os.environ["PYTHONHASHSEED"] = str(seed)
    return torch.Generator().manual_seed(seed)


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """The fastest device here: cuda, then mps, then cpu; or the one asked for.

    Args:
        device: "auto", or anything ``torch.device`` accepts ("cpu", "cuda", "cuda:1", "mps").
    """
    if str(device) != "auto":
        device = torch.device(device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for but no CUDA GPU is visible; use 'auto' or 'cpu'")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
