"""Data-parallel SimCLR on torch.distributed, with global negatives. Taught in 07_scaling_out.

SimCLR trains with large batches spread over many devices (Chen et al., 2020, sec. 2.2: batch
4,096 on 32 to 128 TPU cores). Each process (a "rank") embeds its own N digits; the loss of its
2N anchors must see the views of ALL ranks as candidates, 2N_global - 2 negatives each, or the
big batch buys nothing. ``global_nt_xent`` all-gathers the projections with a gather that carries
gradients, so the parameter gradient that DistributedDataParallel averages over the ranks equals
the gradient of single-process ``nt_xent`` on the concatenated batch.

Launch with torchrun, which sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT:

    python -m torch.distributed.run --standalone --nproc_per_node=2 -m simclr_teach train --out OUT

Outside a process group every function here falls back to the one-process behaviour.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from simclr_teach.loss import _check_pair, nt_xent, positive_index
from simclr_teach.utils import pick_device

LR_SCALING_RULES = ("none", "linear", "sqrt")


def is_distributed() -> bool:
    """True inside a process group (a torchrun launch), False in a plain Python process."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's index in the group, 0 .. world_size - 1 (0 outside a group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """How many processes train together (1 outside a group)."""
    return dist.get_world_size() if is_distributed() else 1


@contextmanager
def process_group(device: str | torch.device = "auto", timeout_s: float = 600.0) -> Iterator[bool]:
    """Join the process group torchrun describes in the environment; leave it on exit or error.

    Without torchrun's variables (RANK, WORLD_SIZE) it does nothing and yields False, so the same
    code runs in one process. On CUDA each process takes GPU LOCAL_RANK and the backend is NCCL;
    on the CPU it is gloo. The group is destroyed in ``finally``: a rank that raises closes its
    connections (with gloo the others then fail at their next collective instead of waiting
    forever), the timeout bounds any wait that remains, and torchrun stops every rank when one
    fails.

    Args:
        device: the training device ("auto", "cpu", "cuda"); picks the backend.
        timeout_s: how long a collective may wait for the other ranks before raising.

    Yields:
        True inside a process group, False in a single process.
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ or is_distributed():
        yield is_distributed()  # not launched by torchrun, or the caller already joined
        return
    if not dist.is_available():
        raise ValueError("this PyTorch build has no torch.distributed; run in one process instead")
    device = pick_device(device)
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))  # one GPU per process
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    finished = False
    try:
        yield True
        finished = True
    finally:
        if finished:
            # every rank done before any tears the group down: a rank that destroys it while
            # another still talks to it can abort the other at exit (gloo: "terminate called
            # without an active exception"), and torchrun then fails a run that succeeded
            dist.barrier()
        dist.destroy_process_group()


class _GatherWithGradient(torch.autograd.Function):
    """All-gather forward; backward: sum every rank's gradient for each slot, keep our slot."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)  # (W * B, ...), rank order

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()  # (W * B, ...): this rank's loss w.r.t. every slot
        dist.all_reduce(grad)  # sum over ranks: every rank's loss depends on every slot
        return grad.chunk(dist.get_world_size())[dist.get_rank()]  # the sum for our own x


def gather(x: Tensor) -> Tensor:
    """All ranks' ``x`` concatenated in rank order, with gradients flowing back to every rank.

    ``torch.distributed.all_gather`` fills tensors that autograd knows nothing about: the other
    ranks' losses would never push on this rank's ``x``. Here the backward pass sums, over all
    ranks, the gradient each rank's loss sends to slot r and hands it to rank r (an all-reduce
    of the (W * B, ...) gradient; a reduce-scatter would send 1/W of the bytes, gloo lacks it).

    Args:
        x: (B, ...), the same shape on every rank.

    Returns:
        (world_size * B, ...); ``x`` itself outside a process group.
    """
    if not is_distributed():
        return x
    return _GatherWithGradient.apply(x)


def anchor_rows(n: int, rank: int, world_size: int, device: torch.device | None = None) -> Tensor:
    """Where one rank's 2N views sit among the 2N_global views of the concatenated batch.

    The single-process order is [all ranks' z1; all ranks' z2], so rank r's first views are rows
    r*N .. r*N + N - 1 and its second views are N_global + r*N .. N_global + r*N + N - 1.

    Returns:
        int64 (2N,) row indices into the (2N_global, 2N_global) similarity matrix.
    """
    first = torch.arange(rank * n, (rank + 1) * n, device=device)  # (N,)
    return torch.cat([first, first + n * world_size])


def rank_nt_xent(
    z1_global: Tensor, z2_global: Tensor, rank: int, world_size: int, temperature: float = 0.5
) -> Tensor:
    """NT-Xent of one rank's 2N anchors against all 2N_global candidates. Taught in 07_scaling_out.

    These are rows ``anchor_rows(...)`` of single-process ``nt_xent(z1_global, z2_global)``, so
    the mean over ranks equals it exactly. The partner's column is ``positive_index(N_global)``
    at those rows, that is offset by the rank: using ``arange(2N).roll(N)`` on every rank (the
    bug some public implementations shipped) points rank r's anchors at rank 0's views.

    Args:
        z1_global: first views of the whole batch in rank order, shape (N_global, D).
        z2_global: second views, shape (N_global, D); row i is the partner of z1_global[i].
        rank: whose anchors, 0 .. world_size - 1.
        world_size: number of ranks; N_global must be a multiple of it.
        temperature: tau > 0.

    Returns:
        Scalar float32 loss, averaged over this rank's 2N anchors.
    """
    _check_pair(z1_global, z2_global, temperature)
    n_global = z1_global.shape[0]
    if n_global % world_size or not 0 <= rank < world_size:
        raise ValueError(
            f"need N_global ({n_global}) divisible by world_size ({world_size}) and "
            f"0 <= rank < world_size, got rank {rank}; every rank must embed N pairs"
        )
    n = n_global // world_size
    rows = anchor_rows(n, rank, world_size, z1_global.device)  # (2N,)
    # float32 even under autocast, as in loss.similarity_logits
    with torch.autocast(device_type=z1_global.device.type, enabled=False):
        candidates = F.normalize(torch.cat([z1_global, z2_global]).float(), dim=1)  # (2N_g, D)
        logits = candidates[rows] @ candidates.T / temperature  # (2N, 2N_g): rows of the big one
    logits[torch.arange(2 * n, device=logits.device), rows] = float("-inf")  # not its own candidate
    targets = positive_index(n_global, z1_global.device)[rows]  # partner columns, offset by rank
    return F.cross_entropy(logits, targets)


def global_nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.5) -> Tensor:
    """NT-Xent with the negatives of every rank (SimCLR's global batch). Taught in 07_scaling_out.

    Inside a process group: one all-gather (carrying gradients) of this rank's (2N, D) views,
    then ``rank_nt_xent`` for this rank's anchors. The loss is this rank's share: its mean over
    ranks equals ``nt_xent(cat of all ranks' z1, cat of all ranks' z2)``, and the gradient
    reaching z1 and z2 is world_size times that loss's gradient, so after DDP's averaging the
    parameter gradients equal those of one process on the whole batch. Outside a group it is
    ``nt_xent``.

    Args:
        z1: this rank's first views, shape (N, D); N must be the same on every rank.
        z2: this rank's second views, shape (N, D).
        temperature: tau > 0.

    Returns:
        Scalar float32 loss over this rank's 2N anchors.
    """
    if not is_distributed():
        return nt_xent(z1, z2, temperature)
    _check_pair(z1, z2, temperature)
    n, world = z1.shape[0], world_size()
    views = gather(torch.cat([z1, z2]))  # (W * 2N, D): rank 0's z1, z2, rank 1's z1, z2, ...
    views = views.view(world, 2, n, -1)  # (W, 2, N, D)
    z1_global, z2_global = views[:, 0].flatten(0, 1), views[:, 1].flatten(0, 1)  # (N_g, D) each
    return rank_nt_xent(z1_global, z2_global, rank(), world, temperature)


def data_parallel(model: nn.Module, sync_bn: bool = False) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel inside a process group; ``model`` outside.

    DDP starts every rank from rank 0's weights and averages the gradients in ``backward``, so
    the ranks stay identical. With ``sync_bn`` the BatchNorm layers become SyncBatchNorm (in
    place): statistics over the global batch, the paper's "global BN" (sec. 2.2). PyTorch's
    SyncBatchNorm runs on GPUs only.

    Args:
        model: the SimCLR module, already on its device.
        sync_bn: synchronise BatchNorm statistics across ranks.
    """
    if not is_distributed():
        return model
    if sync_bn:
        if next(model.parameters()).device.type == "cpu":
            raise ValueError(
                "sync_bn needs GPUs: PyTorch's SyncBatchNorm does not run on the CPU; "
                "drop --sync-bn (each process then normalises with its own batch)"
            )
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return nn.parallel.DistributedDataParallel(model)


def unwrapped(net: nn.Module) -> nn.Module:
    """The model inside ``data_parallel``'s DDP wrapper, or ``net`` itself outside torchrun."""
    return net.module if isinstance(net, nn.parallel.DistributedDataParallel) else net


def scaled_lr(lr: float, rule: str, world_size: int) -> float:
    """Peak learning rate for ``world_size`` processes, each with the batch ``lr`` was tuned for.

    The global batch is world_size times bigger. "linear": lr * world_size (Goyal et al., 2017;
    SimCLR's LearningRate = 0.3 * BatchSize / 256 with LARS). "sqrt": lr * sqrt(world_size)
    (SimCLR appendix B.1, LearningRate = 0.075 * sqrt(BatchSize); the usual rule for Adam).
    "none": lr unchanged.
    """
    if rule not in LR_SCALING_RULES:
        raise ValueError(f"lr_scaling must be one of {LR_SCALING_RULES}, got {rule!r}")
    factor = {"none": 1.0, "linear": world_size, "sqrt": math.sqrt(world_size)}[rule]
    return lr * factor


def rank_batch(order: Tensor, step: int, n: int, rank: int, world_size: int) -> Tensor:
    """This rank's N digits of global batch ``step``: a slice of the epoch's shuffled ``order``.

    Global batch ``step`` is ``order[step * K * N : (step + 1) * K * N]`` for K ranks; rank r
    takes the r-th block of N of it, so the K ranks together train on the same K * N digits as
    one process with batch K * N. In one process it is ``order[step * N : (step + 1) * N]``,
    the slice of 04's hand-written loop.

    Args:
        order: int64 (M,), the epoch's permutation of the M digits, the same on every rank.
        step: the step within the epoch, 0 .. M // (K * N) - 1.
        n: N, pairs per rank and step (``TrainConfig.batch_size``).
        rank: this process's index, 0 .. world_size - 1 (``rank()``).
        world_size: K, the number of ranks (``world_size()``).

    Returns:
        int64 (N,) indices into the digits.
    """
    first = (step * world_size + rank) * n
    return order[first : first + n]


def views_generator(generator: torch.Generator, seed: int, epoch: int) -> torch.Generator:
    """Where this rank draws its augmentations (and shortcut bits) in ``epoch``.

    In one process: the run's own ``generator``, which also shuffles, as in 04's loop (a run
    repeats exactly). Under torchrun every rank keeps that generator in step with the others (it
    shuffles the shared ``order``) and draws its views from ``rank_generator(seed, epoch)``,
    so the ranks see different views.
    """
    return generator if world_size() == 1 else rank_generator(seed, epoch)


def rank_generator(seed: int, epoch: int) -> torch.Generator:
    """This rank's augmentation randomness for one epoch: other ranks draw other views.

    Seeded from (seed, rank, epoch), so a run resumed at an epoch boundary repeats exactly.
    """
    state = np.random.SeedSequence([seed, rank(), epoch]).generate_state(1)[0]  # uint32
    return torch.Generator().manual_seed(int(state))


def mean_over_ranks(value: float) -> float:
    """The mean of a number over all ranks (e.g. each rank's loss); ``value`` outside a group."""
    if not is_distributed():
        return value
    on_gpu = dist.get_backend() == "nccl"  # NCCL reduces GPU tensors only
    device = torch.device("cuda", torch.cuda.current_device()) if on_gpu else None
    total = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(total)  # sum over ranks
    return total.item() / world_size()
