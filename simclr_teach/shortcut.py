"""A shortcut for the pretext task: random bits stamped identically into both views.

Chen, Luo and Li (2021, "Intriguing properties of contrastive losses", sec. 3.2) add a few
random bits, shared by the two views of an image, to the input. The bits alone tell which
views belong together, so the contrastive loss can be minimised without looking at the
picture, and the network does just that: features of the picture are suppressed. Here the bits
are 2x2-pixel squares in the top two rows of the digit, which MNIST leaves blank. Taught in
06_temperature_augmentation_lab.
"""

from __future__ import annotations

import torch
from torch import Tensor

CELL = 2  # a bit is a CELL x CELL square of pixels
MAX_BITS = 28 // CELL  # one row of cells across the top of a 28 px digit


def stamp_bits(x: Tensor, bits: Tensor) -> Tensor:
    """Write ``bits`` as white (1) or black (0) squares along the top of each image.

    Args:
        x: float (B, 1, S, S) images in [0, 1].
        bits: (B, K) of 0/1 with K <= S // CELL.

    Returns:
        A copy of x with rows [0, CELL) overwritten in the first K * CELL columns.
    """
    n, k = bits.shape
    if x.dim() != 4 or len(x) != n:
        raise ValueError(f"x must be (B, 1, S, S) with B = {n} rows of bits, got {tuple(x.shape)}")
    if k * CELL > x.shape[-1]:
        raise ValueError(
            f"{k} bits do not fit in {x.shape[-1]} px; use at most {x.shape[-1] // CELL}"
        )
    x = x.clone()
    squares = bits.to(x.dtype).repeat_interleave(CELL, dim=1)  # (B, K * CELL)
    x[:, 0, :CELL, : k * CELL] = squares[:, None, :].expand(n, CELL, k * CELL)
    return x


def read_bits(x: Tensor, n_bits: int = MAX_BITS) -> Tensor:
    """The code ``stamp_bits`` wrote, as it reads in (possibly transformed) images.

    Bit j reads 1 when the mean of its CELL x CELL square (rows [0, CELL), columns
    [j * CELL, (j + 1) * CELL)) is above 0.5, so a square half erased to black reads 0.
    Taught in 06: does a transform applied after stamping change the code?

    Args:
        x: float (B, 1, S, S) images in [0, 1].
        n_bits: how many bits to read, 1 to S // CELL.

    Returns:
        int64 (B, n_bits) of 0/1, what ``stamp_bits(x, bits)`` takes as ``bits``.
    """
    if x.dim() != 4:
        raise ValueError(f"x must be (B, 1, S, S), got {tuple(x.shape)}")
    if not 1 <= n_bits <= x.shape[-1] // CELL:
        raise ValueError(f"n_bits must be in [1, {x.shape[-1] // CELL}], got {n_bits}")
    squares = x[:, 0, :CELL, : n_bits * CELL].reshape(len(x), CELL, n_bits, CELL)
    return (squares.mean(dim=(1, 3)) > 0.5).long()


def shared_bits(
    x1: Tensor, x2: Tensor, n_bits: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Stamp the same ``n_bits`` random bits into both views of each digit: the shortcut.

    With 2N views and 2^n_bits codes, the bits identify a view's partner once 2^n_bits >> N:
    NT-Xent can then fall near its floor without the network seeing the digit.

    Args:
        x1, x2: float (N, 1, S, S) views of the same N digits.
        n_bits: 0 (no shortcut, views returned unchanged) to MAX_BITS.
        generator: source of the bits (CPU generator; a new draw per call).

    Returns:
        (x1, x2) with a fresh random code per digit, the same in both of its views.
    """
    if not 0 <= n_bits <= MAX_BITS:
        raise ValueError(f"n_bits must be in [0, {MAX_BITS}], got {n_bits}")
    if x1.shape != x2.shape:
        raise ValueError(
            f"x1 and x2 must have the same shape, got {tuple(x1.shape)} and {tuple(x2.shape)}"
        )
    if n_bits == 0:
        return x1, x2
    bits = torch.randint(0, 2, (len(x1), n_bits), generator=generator).to(x1.device)  # (N, K)
    return stamp_bits(x1, bits), stamp_bits(x2, bits)
