"""Checkpoints written atomically, and the model they hold. Taught in 04_training_on_mnist.

A checkpoint is one ``torch.save`` file holding the config, the weights, the optimizer and
random-generator state (to resume exactly), the history, the data it trained on and the package
version. It is written to a temporary file beside the target and renamed over it, so a crash
mid-write never leaves a half-written checkpoint: the reader sees the old file or the new one.
"""

from __future__ import annotations

import csv
import glob
import io
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import nn

from simclr_teach import __version__

CHECKPOINT_FORMAT = 1  # bump when the layout of a checkpoint or of the models changes
REQUIRED_KEYS = ("format", "version", "config", "model", "history")  # "data": older ones lack it
STALE_SECONDS = 3600  # a temporary file this old is left over from a killed write


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def _remove_stale_temporaries(path: Path) -> None:
    """Delete ``.<name>.*.tmp`` files beside ``path`` left by writes killed over an hour ago."""
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        try:
            if time.time() - tmp.stat().st_mtime > STALE_SECONDS:
                tmp.unlink()
        except FileNotFoundError:
            pass  # another process cleaned it first


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(f)`` on a temporary file in ``path``'s folder, fsync, then rename it over
    ``path``: a crash mid-write leaves the old file (or none), never a half-written one.

    The file gets the permissions of any new file (0666 minus the umask, usually 0644), and
    temporary files of writes killed more than ``STALE_SECONDS`` ago are removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes it 0600, private to the user
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic: readers see the old file or the new one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` ``obj`` to ``path`` atomically (see ``atomic_write``)."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (see ``atomic_write``)."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_csv(path: str | Path, rows: Iterable[Mapping[str, Any]],
                     columns: Sequence[str], digits: int | None = None) -> Path:
    """Rows (dicts; keys outside ``columns`` ignored) to a CSV file atomically; floats rounded
    to ``digits`` decimals if given. The committed result tables are written this way."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: round(v, digits) if digits is not None and isinstance(v, float) else v
                         for k, v in row.items()})
    return atomic_write_text(path, buffer.getvalue())


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    config: Any,
    history: Any,
    optimizer: torch.optim.Optimizer | None = None,
    generator: torch.Generator | None = None,
    data: dict[str, Any] | None = None,
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
    """
    from dataclasses import asdict

    state = {
        "format": CHECKPOINT_FORMAT,
        "version": __version__,
        "config": asdict(config),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "history": history.to_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "generator": generator.get_state() if generator is not None else None,
        "data": data,
    }
    return atomic_save(state, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint``; a clear error if it is missing or foreign.

    Returns:
        The stored dict: "config" and "history" as plain dicts, "model" a state_dict, "data"
        the training data's name and fingerprint (None in checkpoints older than that).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {path}; train one with `python -m simclr_teach train --out {path.parent}`"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path} is not a readable checkpoint ({error}); delete it and train again") from error
    missing = [k for k in REQUIRED_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise ValueError(f"{path} is not a simclr_teach checkpoint (missing {missing}); train again")
    if state["format"] != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path} has checkpoint format {state['format']}, this version reads {CHECKPOINT_FORMAT}; "
            "delete it and train again"
        )
    state.setdefault("data", None)
    return state


def load_model(path: str | Path) -> nn.Module:
    """The trained ``SimCLR`` module stored in a checkpoint, in eval mode, on the CPU."""
    from simclr_teach.train import TrainConfig, build_model

    state = load_checkpoint(path)
    model = build_model(TrainConfig.from_dict(state["config"]))
    model.load_state_dict(state["model"])
    return model.eval()


def check_run_folder(folder: str | Path, files: tuple[str, ...] = ("checkpoint.pt", "metrics.json")
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
        raise NotADirectoryError(f"cannot use {folder} as a run folder: {blocker} is a file; "
                                 "pass a folder path to --out (a new or an existing folder)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise PermissionError(f"cannot write in {folder} ({error.strerror}); make it writable "
                              "or pass another folder to --out") from None
    for name in files:
        if (folder / name).is_dir():
            raise IsADirectoryError(f"{folder / name} is a folder, but the run writes a file "
                                    "there; move it away or pass another folder to --out")
    return folder
