"""Encoder f, projection head g and the SimCLR model that chains them. Taught in 04.

SimCLR (Chen et al., 2020, sec. 2.1): h = f(x) is the representation kept for downstream tasks,
z = g(h) is the projection the contrastive loss sees, and is thrown away after training.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from simclr_teach.distributed import global_nt_xent

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # pixel mean and std of the MNIST training set


FLOAT_SLACK = 1e-3  # interpolating augmentations may round a pixel a hair outside [0, 1]


def unit_pixels(images: Tensor) -> Tensor:
    """Pixels as float32 in [0, 1]: uint8 0..255 divided by 255, float [0, 1] kept as it is.

    The one check of pixel scale that ``preprocess``, ``embed`` and ``augment.BatchAugment``
    share: float or int digits in 0..255 would otherwise pass as 255 times too bright.

    Args:
        images: a tensor of any shape, uint8 with values 0..255 or float already in [0, 1]
            (FLOAT_SLACK either side is allowed).

    Returns:
        float32 tensor of the same shape, in [0, 1].
    """
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    if not images.is_floating_point():
        raise ValueError(
            f"digits of dtype {images.dtype} are ambiguous; pass uint8 in 0..255 "
            "(images.to(torch.uint8)) or floats in [0, 1] (images / 255.0)"
        )
    if images.numel():
        low, high = torch.aminmax(images)  # one pass over the pixels; NaN fails both checks
        if not bool((low >= -FLOAT_SLACK) & (high <= 1 + FLOAT_SLACK)):
            raise ValueError(
                f"float digits must lie in [0, 1], got values in [{low.item():g}, "
                f"{high.item():g}]; for pixels in 0..255 pass images / 255.0 or "
                "images.to(torch.uint8)"
            )
    return images.float()


def preprocess(images: Tensor) -> Tensor:
    """uint8 digits -> the float input every model takes.

    Args:
        images: (N, 28, 28) or (N, 1, 28, 28), either uint8 with values 0..255 (divided by 255
            here) or float already in [0, 1]. Anything else is an error that says how to convert
            (``unit_pixels``).

    Returns:
        float32 (N, 1, 28, 28) in [0, 1]. The models standardise it themselves (first layer),
        so augmentations can work in [0, 1].
    """
    shape = tuple(images.shape)
    if images.dim() == 3:
        images = images.unsqueeze(1)  # (N, 28, 28) -> (N, 1, 28, 28)
    if images.dim() != 4 or tuple(images.shape[1:]) != (1, 28, 28):
        raise ValueError(
            f"expected digits of shape (N, 28, 28) or (N, 1, 28, 28), got {shape}; "
            "crop or resize them to 28 x 28, one channel"
        )
    return unit_pixels(images)


class Standardize(nn.Module):
    """(x - mean) / std with the MNIST statistics, so inputs in [0, 1] reach the net centred."""

    def forward(self, x: Tensor) -> Tensor:
        return (x - MNIST_MEAN) / MNIST_STD


class MLPEncoder(nn.Module):
    """The blog post's encoder done right: flatten, then an MLP. h has ``out_dim`` features.

    Args:
        hidden: width of the hidden layers.
        out_dim: size of the representation h.
        in_pixels: 784 for 28x28 digits.
    """

    def __init__(self, hidden: int = 512, out_dim: int = 128, in_pixels: int = 784) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.net = nn.Sequential(
            Standardize(),
            nn.Flatten(),  # (N, 1, 28, 28) -> (N, 784): linear layers need vectors
            nn.Linear(in_pixels, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, out_dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, 1, 28, 28) in [0, 1] -> h: (N, out_dim)."""
        return self.net(x)


def _conv_block(c_in: int, c_out: int, pool: bool = False) -> nn.Sequential:
    """3x3 conv without bias (BatchNorm has one), a 2x2 max-pool when ``pool``, BN, ReLU."""
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)]
    if pool:  # before BatchNorm and ReLU: they then touch a quarter of the pixels
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class ConvEncoder(nn.Module):
    """A small CNN for 28x28 digits (the course's default encoder f).

    Four 3x3 conv blocks with BatchNorm, two max-pools (28 -> 14 -> 7), global average pooling.
    h has ``4 * width`` features.

    Args:
        width: channels of the first block; later blocks use 2x and 4x.
        pool_first: pool right after the first two convolutions, before their BatchNorm and
            ReLU (conv, pool, BN, ReLU), instead of after them (conv, BN, ReLU, pool). ReLU
            commutes with max-pooling, so only BatchNorm's statistics change, while BatchNorm
            and ReLU (forward and backward) run on a quarter of the pixels: on a 2-core CPU
            these memory-bound layers, not the convolutions, take most of a step, and a step
            is about a fifth faster (benchmarks/results/summary.md, training throughput).
    """

    def __init__(self, width: int = 32, pool_first: bool = True) -> None:
        super().__init__()
        self.out_dim = 4 * width
        if pool_first:
            blocks: list[nn.Module] = [
                _conv_block(1, width, pool=True),  # (N, w, 14, 14)
                _conv_block(width, 2 * width, pool=True),  # (N, 2w, 7, 7)
            ]
        else:  # the course's encoder before 2026-12-05: conv, BN, ReLU, then pool
            blocks = [
                _conv_block(1, width),  # (N, w, 28, 28)
                nn.MaxPool2d(2),  # (N, w, 14, 14)
                _conv_block(width, 2 * width),  # (N, 2w, 14, 14)
                nn.MaxPool2d(2),  # (N, 2w, 7, 7)
            ]
        self.net = nn.Sequential(
            Standardize(),
            *blocks,
            _conv_block(2 * width, 4 * width),  # (N, 4w, 7, 7)
            _conv_block(4 * width, 4 * width),  # (N, 4w, 7, 7)
            nn.AdaptiveAvgPool2d(1),  # (N, 4w, 1, 1)
            nn.Flatten(),  # (N, 4w)
        )
        self.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, 1, 28, 28) in [0, 1] -> h: (N, 4 * width)."""
        return self.net(x.contiguous(memory_format=torch.channels_last))


class ProjectionHead(nn.Module):
    """g: a two-layer MLP from h to the space where the loss is computed (paper, sec. 2.1).

    Args:
        in_dim: size of h.
        hidden: hidden width.
        out_dim: size of z.
    """

    def __init__(self, in_dim: int, hidden: int = 128, out_dim: int = 64) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, out_dim),
        )

    def forward(self, h: Tensor) -> Tensor:
        """h: (N, in_dim) -> z: (N, out_dim)."""
        return self.net(h)


class SimCLR(nn.Module):
    """Encoder f followed by projection head g; ``forward`` returns both h and z.

    It is also what the training loop trains (``train.train_one_epoch``): every model a method
    of ``TrainConfig.method`` trains has this interface (``methods`` holds the others):

    - ``model(x) -> (h, z)``: the representation and the projection, for evaluation;
    - ``model(x1, x2, temperature=tau) -> (loss, z1, z2)``: one training step's loss from two
      views, through ``forward``, so DistributedDataParallel sees the pass under torchrun;
    - ``model.after_step()``: anything to update after the optimizer's step (nothing here);
    - ``model.trains_in_parallel``: whether it may train under torchrun.

    Args:
        encoder: maps (N, 1, 28, 28) to h (N, D_h); must have an ``out_dim`` attribute.
        head: maps h to z (N, D_z).
    """

    trains_in_parallel = True  # global NT-Xent over all ranks (07_scaling_out)

    def __init__(self, encoder: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(
        self, x: Tensor, x2: Tensor | None = None, temperature: float = 0.5
    ) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, Tensor]:
        """x: (N, 1, 28, 28) in [0, 1] -> (h (N, D_h), z (N, D_z)).

        With the second view ``x2`` (N, 1, 28, 28): (scalar loss, z1, z2), both views in one
        pass and ``loss`` of their projections (N, D_z) each.
        """
        if x2 is not None:
            n = len(x)
            _, z = self(torch.cat([x, x2]))  # one pass: (2N, D_z)
            z1, z2 = z[:n], z[n:]
            return self.loss(z1, z2, temperature), z1, z2
        h = self.encoder(x)
        return h, self.head(h)

    def loss(self, z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
        """NT-Xent of the (N, D_z) projections of the two views, against every rank's views."""
        return global_nt_xent(z1, z2, temperature)

    def after_step(self) -> None:
        """Nothing: the optimizer's step is SimCLR's only update (MoCo moves a key network)."""


HEADS = ("mlp", "linear", "none")  # the projection heads of the paper's Figure 8


def build_head(kind: str, in_dim: int, hidden: int = 128, out_dim: int = 64) -> nn.Module:
    """The projection head g of Chen et al. (2020, sec. 4.2, Figure 8): h (N, in_dim) -> z.

    Args:
        kind: "mlp" (``ProjectionHead``, the paper's choice: z is (N, out_dim)), "linear" (one
            ``nn.Linear``: z is (N, out_dim)) or "none" (z = h: the loss acts on h itself).
        in_dim: size of h.
        hidden: hidden width of the MLP head.
        out_dim: size of z for "mlp" and "linear".
    """
    if kind == "mlp":
        return ProjectionHead(in_dim, hidden, out_dim)
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"head must be one of {HEADS}, got {kind!r}")


def build_simclr(
    encoder: str = "conv",
    width: int = 32,
    proj_hidden: int = 128,
    proj_dim: int = 64,
    head: str = "mlp",
    pool_first: bool = True,
) -> SimCLR:
    """A SimCLR model from a few names and sizes (what ``TrainConfig`` stores).

    Args:
        encoder: "conv" (ConvEncoder, h has 4*width features) or "mlp" (MLPEncoder with
            hidden width 16*width and h of 4*width features).
        width: size knob of the encoder.
        proj_hidden: hidden width of the projection head.
        proj_dim: size of z.
        head: "mlp", "linear" or "none" (``build_head``).
        pool_first: ``ConvEncoder``'s block order (the MLP encoder has no pooling).
    """
    if encoder == "conv":
        f: nn.Module = ConvEncoder(width, pool_first)
    elif encoder == "mlp":
        f = MLPEncoder(hidden=16 * width, out_dim=4 * width)
    else:
        raise ValueError(f"encoder must be 'conv' or 'mlp', got {encoder!r}")
    return SimCLR(f, build_head(head, f.out_dim, proj_hidden, proj_dim))


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
