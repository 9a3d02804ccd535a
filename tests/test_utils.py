"""The shared helpers: device names, seeds and the file lock."""

import threading
import time

import pytest
import torch

from simclr_teach.utils import available_devices, check_seed, locked, pick_device, seed_everything


@pytest.mark.parametrize("device", ["bogus", "gpu", "CPU", "cuda:x", "meta", 3])
def test_unknown_device_names_the_devices_here(device):
    with pytest.raises(ValueError, match=r"not available on this machine; "
                                         r"use 'auto' or one of \['cpu'"):
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
        embed(build_simclr("conv", 4, 8, 4), torch.zeros(2, 28, 28, dtype=torch.uint8),
              device="cuda")


@pytest.mark.parametrize("seed", [-1, 2**32, 2**70, 1.5, True])
def test_seed_out_of_range_is_a_clear_error(seed):
    with pytest.raises(ValueError, match=r"seed must be an int in \[0, 2\*\*32 - 1\]"):
        seed_everything(seed)
    with pytest.raises(ValueError, match="seed must be an int"):
        check_seed(seed)


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
