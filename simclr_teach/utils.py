"""Seeding, threads and device choice, the things every notebook does first; a file lock and
atomic file writes (a crash mid-write never leaves a half-written file)."""

from __future__ import annotations

import csv
import errno
import glob
import io
import os
import platform
import random
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

MAX_SEED = 2**32 - 1  # NumPy's limit, the smallest of Python's, NumPy's and torch's
STALE_SECONDS = 3600  # a temporary file this old is left over from a killed write


THREADS_ENV = "SIMCLR_TEACH_THREADS"  # pins the thread count (e.g. 2), or "auto" (the default)
_threads_chosen: int | None = None  # set by use_free_cores: the choice is made once a process

# The course's run as another machine would make it (CI's second pass, `make test-variant`):
# another seed and float32 arithmetic, read here and nowhere else.
SEED_ENV = "SIMCLR_TEACH_SEED"  # the seed of every notebook and TrainConfig() (default 0)
PRECISION_ENV = "SIMCLR_TEACH_PRECISION"  # "auto" (bf16 where native) or "float32"
PRECISIONS = ("auto", "float32")


def default_seed() -> int:
    """The course's seed: $SIMCLR_TEACH_SEED if set, else 0. Every notebook's ``SEED``.

    Also the default of ``TrainConfig.seed``. A claim in a notebook must hold for any seed, not
    only for the committed run's: CI runs every notebook a second time with another one.

    Raises:
        ValueError for a value that is not an integer in [0, 2**32 - 1].
    """
    value = os.environ.get(SEED_ENV, "").strip()
    if not value:
        return 0
    if not value.isdigit():
        raise ValueError(
            f"{SEED_ENV}={value!r} is not a seed; set it to an integer such as 1, or unset it"
        )
    return check_seed(int(value), SEED_ENV)


def default_amp() -> bool:
    """Whether runs use mixed precision by default (``TrainConfig.amp``): $SIMCLR_TEACH_PRECISION.

    "auto" (the default): bfloat16 autocast where the CPU or GPU computes it natively
    (``autocast_dtype``); "float32": plain float32, the arithmetic of a CPU without native
    bfloat16, so one machine can check that the course holds on another.

    Raises:
        ValueError for a value other than "auto" or "float32".
    """
    value = os.environ.get(PRECISION_ENV, "auto").strip() or "auto"
    if value not in PRECISIONS:
        raise ValueError(
            f"{PRECISION_ENV}={value!r} is not a precision; set it to one of {PRECISIONS}, "
            "or unset it"
        )
    return value == "auto"


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch so a run repeats exactly. Used at the top of every notebook.

    The first call in a process also chooses the CPU thread count (``use_free_cores``): a run
    repeats bit for bit only at the same thread count, so it is chosen here, once, before any
    work.

    Python's hash randomisation is left alone: PYTHONHASHSEED only acts when the interpreter
    starts, and it only changes the iteration order of sets of str (and bytes), which nothing
    here relies on (such sets are sorted before they are shown or stored).

    Args:
        seed: any non-negative integer.

    Returns:
        A CPU ``torch.Generator`` seeded with ``seed``, for code that takes an explicit generator.
    """
    check_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if _threads_chosen is None:
        use_free_cores()
    return torch.Generator().manual_seed(seed)


def nice_gives_way() -> bool:
    """Whether a process at lower priority (``nice``) gives its core to ours.

    Not under Linux's autogroup scheduling (/proc/sys/kernel/sched_autogroup_enabled = 1, the
    default of many distributions): the CPU is shared between sessions (terminals, notebook
    servers, agents) first, and nice acts only within one, so a niced program started from
    another terminal still takes its half of the cores.
    """
    try:
        return Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "0"
    except OSError:
        return True  # no autogroup (or not Linux): nice works as documented


def busy_cpu_seconds() -> float | None:
    """CPU seconds every process on this machine has run since boot (/proc/stat), or None.

    Time of processes at lower priority (``nice``) is left out where they give way to ours
    (``nice_gives_way``), so they do not take a core from it; under autogroup it counts.
    """
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None  # not Linux
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks
    busy = user + system + irq + softirq + steal + (0 if nice_gives_way() else nice)
    return busy / os.sysconf("SC_CLK_TCK")


@contextmanager
def other_load() -> Iterator[dict[str, float | None]]:
    """Measure how busy *other* processes kept the CPU during the block.

    Yields a dict filled at exit: ``other_cores`` = (CPU seconds of every process - this
    process's and those of the child processes it ran and waited for, e.g. ``subprocess.run``) /
    wall seconds, i.e. how many cores something else used on average (0 on an idle machine; 1 =
    one core kept busy). None where /proc/stat is missing.
    """
    out: dict[str, float | None] = {"other_cores": None}
    busy, own, start = busy_cpu_seconds(), _own_cpu_seconds(), time.perf_counter()
    try:
        yield out
    finally:
        after = busy_cpu_seconds()
        wall = time.perf_counter() - start
        if busy is not None and after is not None and wall > 0:
            other = (after - busy) - (_own_cpu_seconds() - own)
            out["other_cores"] = round(max(0.0, other) / wall, 2)


def _own_cpu_seconds() -> float:
    """CPU seconds of this process and of the children it has waited for (``os.times``)."""
    times = os.times()
    return time.process_time() + times.children_user + times.children_system


def cores_busy_elsewhere(window: float = 0.3) -> float | None:
    """How many cores other processes keep busy, measured over ``window`` seconds (None off
    Linux): 0 on an idle machine, about 1.0 with one other program spinning on a core."""
    with other_load() as load:
        time.sleep(window)
    return load["other_cores"]


def use_free_cores(threads: int | None = None) -> int:
    """Set torch's CPU thread count to the cores that are free now; return it. Called once.

    PyTorch starts one thread per core. Each operation is split among them and waits for the
    slowest, so when another program keeps one of 2 cores busy, 2 threads run slower than 1
    (benchmarks/busy_cpu.py). So: cores this process may use, minus the cores other processes
    kept busy over 0.3 s (rounded), at least 1. scikit-learn (probes, t-SNE) follows through
    ``sklearn_threads``.

    Precedence: ``threads`` if given; else $SIMCLR_TEACH_THREADS if it is a number (pin it to
    repeat a run bit for bit on a busy machine); else $OMP_NUM_THREADS if set (torchrun and
    the user's own choice are kept); else the free cores.

    Raises:
        ValueError for a $SIMCLR_TEACH_THREADS that is neither "auto" nor a positive integer.
    """
    global _threads_chosen
    pinned = os.environ.get(THREADS_ENV, "auto").strip()
    if threads is None and pinned != "auto":
        if not pinned.isdigit() or int(pinned) < 1:
            raise ValueError(
                f"{THREADS_ENV}={pinned!r} is not a thread count; set it to a "
                "positive integer such as 2, or to 'auto' (use the free cores)"
            )
        threads = int(pinned)
    if threads is None and os.environ.get("OMP_NUM_THREADS"):
        threads = torch.get_num_threads()  # set by the launcher or the user: keep it
    if threads is None:
        cores = (
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else (os.cpu_count() or 1)
        )
        busy = cores_busy_elsewhere()
        threads = max(1, cores - round(busy)) if busy is not None else cores
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    _threads_chosen = threads
    return threads


@contextmanager
def sklearn_threads() -> Iterator[None]:
    """scikit-learn's OpenMP and BLAS pools limited to torch's thread count in the block.

    One thread count for the whole process (``use_free_cores``): the probes and t-SNE also slow
    down several-fold when they spread over a core another program is using.
    """
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    with threadpool_limits(limits=torch.get_num_threads()):
        yield


def check_seed(seed: int, name: str = "seed") -> int:
    """``seed`` if it is an int in [0, 2**32 - 1] (what every generator takes), else ValueError."""
    is_int = isinstance(seed, (int, np.integer)) and not isinstance(seed, bool)
    if not is_int or not 0 <= seed <= MAX_SEED:
        raise ValueError(
            f"{name} must be an int in [0, 2**32 - 1], got {seed!r}; "
            f"pick one in that range, e.g. {name} % 2**32"
        )
    return int(seed)


def available_devices() -> list[str]:
    """The device names this machine can run on: "cpu", then "cuda", "cuda:1", ..., "mps", "xpu"."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        names.append("mps")
    if getattr(torch, "xpu", None) is not None and torch.xpu.is_available():
        names += ["xpu"] + [f"xpu:{i}" for i in range(torch.xpu.device_count())]
    return names


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """The fastest device here (cuda, then mps, then cpu), or the one asked for, if this has it.

    Args:
        device: "auto", or one of ``available_devices()`` ("cpu", "cuda", "cuda:1", "mps", "xpu").

    Raises:
        ValueError naming the devices this machine has, for a name torch does not know ("gpu",
        "CPU") or a device that is not here (e.g. "cuda" without a visible GPU).
    """
    if str(device) == "auto":
        for name in ("cuda", "mps"):  # xpu only when asked for, as before
            if name in available_devices():
                return torch.device(name)
        return torch.device("cpu")
    here = available_devices()
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        parsed = None
    if parsed is None or not (str(parsed) in here or parsed.index == 0 and parsed.type in here):
        raise ValueError(
            f"device {str(device)!r} is not available on this machine; use 'auto' or one of {here}"
        )
    return parsed


@contextmanager
def locked(path: str | Path, wait: bool, busy: str = "") -> Iterator[None]:
    """Hold an exclusive lock (``fcntl.flock``) on a file or folder for the ``with`` block.

    Used for a run folder (two trainings must not write one checkpoint) and for the folder of
    the lab results (two processes adding rows at once). The lock lives in the kernel: it ends
    with the block or the process, even a killed one, and leaves no file behind.

    Args:
        path: an existing file or folder.
        wait: True: wait for the holder to finish. False: raise ``BlockingIOError`` at once.
        busy: the message of that error: what is busy and what to do.
    """
    import fcntl  # Linux and macOS

    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise BlockingIOError(busy or f"{path} is locked by another process") from None
        yield
    finally:
        os.close(fd)  # closing releases the lock


def autocast_dtype(device: torch.device, enabled: bool = True) -> torch.dtype | None:
    """The mixed-precision dtype for ``torch.autocast`` on ``device``, or None for float32.

    CUDA: bfloat16 where the GPU supports it, else float16 (which needs a GradScaler). CPU:
    bfloat16 only where the CPU computes it natively (AVX512-BF16 or AMX), where it makes a
    training step faster (benchmarks/results/summary.md); emulated bf16 would be slower.

    Args:
        device: where the model runs.
        enabled: False always gives None (``TrainConfig.amp=False``).
    """
    if not enabled:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        native = [
            getattr(torch.cpu, name, lambda: False)()
            for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        ]
        return torch.bfloat16 if any(native) else None
    return None


def run_note(command: str, **facts: object) -> str:
    """What produced a committed result file: the command, ``facts``, the machine and the time.

    Written beside results (``notebooks/results/*.txt``) so anyone can rerun them and knows
    what they were measured on. Returns "key: value" lines.
    """
    note = {
        "command": command,
        **facts,
        "machine": f"{platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}",
        "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    return "\n".join(f"{key}: {value}" for key, value in note.items()) + "\n"


# --- atomic file writes ------------------------------------------------------------------------


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
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        cause = _os_error_in(error)
        if cause is None or cause.filename is not None:
            raise  # not a failed write, or one whose message names its file already
        # "No space left on device" names no file; torch.save even turns it into a RuntimeError
        fix = "free space on that disk" if cause.errno in _FULL else "check that disk"
        named = OSError(
            f"cannot write {path} ({cause.strerror or cause}); {fix} or write elsewhere"
        )
        named.errno = cause.errno
        raise named from error
    return path


_FULL = (errno.ENOSPC, errno.EDQUOT)  # disk full, disk quota exceeded


def _os_error_in(error: BaseException | None) -> OSError | None:
    """``error`` if it is an OSError, else the first OSError it was raised from or during."""
    while error is not None and not isinstance(error, OSError):
        error = error.__cause__ or error.__context__
    return error


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (see ``atomic_write``)."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_csv(
    path: str | Path,
    rows: Iterable[Mapping[str, Any]],
    columns: Sequence[str],
    digits: int | None = None,
) -> Path:
    """Rows (dicts; keys outside ``columns`` ignored) to a CSV file atomically; floats rounded
    to ``digits`` significant digits if given (a weight decay of 2.5e-05 is not written 0).
    The committed result tables are written this way."""
    return atomic_write_text(path, csv_text(rows, columns, digits))


def csv_text(
    rows: Iterable[Mapping[str, Any]], columns: Sequence[str], digits: int | None = None
) -> str:
    """The CSV file ``atomic_write_csv`` writes, as text: a header, then one line per row."""
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {
                k: float(f"{v:.{digits}g}") if digits is not None and isinstance(v, float) else v
                for k, v in row.items()
            }
        )
    return buffer.getvalue()


# --- result tables: the sweep and few-labels ---------------------------------------------------


def note_path(out: str | Path) -> Path:
    """Where the run note (``run_note``) of the result table ``out`` goes: ``out`` with ``.txt``.

    Raises:
        ValueError for an ``out`` the note would overwrite (one ending in .txt) or a folder,
        before any work is done.
    """
    out = Path(out)
    if out.is_dir():
        raise ValueError(
            f"{out} is a folder; pass a CSV file path to --out, e.g. --out {out / 'results.csv'}"
        )
    if out.suffix.lower() == ".txt":
        raise ValueError(
            f"{out} ends in .txt, the name of the run note written beside the results, which "
            f"would overwrite them; pass a .csv path to --out, e.g. {out.with_suffix('.csv')}"
        )
    return out.with_suffix(".txt")


def partial_path(out: str | Path) -> Path:
    """Where ``writing_results`` keeps the rows of ``out`` until the table is complete."""
    out = Path(out)
    return out.with_name(out.name + ".partial")


def _lock_file(path: Path, busy: str) -> int:
    """A descriptor of ``path`` (created if missing), exclusively locked; or BlockingIOError."""
    import fcntl  # Linux and macOS

    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # 0666 minus the umask
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise BlockingIOError(busy or f"{path} is locked by another process") from None
        try:
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # a finishing writer removed the file between our open and lock: again


@contextmanager
def writing_results(out: str | Path, busy: str = "") -> Iterator[Callable[[str], None]]:
    """Write the table ``out`` whole or not at all, one process at a time (sweep, few-labels).

    Yields ``save(text)``: the table so far, written to ``partial_path(out)`` after each row,
    so a run that stops keeps its rows there. When the block ends without an error, the last
    text saved replaces ``out`` atomically and the partial file goes; until then an existing
    ``out`` stays as it was. The partial file is locked (``flock``, like ``locked``) for the
    block: a second process writing the same ``out`` gets ``BlockingIOError(busy)`` at once.
    """
    out = Path(out)
    partial = partial_path(out)
    partial.parent.mkdir(parents=True, exist_ok=True)
    fd = _lock_file(partial, busy)
    saved: list[str] = []  # the last text saved

    def save(text: str) -> None:
        data = text.encode("utf-8")
        os.ftruncate(fd, 0)  # in place: the locked file must stay the one at this path
        os.pwrite(fd, data, 0)
        os.fsync(fd)
        saved[:] = [text]

    try:
        yield save
        if saved:
            atomic_write_text(out, saved[0])
        partial.unlink()  # before the lock is released: a newcomer then makes a new one
    except BaseException:
        if not saved:
            partial.unlink(missing_ok=True)  # no row to keep
        raise
    finally:
        os.close(fd)  # closing releases the lock
