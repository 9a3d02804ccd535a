"""The peer: lightly's own SimCLR example against the course's default run, side by side.

What a user would pick instead of this course's recipe is a library's. lightly's example
(examples/pytorch/simclr.py in lightly 1.6): a torchvision resnet18 without its classifier as
backbone, `SimCLRProjectionHead(512, 512, 128)`, `SimCLRTransform(input_size=32,
gaussian_blur=0.0)` applied image by image in a DataLoader, `NTXentLoss()` (temperature 0.5),
`torch.optim.SGD(lr=0.06)`, batch 256, shuffled, last partial batch dropped. The only change:
the 4,000 embedded grayscale training digits are fed as RGB PIL images (its transforms expect
colour), and the DataLoader has no worker processes (2 cores: workers would take the cores the
network computes on). A third row runs the same lightly recipe with the course's `ConvEncoder`
(width 32) as backbone, so recipe and architecture can be told apart.

All three run in this process, one after the other, on the same digits and threads. Each is
scored the same way while it trains: leave-one-out weighted kNN (k = 5) of its representation h
over the 4,000 training digits (never the test split), taken outside the training clock. The
peer trains for a budget of training seconds (as many epochs as fit); the course's run is
`TrainConfig()` as is. At the end each is scored once on the 1,000 test digits, with k and the
kNN temperature chosen by leave-one-out, and by a linear probe with C chosen on the validation
split (`protocol.tuned_scores`, as notebook 05).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.common import RESULTS, add_table, add_target, new_result, quick_data
from benchmarks.time_to_accuracy import train_curve
from simclr_teach import plots
from simclr_teach.data import MNISTData, load_mnist
from simclr_teach.evaluate import embed, knn_accuracy, pixel_features
from simclr_teach.model import ConvEncoder
from simclr_teach.protocol import tuned_scores
from simclr_teach.train import TrainConfig, validation_split
from simclr_teach.utils import seed_everything

NAME = "peer"
K = 5  # the curve's readout; the test row chooses k by leave-one-out
IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}  # SimCLRTransform's


def loo_knn(h: Tensor, labels: Tensor) -> float:
    """Leave-one-out weighted kNN accuracy (k = 5) of h over the training digits."""
    return knn_accuracy(h, labels, h, labels, k=K, leave_one_out=True)


def test_scores(h_train: Tensor, y_train: Tensor, h_test: Tensor, y_test: Tensor) -> dict[str, Any]:
    """Test kNN (k and temperature by leave-one-out) and linear probe (C on the validation
    split) of h: ``protocol.tuned_scores``, the readers of notebook 05."""
    scores, chosen = tuned_scores(h_train, y_train, validation_split(y_train), h_test, y_test)
    return {
        "k": chosen["k"],
        "temperature": chosen[f"temperature@{chosen['k']}"],
        "test_accuracy": scores["knn"],
        "probe_accuracy": scores["linear"],
        "C": chosen["C"],
    }


def as_peer_input(images: Tensor) -> Tensor:
    """uint8 digits (N, 28, 28) -> what lightly's recipe sees at evaluation: (N, 3, 32, 32),
    resized to input_size and normalised with SimCLRTransform's ImageNet statistics."""
    x = images.float().div(255).unsqueeze(1)  # (N, 1, 28, 28)
    x = F.interpolate(x, size=32, mode="bilinear", align_corners=False).expand(-1, 3, -1, -1)
    mean, std = (torch.tensor(IMAGENET[key]).view(1, 3, 1, 1) for key in ("mean", "std"))
    return (x - mean) / std


class GrayConvEncoder(nn.Module):
    """The course's ConvEncoder behind lightly's RGB views: channels averaged to one."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.encoder = ConvEncoder(width)
        self.out_dim = self.encoder.out_dim

    def forward(self, x: Tensor) -> Tensor:  # (N, 3, 32, 32) -> (N, 4 width)
        return self.encoder(x.mean(1, keepdim=True))


def peer_model(backbone: str) -> tuple[nn.Module, nn.Module]:
    """(backbone, projection head) of lightly's example: resnet18, or the course's ConvEncoder."""
    import torchvision
    from lightly.models.modules import SimCLRProjectionHead

    if backbone == "resnet18":
        resnet = torchvision.models.resnet18()
        f = nn.Sequential(*list(resnet.children())[:-1], nn.Flatten(1))  # (N, 512)
        return f, SimCLRProjectionHead(512, 512, 128)
    f = GrayConvEncoder(32)
    return f, SimCLRProjectionHead(f.out_dim, f.out_dim, 128)


@torch.no_grad()
def peer_features(f: nn.Module, images: Tensor, batch_size: int = 500) -> Tensor:
    """h of the peer backbone for uint8 digits, in eval mode. (N, 28, 28) -> (N, D)."""
    f.eval()
    h = torch.cat(
        [f(as_peer_input(images[i : i + batch_size])) for i in range(0, len(images), batch_size)]
    )
    f.train()
    return h


def train_peer(
    data: MNISTData, backbone: str, budget_seconds: float, batch_size: int = 256
) -> dict[str, Any]:
    """lightly's recipe until ``budget_seconds`` of training; a kNN point after every epoch."""
    from lightly.loss import NTXentLoss
    from lightly.transforms import SimCLRTransform
    from PIL import Image

    seed_everything(0)
    f, g = peer_model(backbone)
    transform = SimCLRTransform(input_size=32, gaussian_blur=0.0)
    digits = [Image.fromarray(d.numpy()).convert("RGB") for d in data.train_images]

    class Views(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(digits)

        def __getitem__(self, i: int):
            return transform(digits[i])  # [view 1, view 2], each (3, 32, 32)

    loader = torch.utils.data.DataLoader(
        Views(), batch_size=batch_size, shuffle=True, drop_last=True, num_workers=0
    )
    criterion = NTXentLoss()
    optimizer = torch.optim.SGD([*f.parameters(), *g.parameters()], lr=0.06)
    y = data.train_labels
    seconds, accuracy, losses = [0.0], [loo_knn(peer_features(f, data.train_images), y)], []
    clock = 0.0
    while clock < budget_seconds:
        start, total = time.perf_counter(), 0.0
        for x0, x1 in loader:
            loss = criterion(g(f(x0)), g(f(x1)))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            total += loss.item()
        clock += time.perf_counter() - start
        losses.append(total / len(loader))
        seconds.append(clock)
        accuracy.append(loo_knn(peer_features(f, data.train_images), y))  # outside the clock
    final = test_scores(
        peer_features(f, data.train_images), y, peer_features(f, data.test_images), data.test_labels
    )
    return {"seconds": seconds, "loo_knn": accuracy, "loss": losses, "epochs": len(losses), **final}


def train_course(data: MNISTData, epochs: int | None = None) -> dict[str, Any]:
    """The course's default run (TrainConfig()), scored about 15 times while it trains."""
    config = TrainConfig(data="embedded", **({"epochs": epochs} if epochs else {}))
    curve, model = train_curve(config, data, score=loo_knn)
    final = test_scores(
        embed(model, data.train_images),
        data.train_labels,
        embed(model, data.test_images),
        data.test_labels,
    )
    return {
        "seconds": curve["seconds"],
        "loo_knn": curve["knn_accuracy"],
        "loss": curve["loss"],
        "epochs": config.epochs,
        **final,
    }


def accuracy_at(curve: dict[str, Any], t: float) -> float:
    """The curve's accuracy at time t: its last point at or before t."""
    return [a for s, a in zip(curve["seconds"], curve["loo_knn"], strict=True) if s <= t][-1]


def time_to(curve: dict[str, Any], target: float) -> float | None:
    """Training seconds until training first brings the curve to ``target`` (the random-init
    point at 0 s does not count), or None if it never does."""
    return next(
        (s for s, a in zip(curve["seconds"][1:], curve["loo_knn"][1:], strict=True) if a >= target),
        None,
    )


def run(quick: bool = False, out_dir: str | Path = RESULTS) -> dict[str, Any]:
    import importlib.util

    if importlib.util.find_spec("lightly") is None:
        raise RuntimeError(
            "the peer benchmark needs lightly: pip install -r "
            "benchmarks/requirements.txt (make bench does it)"
        )
    result = new_result(NAME, "The peer: lightly's SimCLR example against the course's run", quick)
    data = load_mnist("embedded", verbose=False)
    budget = 300.0
    if quick:
        data = quick_data(data, 600, 200)
        budget = 2.0
    curves = {
        COURSE: train_course(data, epochs=2 if quick else None),
        PEER: train_peer(data, "resnet18", budget),
        "lightly recipe, course ConvEncoder": train_peer(data, "conv", budget),
    }
    pixels = loo_knn(pixel_features(data.train_images), data.train_labels)
    result["data"] = {"curves": curves, "raw_pixels": pixels, "budget_seconds": budget}
    summarise(result, out_dir)
    return result


COURSE, PEER = "course: TrainConfig()", "lightly example (resnet18)"


def summarise(result: dict[str, Any], out_dir: str | Path = RESULTS) -> None:
    """Targets, table, notes and peer.png from ``result["data"]`` (the measured curves)."""
    curves, pixels = result["data"]["curves"], result["data"]["raw_pixels"]
    budget = result["data"]["budget_seconds"]
    ours, peer = curves[COURSE], curves[PEER]
    equal = min(ours["seconds"][-1], peer["seconds"][-1])
    ratio_at_equal = accuracy_at(ours, equal) / accuracy_at(peer, equal)
    peer_best = max(peer["loo_knn"][1:])  # the best its training reached
    t_peer, t_ours = time_to(peer, peer_best), time_to(ours, peer_best)
    time_ratio = None if t_ours is None or not t_peer else t_ours / t_peer
    result["targets"] = []
    add_target(
        result,
        f"course / lightly kNN accuracy at equal time ({equal:.0f} s)",
        ratio_at_equal,
        "> 1",
        ratio_at_equal > 1,
    )
    add_target(
        result,
        "course / lightly time to the peer's best trained accuracy",
        time_ratio,
        "< 1",
        None if time_ratio is None else time_ratio < 1,
    )
    rows = [
        [
            name,
            c["epochs"],
            f"{c['seconds'][-1]:.0f}",
            f"{100 * c['loo_knn'][0]:.2f}",
            f"{100 * max(c['loo_knn'][1:]):.2f}",
            f"{100 * accuracy_at(c, equal):.2f}",
            "-" if time_to(c, peer_best) is None else f"{time_to(c, peer_best):.0f}",
            f"{100 * c['test_accuracy']:.1f} (k {c['k']}, t {c['temperature']})",
            f"{100 * c['probe_accuracy']:.1f} (C {c['C']})",
        ]
        for name, c in curves.items()
    ]
    result["tables"] = []
    add_table(
        result,
        "Leave-one-out kNN (k = 5) of h over the 4,000 training digits while "
        "training; the 1,000 test digits once at the end: kNN (k, temperature "
        "chosen by leave-one-out) and linear probe (C chosen on validation)",
        [
            "recipe",
            "epochs",
            "training s",
            "LOO kNN % at init",
            "best LOO kNN % trained",
            f"LOO kNN % at {equal:.0f} s",
            f"s to {100 * peer_best:.2f}%",
            "test kNN %",
            "test linear probe %",
        ],
        rows,
    )
    result["notes"] = [
        f"Raw pixels: {100 * pixels:.2f}% leave-one-out kNN (k = 5).",
        "One seed each; the course's run varies by about 0.3 points between seeds "
        "(frontier.csv). Training seconds exclude the kNN evaluations, which run after every "
        "epoch of the peer and every 6th epoch of the course's run: a time to an accuracy is "
        "the first check that reached it.",
        f"lightly's example trains {budget:.0f} s (as many whole epochs as fit); the course's "
        "run trains its default epochs. Figure: peer.png.",
    ]
    if peer["loo_knn"][0] > peer_best:
        result["notes"].append(
            f"lightly's resnet18 scores {100 * peer['loo_knn'][0]:.2f}% at random init, above "
            f"every point of its training ({100 * peer_best:.2f}% at best): in {budget:.0f} s "
            "its recipe does not improve on random features of this architecture; the time "
            "target uses its best trained point."
        )

    low = 100 * min(pixels, *(a for c in curves.values() for a in c["loo_knn"][1:])) - 3
    fig, ax = plt.subplots(figsize=(6.4, 3.8), layout="constrained")
    for color, (name, c) in zip(plots.PALETTE, curves.items(), strict=False):
        ax.plot(
            c["seconds"],
            [100 * a for a in c["loo_knn"]],
            marker="o",
            markersize=3,
            color=color,
            label=name,
        )
    ax.axhline(100 * pixels, color=plots.GREY, linestyle="--", label="raw pixels")
    ax.set(
        xlabel="training seconds (2-core CPU, evaluation excluded)",
        ylabel="leave-one-out kNN of h (%)",
        ylim=(low, 100),
        title="The course's run against lightly's SimCLR example",
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_dir / f"{NAME}.png", dpi=100)
    plt.close(fig)
