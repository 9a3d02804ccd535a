"""Checkpoint files: written atomically, read back with a format check. Taught in 04.

A checkpoint is one ``torch.save`` file holding the config, the weights, the optimizer,
random-generator and float16 loss-scaler state (to resume exactly), the history, the data it
trained on and the package version. It is written to a temporary file beside the target and
renamed over it (``utils.atomic_write``), so a crash mid-write never leaves a half-written
checkpoint: the reader sees the old file or the new one. File I/O only: the model a checkpoint
holds is rebuilt by ``train.load_model``.
"""

from __future__ import annotations

import pickle
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from simclr_teach import __version__
from simclr_teach.utils import atomic_write

CHECKPOINT_FORMAT = 1  # bump when the layout of a checkpoint or of the models changes
REQUIRED_KEYS = ("format", "version", "config", "model", "history")  # "data": older ones lack it


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` ``obj`` to ``path`` atomically (see ``atomic_write``)."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    config: Any,
    history: Any,
    optimizer: torch.optim.Optimizer | None = None,
    generator: torch.Generator | None = None,
    data: dict[str, Any] | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> Path:
    """Write a checkpoint atomically.

    Args:
        path: target file, e.g. ``runs/default/checkpoint.pt``.
        model: the SimCLR module; its state_dict is stored (on CPU).
        config: the ``TrainConfig`` it was trained with.
        history: the ``History`` so far.
        optimizer: stored so a resumed run continues exactly.
        generator: the training generator (shuffling and augmentations), same reason.
        data: what it trained on, ``{"name": ..., "fingerprint": ..., "size": ...}`` (see
            ``data.describe_training_data``), so resume and evaluate use the same digits.
        scaler: the float16 run's loss scale and its growth counter, so a resumed run scales
            (and skips overflowing steps) as the uninterrupted one; None when disabled.
    """
    state = {
        "format": CHECKPOINT_FORMAT,
        "version": __version__,
        "config": asdict(config),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "history": history.to_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "generator": generator.get_state() if generator is not None else None,
        "data": data,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
    }
    return atomic_save(state, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint``; a clear error if it is missing or foreign.

    Returns:
        The stored dict: "config" and "history" as plain dicts, "model" a state_dict, "data"
        the training data's name and fingerprint, "scaler" the GradScaler state of a float16
        run (each None in checkpoints older than that, "scaler" also in other runs).
    """
    path = Path(path)
    if path.is_dir():
        inside = path / "checkpoint.pt"
        if inside.is_file():
            raise IsADirectoryError(
                f"{path} is a run folder, not a checkpoint; pass the checkpoint file in it, "
                f"{inside}"
            )
        raise FileNotFoundError(
            f"no checkpoint in the folder {path}; train one with "
            f"`python -m simclr_teach train --out {path}`"
        )
    if not path.is_file():
        folder = path.parent if path.suffix else path  # "runs/x" names a run folder
        raise FileNotFoundError(
            f"no checkpoint at {path}; train one with `python -m simclr_teach train --out {folder}`"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as error:
        raise PermissionError(
            f"cannot read {path} ({error.strerror}); make it readable or pass another checkpoint"
        ) from None
    except Exception as error:
        # our own words: torch's advice for a file of Python objects is weights_only=False,
        # which runs whatever code the file holds
        fix = "delete it and train again"
        if path.stat().st_size == 0:
            reason = "the file is empty"
        elif isinstance(error, pickle.UnpicklingError):
            reason = "it holds Python objects, not only tensors and plain values"
            fix = "pass a checkpoint.pt written by `python -m simclr_teach train`"
        else:
            reason = "it is damaged, cut short or not written by torch.save"
        raise ValueError(f"{path} is not a readable checkpoint ({reason}); {fix}") from None
    missing = [k for k in REQUIRED_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise ValueError(
            f"{path} is not a simclr_teach checkpoint (missing {missing}); train again"
        )
    if state["format"] != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path} has checkpoint format {state['format']}, "
            f"this version reads {CHECKPOINT_FORMAT}; "
            "delete it and train again"
        )
    state.setdefault("data", None)
    state.setdefault("scaler", None)
    return state


def check_run_folder(
    folder: str | Path, files: tuple[str, ...] = ("checkpoint.pt", "metrics.json")
) -> Path:
    """Create ``folder`` if needed and make sure a run can write ``files`` there, before training.

    A folder that cannot hold the run fails now, with the reason, not after an epoch.

    Raises:
        OSError (NotADirectoryError, IsADirectoryError, PermissionError) naming the path and
        what to do.
    """
    folder = Path(folder)
    blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise NotADirectoryError(
            f"cannot use {folder} as a run folder: {blocker} is a file; "
            "pass a folder path to --out (a new or an existing folder)"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise PermissionError(
            f"cannot write in {folder} ({error.strerror}); make it writable "
            "or pass another folder to --out"
        ) from None
    for name in files:
        if (folder / name).is_dir():
            raise IsADirectoryError(
                f"{folder / name} is a folder, but the run writes a file "
                "there; move it away or pass another folder to --out"
            )
    return folder
