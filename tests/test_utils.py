"""The shared helpers: device names, seeds and the file lock."""

import os
import re
import subprocess
import sys
import threading
import time

import pytest
import torch

from simclr_teach import utils
from simclr_teach.utils import available_devices, check_seed, locked, pick_device, seed_everything


@pytest.mark.parametrize("device", ["bogus", "gpu", "CPU", "cuda:x", "meta", 3])
def test_unknown_device_names_the_devices_here(device):
    with pytest.raises(
        ValueError,
        match=r"not available on this machine; "
        r"use 'auto' or one of \['cpu'",
    ):
        pick_device(device)


@pytest.mark.parametrize("device", ["cuda", "cuda:7", "mps", "xpu"])
def test_missing_accelerator_is_a_clear_error(device):
    if device in available_devices():
        pytest.skip(f"this machine has {device}")
    with pytest.raises(ValueError, match=f"device '{device}' is not available"):
        pick_device(device)


def test_known_devices():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device(torch.device("cpu")) == torch.device("cpu")
    assert str(pick_device("auto")).split(":")[0] in available_devices()


def test_embed_on_a_missing_device_is_a_clear_error():
    from simclr_teach.evaluate import embed
    from simclr_teach.model import build_simclr

    if "cuda" in available_devices():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="device 'cuda' is not available"):
        embed(
            build_simclr("conv", 4, 8, 4), torch.zeros(2, 28, 28, dtype=torch.uint8), device="cuda"
        )


@pytest.mark.parametrize("seed", [-1, 2**32, 2**70, 1.5, True])
def test_seed_out_of_range_is_a_clear_error(seed):
    with pytest.raises(ValueError, match=r"seed must be an int in \[0, 2\*\*32 - 1\]"):
        seed_everything(seed)
    with pytest.raises(ValueError, match="seed must be an int"):
        check_seed(seed)


def test_seed_everything_leaves_the_environment_alone(monkeypatch):
    """PYTHONHASHSEED set by a running interpreter does nothing, except leak into subprocesses."""
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    first = seed_everything(3)
    assert "PYTHONHASHSEED" not in os.environ
    assert torch.equal(torch.rand(3, generator=first), torch.rand(3, generator=seed_everything(3)))


def test_lock_fails_at_once_while_held_and_frees_after(tmp_path):
    with locked(tmp_path, wait=False):
        with pytest.raises(BlockingIOError, match="busy: try later"):
            with locked(tmp_path, wait=False, busy="busy: try later"):
                pass
    with locked(tmp_path, wait=False):  # released at the end of the block
        pass


def test_waiting_lock_waits_for_the_holder(tmp_path):
    order = []

    def second():
        with locked(tmp_path, wait=True):
            order.append("second")

    with locked(tmp_path, wait=True):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.2)
        order.append("first")
    thread.join(5)
    assert order == ["first", "second"]


# ---- threads: chosen once from the free cores (use_free_cores) ----------------------------------


@pytest.fixture
def restore_threads(monkeypatch):
    """Each test starts with no choice made and leaves torch's thread count as it found it."""
    import simclr_teach.utils as utils

    before = torch.get_num_threads()
    monkeypatch.setattr(utils, "_threads_chosen", None)
    monkeypatch.delenv(utils.THREADS_ENV, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    yield utils
    torch.set_num_threads(before)


def test_one_busy_core_leaves_one_thread_fewer(restore_threads, monkeypatch):
    utils = restore_threads
    cores = len(os.sched_getaffinity(0))
    for busy, expected in [(0.0, cores), (0.4, cores), (1.0, max(1, cores - 1)), (cores + 3.0, 1)]:
        monkeypatch.setattr(utils, "cores_busy_elsewhere", lambda busy=busy: busy)
        assert utils.use_free_cores() == expected == torch.get_num_threads()


def test_threads_are_chosen_once_per_process(restore_threads, monkeypatch):
    utils = restore_threads
    calls = []
    monkeypatch.setattr(utils, "cores_busy_elsewhere", lambda: calls.append(1) or 0.0)
    seed_everything(0)
    seed_everything(1)
    assert len(calls) == 1  # the second seed keeps the count: a run stays repeatable


def test_pinned_threads_win(restore_threads, monkeypatch):
    utils = restore_threads
    monkeypatch.setattr(utils, "cores_busy_elsewhere", lambda: pytest.fail("must not measure"))
    monkeypatch.setenv(utils.THREADS_ENV, "1")
    assert utils.use_free_cores() == 1 == torch.get_num_threads()
    monkeypatch.delenv(utils.THREADS_ENV)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # torchrun's, or the user's: kept as torch has it
    assert utils.use_free_cores() == torch.get_num_threads()


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_bad_thread_pin_is_a_clear_error(restore_threads, monkeypatch, value):
    monkeypatch.setenv(restore_threads.THREADS_ENV, value)
    with pytest.raises(ValueError, match="SIMCLR_TEACH_THREADS=.* is not a thread count; set it"):
        restore_threads.use_free_cores()


def _idle_load() -> float:
    """Cores other processes keep busy now; skips the test when none is free to measure a
    spinner on (another test process or a notebook on the same machine)."""
    load = utils.cores_busy_elsewhere(0.5)
    if load > len(os.sched_getaffinity(0)) - 0.7:
        pytest.skip(f"no free core to measure on: {load} cores busy elsewhere")
    return load


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="reads /proc/stat (Linux)")
def test_a_spinning_process_is_seen_as_a_busy_core():
    from simclr_teach.utils import cores_busy_elsewhere

    idle = _idle_load()
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # let it start
        busy = cores_busy_elsewhere(0.5)
    finally:
        spinner.kill()
        spinner.wait()
    assert busy - idle > 0.6, (idle, busy)  # one core more, whatever else this machine runs


def test_sklearn_follows_torch_threads(restore_threads):
    import sklearn.manifold  # noqa: F401  loads scikit-learn's OpenMP runtime
    from threadpoolctl import threadpool_info

    from simclr_teach.utils import sklearn_threads

    restore_threads.use_free_cores(1)
    with sklearn_threads():
        pools = [pool for pool in threadpool_info() if pool["user_api"] == "openmp"]
        assert pools and all(pool["num_threads"] == 1 for pool in pools)


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="reads /proc/stat (Linux)")
@pytest.mark.parametrize("gives_way", [True, False], ids=["nice works", "autogroup"])
def test_a_low_priority_process_leaves_its_core_free_only_where_nice_works(gives_way, monkeypatch):
    monkeypatch.setattr(utils, "nice_gives_way", lambda: gives_way)
    idle = _idle_load()
    spinner = subprocess.Popen(["nice", "-n", "19", sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        busy = utils.cores_busy_elsewhere(0.5)
    finally:
        spinner.kill()
        spinner.wait()
    if gives_way:
        assert busy - idle < 0.4, (idle, busy)  # it gives way to us: its core counts as free
    else:
        assert busy - idle > 0.6, (idle, busy)  # under autogroup it takes its core


def test_the_course_seed_and_precision_come_from_the_environment(monkeypatch):
    from simclr_teach.train import TrainConfig

    monkeypatch.delenv(utils.SEED_ENV, raising=False)
    monkeypatch.delenv(utils.PRECISION_ENV, raising=False)
    assert (utils.default_seed(), utils.default_amp()) == (0, True)
    assert (TrainConfig().seed, TrainConfig().amp) == (0, True)
    monkeypatch.setenv(utils.SEED_ENV, "7")
    monkeypatch.setenv(utils.PRECISION_ENV, "float32")
    assert (TrainConfig().seed, TrainConfig().amp) == (7, False)
    assert TrainConfig(seed=3, amp=True).seed == 3  # an explicit value wins
    assert TrainConfig().key("embedded-5k") != TrainConfig(seed=0, amp=True).key("embedded-5k")


@pytest.mark.parametrize(
    "name, value, words",
    [
        (utils.SEED_ENV, "one", "not a seed"),
        (utils.SEED_ENV, "-1", "not a seed"),
        (utils.SEED_ENV, str(2**32), "2**32 - 1"),
        (utils.PRECISION_ENV, "bf16", "not a precision"),
    ],
)
def test_a_bad_course_variant_is_one_sentence(monkeypatch, name, value, words):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=re.escape(words)):
        utils.default_seed() if name == utils.SEED_ENV else utils.default_amp()


def test_other_load_leaves_out_the_child_processes_it_waits_for():
    import subprocess
    import sys
    import time

    from simclr_teach.utils import other_load

    spin = "import time\nt = time.time()\nwhile time.time() - t < 1.0: pass"
    with other_load() as idle:
        time.sleep(1.0)  # what the rest of the machine does meanwhile
    with other_load() as load:
        subprocess.run([sys.executable, "-c", spin], check=True)  # one core, ours
    if idle["other_cores"] is None:
        pytest.skip("no /proc/stat here")
    assert load["other_cores"] < idle["other_cores"] + 0.6  # the child's core is not "other"
