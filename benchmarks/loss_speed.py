"""Item 3: NT-Xent forward + backward time and peak memory against other implementations.

Implementations (all the same loss, tau = 0.5, D = 128, float32, CPU):
- nt_xent: simclr_teach.loss.nt_xent, the textbook form notebook 02 derives (cross-entropy over
  masked cosine logits, autograd does the backward);
- nt_xent_fused: simclr_teach.loss.nt_xent_fused, the explicitly named fast option (a custom
  autograd.Function that writes out the gradient, softmax - one-hot: one (2N, 2N) matrix
  serves forward and backward; no second derivatives);
- lightly: lightly.loss.NTXentLoss, an efficient and widely used implementation;
- pml: pytorch_metric_learning.losses.NTXentLoss, exact but with memory cubic in N.

Time: one call = loss forward + backward from fresh leaf inputs, implementations interleaved.
Memory: peak RSS growth of one call in a fresh subprocess per implementation and N: after the
imports, the inputs and a tiny warm-up call, the kernel's high-water mark is reset
(`echo 5 > /proc/self/clear_refs`) and VmHWM - VmRSS is read after the call. torch's CPU
allocator returns large blocks to the OS, so this is the peak of live tensors plus scratch.
The subprocess caps its address space (RLIMIT_AS) at CAP_GIB above what it has mapped, so an
implementation that needs more fails fast with an allocation error instead of eating the machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from benchmarks.common import (
    REPO_ROOT,
    RESULTS,
    add_table,
    add_target,
    interleaved,
    new_result,
    stats,
)
from simclr_teach.loss import nt_xent, nt_xent_fused, positive_index

NAME, TITLE = "loss", "Loss speed (item 3): NT-Xent forward + backward and peak memory"
TARGET = 0.75  # nt_xent time / lightly time, at most
TEMPERATURE, DIM = 0.5, 128
CAP_GIB = 4.0  # address-space headroom of a memory subprocess
PML_PROBE = (128, 256, 512)
TARGET_SIZES = (1024, 4096)  # N of the time target; 256 is the course's batch, for information


def available(name: str) -> bool:
    """Whether the library behind implementation `name` is installed."""
    module = {"lightly": "lightly", "pml": "pytorch_metric_learning"}.get(name)
    if module is None:
        return True
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def make_loss(name: str, temperature: float = TEMPERATURE) -> Callable[[Tensor, Tensor], Tensor]:
    """(z1, z2) -> scalar loss for implementation `name`."""
    if name == "nt_xent":
        return lambda z1, z2: nt_xent(z1, z2, temperature)
    if name == "nt_xent_fused":
        return lambda z1, z2: nt_xent_fused(z1, z2, temperature)
    if name == "lightly":
        from lightly.loss import NTXentLoss

        lightly_loss = NTXentLoss(temperature=temperature)
        return lambda z1, z2: lightly_loss(z1, z2)
    if name == "pml":
        from pytorch_metric_learning.losses import NTXentLoss as PMLNTXentLoss

        pml_loss = PMLNTXentLoss(temperature=temperature)  # pairs = embeddings sharing a label
        return lambda z1, z2: pml_loss(torch.cat([z1, z2]), torch.arange(len(z1)).repeat(2))
    raise ValueError(f"unknown implementation {name!r}; use nt_xent, nt_xent_fused, lightly or pml")


def inputs(n: int, d: int = DIM, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Leaf projections z1, z2 of shape (n, d), requiring gradients."""
    generator = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n, d, generator=generator).requires_grad_(),
        torch.randn(n, d, generator=generator).requires_grad_(),
    )


def step(loss_fn: Callable, z1: Tensor, z2: Tensor) -> Callable[[], None]:
    """One timed unit: forward and backward from fresh gradients."""

    def call() -> None:
        z1.grad = z2.grad = None
        loss_fn(z1, z2).backward()

    return call


def check_values(names: list[str], n: int) -> dict[str, dict[str, float]]:
    """|loss - oracle| and max |grad - oracle grad| of each implementation; the oracle is the
    autograd form in float64."""
    z1, z2 = inputs(n)
    a, b = z1.detach().double().requires_grad_(), z2.detach().double().requires_grad_()
    logits = F.normalize(torch.cat([a, b]), dim=1) @ F.normalize(torch.cat([a, b]), dim=1).T
    oracle = F.cross_entropy(logits.fill_diagonal_(float("-inf")) / TEMPERATURE, positive_index(n))
    oracle.backward()
    out = {}
    for name in names:
        z1.grad = z2.grad = None
        loss = make_loss(name)(z1, z2)
        loss.backward()
        out[name] = {
            "loss": loss.item(),
            "loss_error": abs(loss.item() - oracle.item()),
            "grad_error": max(
                (z1.grad - a.grad).abs().max().item(), (z2.grad - b.grad).abs().max().item()
            ),
        }
    return out


def _status_mib(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024  # kB -> MiB
    raise KeyError(key)


def memory_child(name: str, n: int, cap_gib: float) -> dict[str, Any]:
    """Runs in a fresh process: peak RSS growth (MiB) of one forward + backward."""
    import resource

    loss_fn = make_loss(name)
    step(loss_fn, *inputs(4))()  # warm-up: lazy initialisation, thread pools
    call = step(loss_fn, *inputs(n))
    limit = int((_status_mib("VmSize") + 1024 * cap_gib) * 2**20)
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak to the current RSS
    base = _status_mib("VmRSS")
    start = time.perf_counter()
    try:
        call()
    except (RuntimeError, MemoryError) as error:
        return {
            "ok": False,
            "error": str(error).splitlines()[0][:200],
            "peak_mib": _status_mib("VmHWM") - base,
        }
    seconds = time.perf_counter() - start
    return {"ok": True, "seconds": seconds, "peak_mib": _status_mib("VmHWM") - base}


def measure_memory(name: str, n: int, cap_gib: float = CAP_GIB) -> dict[str, Any]:
    """memory_child in a subprocess (a fresh allocator and a fresh high-water mark)."""
    command = [
        sys.executable,
        "-m",
        "benchmarks.loss_speed",
        "--memory",
        name,
        str(n),
        str(cap_gib),
    ]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {
            "ok": False,
            "error": f"exit {done.returncode}: {done.stderr.strip()[-300:]}",
            "peak_mib": None,
        }
    return json.loads(lines[-1])


def _fmt_mib(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def run(quick: bool = False, out_dir: str | Path = RESULTS) -> dict[str, Any]:
    """Time and memory of each implementation at N = 256, 1024 and 4096 (quick: 32, 64), and
    the largest N pytorch-metric-learning's NTXentLoss runs at under a CAP_GIB cap."""
    result = new_result(NAME, TITLE, quick)
    sizes, pml_probe, cap = (32, 64), (16,), 0.5
    if not quick:
        sizes, pml_probe, cap = (256, 1024, 4096), PML_PROBE, CAP_GIB
    names = [name for name in ("nt_xent", "nt_xent_fused", "lightly") if available(name)]
    if "lightly" not in names:
        result["notes"].append(
            "lightly is not installed: `pip install -r benchmarks/requirements.txt`."
        )
    rows, data = [], {"sizes": {}}
    for n in sizes:
        repeats = 3 if quick else max(5, 15 * 1024 // n)
        checks = check_values(names, n)
        calls = {name: step(make_loss(name), *inputs(n)) for name in names}
        times = interleaved(calls, repeats, warmup=1)
        measured = [] if quick else names  # quick: the probe below covers the subprocess
        memory = {
            name: measure_memory(name, n) if name in measured else {"peak_mib": None}
            for name in names
        }
        timing = {name: stats(t) for name, t in times.items()}
        base = timing.get("lightly")
        for name in names:
            ratio = timing[name]["best"] / base["best"] if base else None
            rows.append(
                [
                    f"{n:,}",
                    name,
                    f"{1000 * timing[name]['best']:,.1f}",
                    f"{1000 * timing[name]['median']:,.1f}",
                    "-" if ratio is None else f"{ratio:.2f}",
                    _fmt_mib(memory[name]["peak_mib"]),
                    f"{checks[name]['loss_error']:.1e}",
                    f"{checks[name]['grad_error']:.1e}",
                ]
            )
        data["sizes"][n] = {"seconds": times, "timing": timing, "memory": memory, "checks": checks}
        if base:
            for name in ("nt_xent_fused", "nt_xent"):  # the fast option holds the target
                ratio = timing[name]["best"] / base["best"]
                if n in TARGET_SIZES or quick:
                    add_target(
                        result,
                        f"{name} / lightly time, N={n}",
                        ratio,
                        f"<= {TARGET}" if name == "nt_xent_fused" else "(report)",
                        ratio <= TARGET if name == "nt_xent_fused" else None,
                    )
            diff = abs(checks["nt_xent"]["loss"] - checks["lightly"]["loss"])
            add_target(
                result, f"nt_xent vs lightly, loss difference, N={n}", diff, "<= 1e-4", diff <= 1e-4
            )
    add_table(
        result,
        f"Forward + backward, D={DIM}, tau={TEMPERATURE} (ms: best and median of "
        "interleaved rounds; peak: RSS growth of one call in a fresh process; errors against "
        "a float64 oracle)",
        [
            "N",
            "implementation",
            "ms best",
            "ms median",
            "time / lightly",
            "peak MiB",
            "loss error",
            "max grad error",
        ],
        rows,
    )

    if available("pml"):
        probe_rows, probe = [], {}
        for n in pml_probe:
            memory = measure_memory("pml", n, cap)
            ours = {"ok": False, "peak_mib": None} if quick else measure_memory("nt_xent", n, cap)
            probe[n] = {"pml": memory, "nt_xent": ours}
            probe_rows.append(
                [
                    f"{n:,}",
                    "runs" if memory["ok"] else f"fails: needs > {cap:g} GiB",
                    _fmt_mib(memory["peak_mib"] if memory["ok"] else None),
                    f"{memory['seconds']:.2f}" if memory["ok"] else "-",
                    _fmt_mib(ours["peak_mib"]),
                    f"{ours['seconds']:.3f}" if ours["ok"] else "-",
                ]
            )
        largest = max([n for n in pml_probe if probe[n]["pml"]["ok"]], default=None)
        data["pml_probe"] = {"cap_gib": cap, "largest_n": largest, "runs": probe}
        add_table(
            result,
            f"pytorch-metric-learning NTXentLoss: memory probe (fresh process each, "
            f"address space capped at +{cap:g} GiB; one call, not interleaved)",
            ["N", "pml status", "pml peak MiB", "pml s", "nt_xent peak MiB", "nt_xent s"],
            probe_rows,
        )
        result["notes"].append(
            f"pytorch-metric-learning's NTXentLoss compares every positive pair with every "
            f"negative pair, tensors of (2N) x (2N)(2N-2) elements: memory grows like N^3 "
            f"(x8 per doubling of N). Its largest N that ran under the {cap:g} GiB cap: {largest}."
        )
    result["notes"] += [
        "Time ratios use best times of rounds interleaved in one process; the memory column is "
        "measured in separate fresh processes (see the module docstring).",
        "nt_xent and lightly agree with the float64 oracle to float32 rounding; the target "
        "'equal within 1e-4' compares nt_xent with lightly directly.",
    ]
    result["data"] = data
    return result


if __name__ == "__main__":  # the memory subprocess: --memory NAME N CAP_GIB
    if len(sys.argv) == 5 and sys.argv[1] == "--memory":
        print(json.dumps(memory_child(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))))
    else:
        sys.exit(
            "usage: python -m benchmarks.loss_speed --memory NAME N CAP_GIB "
            "(run every benchmark with python -m benchmarks)"
        )
