"""Slow, deterministic evaluations kept on disk, so that running a notebook again reads them.

Notebook 05 tunes readers (``protocol.tuned_scores``), reruns a few-label row
(``protocol.few_label_study``) and draws t-SNE maps (``evaluate.tsne``): minutes of a 2-core
CPU, and the same inputs give the same numbers. Training runs are cached by ``load_or_train``;
these results are cached here, when asked for: set ``SIMCLR_TEACH_MEMO=1`` (the folder
``runs/cache/memo``) or to a folder. ``make test`` sets it for nbval's runs of the notebooks, so
that running the tests again reads what the first run computed. Unset (the default in a
notebook), every call computes.

A result is found again only for the same function, the same arguments (tensors and models by
their contents: a hash of their bytes), the same precision (``utils.default_amp``) and the same
source code of the whole package: an edit anywhere in ``simclr_teach`` computes everything anew.
Results are stored as JSON (no pickle: a file in the folder cannot run code) and written
atomically; an unreadable file is computed again and replaced.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from simclr_teach.data import runs_dir
from simclr_teach.utils import atomic_write_text, default_amp

MEMO_ENV = "SIMCLR_TEACH_MEMO"  # "1": runs/cache/memo; a path: that folder; unset or "0": off

F = TypeVar("F", bound=Callable[..., Any])


class _NoMemo(Exception):
    """An argument or a result this module cannot hash or store: the call just computes."""


def memo_dir() -> Path | None:
    """The folder results are kept in, or None when ``$SIMCLR_TEACH_MEMO`` is unset or "0"."""
    value = os.environ.get(MEMO_ENV, "").strip()
    if value in ("", "0"):
        return None
    if value == "1":
        return runs_dir() / "cache" / "memo"
    return Path(value)


@functools.lru_cache(maxsize=1)
def source_digest() -> str:
    """Hash of every .py file of the package: a result is only reused by the code that made it."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _bytes_digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def fingerprint(value: Any) -> Any:
    """A JSON-able stand-in for ``value``: equal for equal contents, different otherwise.

    Tensors and arrays become (dtype, shape, hash of bytes); a module its class, mode and
    ``state_dict``; containers and dataclasses are walked. Anything else (a callback, an open
    file) raises ``_NoMemo``: such a call is not memoised.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return repr(value)  # exact, nan and inf included
    if isinstance(value, Tensor):
        flat = value.detach().cpu().contiguous().flatten()
        raw = flat.view(torch.uint8) if flat.dtype.itemsize > 1 else flat.to(torch.uint8)
        return ["tensor", str(value.dtype), list(value.shape), _bytes_digest(raw.numpy())]
    if isinstance(value, np.ndarray):
        return ["array", str(value.dtype), list(value.shape), _bytes_digest(value)]
    if isinstance(value, nn.Module):
        state = {name: fingerprint(tensor) for name, tensor in value.state_dict().items()}
        return ["module", type(value).__qualname__, value.training, state]
    if isinstance(value, (list, tuple)):
        return [type(value).__name__, [fingerprint(v) for v in value]]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return ["dict", {k: fingerprint(v) for k, v in sorted(value.items())}]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return ["dataclass", type(value).__qualname__, fingerprint(dataclasses.asdict(value))]
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return fingerprint(value.item())
    raise _NoMemo(type(value).__name__)


def _encode(value: Any) -> Any:
    """A result as JSON: tuples and arrays tagged so that ``_decode`` gives them back."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        if "__tuple__" in value or "__array__" in value:
            raise _NoMemo("a dict with a reserved key")
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return {"__array__": value.tolist(), "dtype": str(value.dtype), "shape": value.shape}
    raise _NoMemo(type(value).__name__)


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        if "__tuple__" in value:
            return tuple(_decode(v) for v in value["__tuple__"])
        if "__array__" in value:
            array = np.array(value["__array__"], dtype=value["dtype"])
            return array.reshape(value["shape"])
        return {k: _decode(v) for k, v in value.items()}
    return value


def memoised(fn: F) -> F:
    """``fn`` whose results are kept in ``memo_dir()`` when that is set (see the module docstring).

    The key hashes ``fn``'s name, its arguments by content (``fingerprint``), the precision and
    ``source_digest()``. A call with an argument that cannot be hashed, or whose result cannot be
    stored, computes as if memoising were off.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        folder = memo_dir()
        if folder is None:
            return fn(*args, **kwargs)
        try:
            payload = json.dumps(
                [fn.__module__, fn.__qualname__, source_digest(), default_amp(),
                 fingerprint(list(args)), fingerprint(kwargs)],
                sort_keys=True,
            )  # fmt: skip
        except _NoMemo:
            return fn(*args, **kwargs)
        path = (
            folder / fn.__qualname__ / f"{hashlib.sha256(payload.encode()).hexdigest()[:24]}.json"
        )
        try:
            return _decode(json.loads(path.read_text(encoding="utf-8"))["result"])
        except (OSError, ValueError, KeyError, TypeError):
            pass  # not there yet, or unreadable: compute it (again)
        result = fn(*args, **kwargs)
        try:
            text = json.dumps({"function": fn.__qualname__, "result": _encode(result)})
        except _NoMemo:
            return result
        atomic_write_text(path, text)
        return result

    return wrapper  # type: ignore[return-value]
