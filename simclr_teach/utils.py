"""Seeding and device choice, the two things every notebook does first."""

from __future__ import annotations

import os
import platform
import random
import time

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


def autocast_dtype(device: torch.device, enabled: bool = True) -> torch.dtype | None:
    """The mixed-precision dtype for ``torch.autocast`` on ``device``, or None for float32.

    CUDA: bfloat16 where the GPU supports it, else float16 (which needs a GradScaler). CPU:
    bfloat16 only where the CPU computes it natively (AVX512-BF16 or AMX), where it makes a
    training step ~1.6x faster (benchmarks/results/summary.md); emulated bf16 would be slower.

    Args:
        device: where the model runs.
        enabled: False always gives None (``TrainConfig.amp=False``).
    """
    if not enabled:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        native = [getattr(torch.cpu, name, lambda: False)()
                  for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
        return torch.bfloat16 if any(native) else None
    return None


def run_note(command: str, **facts: object) -> str:
    """What produced a committed result file: the command, ``facts``, the machine and the time.

    Written beside results (``notebooks/results/*.txt``) so anyone can rerun them and knows
    what they were measured on. Returns "key: value" lines.
    """
    note = {"command": command, **facts,
            "machine": f"{platform.processor() or platform.machine()}, "
                       f"{torch.get_num_threads()} threads, torch {torch.__version__}",
            "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    return "\n".join(f"{key}: {value}" for key, value in note.items()) + "\n"
