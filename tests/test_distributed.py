"""Data-parallel SimCLR: the global NT-Xent against one process, and 2-process gloo runs on CPU.

The tests marked ``distributed`` start real process groups with torchrun (2 processes, one
thread each) and pass results back through files.
"""

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from simclr_teach import distributed
from simclr_teach.distributed import (
    anchor_rows,
    global_nt_xent,
    rank_batch,
    rank_nt_xent,
    scaled_lr,
)
from simclr_teach.loss import nt_xent, positive_index
from simclr_teach.train import TrainConfig

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
# one thread per rank: $SIMCLR_TEACH_THREADS (e.g. 2, set to repeat a run) would win over
# OMP_NUM_THREADS in the CLI (utils.use_free_cores) and put 4 threads on 2 cores
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "SIMCLR_TEACH_THREADS": "1"}
TINY_FLAGS = (
    "--data embedded --epochs 1 --width 4 --proj-hidden 16 --proj-dim 8 --batch-size 64 "
    "--no-progress"
).split()


def torchrun_python(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``python -c code args`` in 2 processes under torchrun; the output is kept."""
    return subprocess.run(
        [*TORCHRUN, "--no-python", sys.executable, "-c", code, *args],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def views(world: int, n: int, dim: int, seed: int = 0):
    """Per-rank (z1, z2) leaf tensors that require gradients."""
    generator = torch.Generator().manual_seed(seed)
    return [
        tuple(torch.randn(n, dim, generator=generator).requires_grad_() for _ in range(2))
        for _ in range(world)
    ]


def test_outside_a_process_group_it_is_nt_xent():
    ((z1, z2),) = views(1, 6, 4)
    assert not distributed.is_distributed() and distributed.world_size() == 1
    assert torch.equal(global_nt_xent(z1, z2, 0.2), nt_xent(z1, z2, 0.2))
    assert distributed.gather(z1) is z1 and distributed.mean_over_ranks(1.5) == 1.5


def test_rank_losses_and_gradients_add_up_to_one_process():
    """A faithful one-process simulation of 3 ranks: every rank's loss sees every rank's views."""
    world, n = 3, 4
    blocks = views(world, n, 5)
    z1_global = torch.cat([z1 for z1, _ in blocks])  # (N_g, D) in rank order
    z2_global = torch.cat([z2 for _, z2 in blocks])
    losses = [rank_nt_xent(z1_global, z2_global, r, world, 0.3) for r in range(world)]
    reference = nt_xent(z1_global.detach(), z2_global.detach(), 0.3)
    assert torch.stack(losses).mean().item() == pytest.approx(reference.item(), abs=1e-6)
    torch.stack(losses).mean().backward()
    leaf1 = z1_global.detach().requires_grad_()
    leaf2 = z2_global.detach().requires_grad_()
    nt_xent(leaf1, leaf2, 0.3).backward()
    assert torch.allclose(torch.cat([z1.grad for z1, _ in blocks]), leaf1.grad, atol=1e-6)
    assert torch.allclose(torch.cat([z2.grad for _, z2 in blocks]), leaf2.grad, atol=1e-6)


def test_labels_are_offset_by_rank():
    # 2 ranks of N = 2: rank 1's views are rows 2, 3 (z1) and 6, 7 (z2) of the 8 global views
    rows = anchor_rows(2, rank=1, world_size=2)
    assert rows.tolist() == [2, 3, 6, 7]
    assert positive_index(4)[rows].tolist() == [6, 7, 2, 3]  # partners, not the local [2, 3, 0, 1]


def test_ranks_share_out_each_global_batch_of_the_shuffled_order():
    order = torch.randperm(30, generator=torch.Generator().manual_seed(0))  # M = 30 digits
    world, n = 3, 4  # global batch 12: 2 steps, the last 6 digits dropped
    for step in range(2):
        parts = [rank_batch(order, step, n, r, world) for r in range(world)]
        assert all(p.shape == (n,) for p in parts)
        assert torch.equal(torch.cat(parts), order[step * 12 : (step + 1) * 12])  # rank order
    assert torch.equal(rank_batch(order, 2, 5, 0, 1), order[10:15])  # one process: 04's slice
    generator = torch.Generator()
    assert distributed.views_generator(generator, 0, 3) is generator  # one process: 04's


def test_bad_rank_split_and_scaling_rule_are_clear_errors():
    ((z1, z2),) = views(1, 5, 3)
    with pytest.raises(ValueError, match="divisible by world_size"):
        rank_nt_xent(z1, z2, 0, 2)
    with pytest.raises(ValueError, match="lr_scaling must be one of"):
        scaled_lr(1e-3, "cubic", 2)
    with pytest.raises(ValueError, match="lr_scaling"):
        TrainConfig(lr_scaling="cubic")
    assert scaled_lr(1e-3, "linear", 4) == pytest.approx(4e-3)
    assert scaled_lr(1e-3, "sqrt", 4) == pytest.approx(2e-3)
    assert scaled_lr(1e-3, "none", 4) == 1e-3


# One torchrun launch (imports dominate the time) serves two tests: a gradient check of
# global_nt_xent through DDP, then a short training run; each rank saves what it saw.
WORKER = """
import sys, torch
from pathlib import Path
from simclr_teach import distributed
from simclr_teach.data import embedded_mnist
from simclr_teach.train import TrainConfig, build_model, train_simclr
out = Path(sys.argv[1])
with distributed.process_group("cpu", timeout_s=60):
    rank = distributed.rank()
    torch.manual_seed(0)
    layer = torch.nn.Linear(6, 5)  # a tiny model, the same start on both ranks
    net = distributed.data_parallel(layer)
    generator = torch.Generator().manual_seed(100 + rank)  # each rank its own inputs
    x1, x2 = (torch.randn(4, 6, generator=generator).requires_grad_() for _ in range(2))
    loss = distributed.global_nt_xent(net(x1), net(x2), 0.3)
    loss.backward()
    torch.save({"loss": loss.detach(), "x1": x1.detach(), "x2": x2.detach(), "g1": x1.grad,
                "g2": x2.grad, "weight_grad": layer.weight.grad}, out / f"gradients{rank}.pt")
    try:
        distributed.data_parallel(torch.nn.BatchNorm1d(3), sync_bn=True)
    except ValueError as error:
        (out / f"sync_bn{rank}.txt").write_text(str(error))
    (out / f"seed{rank}.txt").write_text(str(distributed.rank_generator(0, 0).initial_seed()))

    config = TrainConfig(data="embedded", width=4, proj_hidden=16, proj_dim=8, epochs=2,
                         batch_size=32, warmup_epochs=1, device="cpu")
    torch.manual_seed(rank)  # other weights on each rank: DDP must start them from rank 0's
    model = build_model(config)
    history = train_simclr(model, embedded_mnist().train_images[:256], config, progress=False,
                           checkpoint_path=out / "run" / "checkpoint.pt")
    torch.save({"model": model.state_dict(), "loss": history.loss}, out / f"trained{rank}.pt")
"""


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """The folder where the 2 ranks of WORKER left their files."""
    out = tmp_path_factory.mktemp("two_ranks")
    result = torchrun_python(WORKER, str(out))
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.distributed
def test_two_processes_equal_one_process_on_the_concatenated_batch(two_ranks):
    ranks = [torch.load(two_ranks / f"gradients{r}.pt") for r in range(2)]
    torch.manual_seed(0)
    layer = torch.nn.Linear(6, 5)
    x1 = torch.cat([r["x1"] for r in ranks]).requires_grad_()  # single-process order: all z1s
    x2 = torch.cat([r["x2"] for r in ranks]).requires_grad_()
    reference = nt_xent(layer(x1), layer(x2), 0.3)
    reference.backward()
    mean_loss = (ranks[0]["loss"] + ranks[1]["loss"]) / 2  # DDP averages over ranks
    assert mean_loss.item() == pytest.approx(reference.item(), abs=1e-5)
    for r, state in enumerate(ranks):  # input gradients: world_size x, DDP divides by it
        assert torch.allclose(state["g1"] / 2, x1.grad[4 * r : 4 * r + 4], atol=1e-5)
        assert torch.allclose(state["g2"] / 2, x2.grad[4 * r : 4 * r + 4], atol=1e-5)
        assert torch.allclose(state["weight_grad"], layer.weight.grad, atol=1e-5)


@pytest.mark.distributed
def test_ranks_draw_other_augmentations_and_sync_bn_on_cpu_is_a_clear_error(two_ranks):
    seeds = [(two_ranks / f"seed{r}.txt").read_text() for r in range(2)]
    assert seeds[0] != seeds[1]
    for r in range(2):
        assert "sync_bn needs GPUs" in (two_ranks / f"sync_bn{r}.txt").read_text()


@pytest.mark.distributed
def test_two_process_training_keeps_ranks_identical_and_writes_one_checkpoint(two_ranks):
    ranks = [torch.load(two_ranks / f"trained{r}.pt") for r in range(2)]
    checkpoint = torch.load(two_ranks / "run" / "checkpoint.pt", weights_only=True)
    assert [p.name for p in (two_ranks / "run").iterdir()] == ["checkpoint.pt"]
    assert ranks[0]["loss"] == ranks[1]["loss"] == checkpoint["history"]["loss"]  # global mean
    for name, weight in ranks[0]["model"].items():
        if "running" in name or "num_batches" in name:
            continue  # BatchNorm statistics are each rank's own (sync_bn makes them global)
        assert torch.equal(weight, ranks[1]["model"][name]), name
        assert torch.equal(weight, checkpoint["model"][name]), name


@pytest.mark.distributed
def test_torchrun_cli_trains_and_only_rank_0_writes(tmp_path):
    start = time.perf_counter()
    result = subprocess.run(
        [*TORCHRUN, "-m", "simclr_teach", "train", *TINY_FLAGS, "--out", str(tmp_path)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "metrics.json"]
    assert result.stdout.count("trained 1 epochs") == 1  # one report, from rank 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and len(metrics["history"]["loss"]) == 1
    assert metrics["torch_threads"] == 1  # one thread per rank, whatever the caller pinned
    assert time.perf_counter() - start < 90


FAILING_WORKER = """
from simclr_teach import distributed
from simclr_teach.data import embedded_mnist
from simclr_teach.train import TrainConfig, build_model, train_simclr
with distributed.process_group("cpu", timeout_s=30):
    config = TrainConfig(data="embedded", width=4, proj_hidden=16, proj_dim=8, epochs=100,
                         batch_size=32, device="cpu")

    def fail_on_rank_1(history):
        if distributed.rank() == 1:
            raise RuntimeError("rank 1 fails on purpose")

    train_simclr(build_model(config), embedded_mnist().train_images[:128], config,
                 progress=False, on_epoch_end=fail_on_rank_1)
"""


@pytest.mark.distributed
def test_a_failing_rank_ends_the_whole_run_quickly():
    start = time.perf_counter()
    result = torchrun_python(FAILING_WORKER, timeout=90)
    assert result.returncode != 0
    assert "rank 1 fails on purpose" in result.stderr
    assert time.perf_counter() - start < 60  # rank 0 did not wait for the 100 epochs
