"""Figures of the course: digits, views, training curves, similarities, t-SNE maps, accuracies.

Every function takes data and returns a matplotlib ``Figure`` (small, for notebooks and PNGs);
none calls ``plt.show()``. Pass ``ax=`` where offered to draw into a figure of your own.
``use_style()`` (called once by every notebook) sets the one style of the course.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from cycler import cycler
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import NullLocator
from torch import Tensor

# Okabe & Ito's colour-blind-safe palette: blue, vermillion, bluish green, orange, sky blue,
# reddish purple, yellow, black
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#E69F00", "#56B4E9", "#CC79A7", "#F0E442", "#000000"]
GREY = "#7f7f7f"  # reference lines: chance, raw pixels, a random encoder
# Ten digit classes need ten colours: the palette above plus two of Paul Tol's colour-blind-safe
# "muted" scheme (wine, olive). Maps also write each digit on its cluster, so colour is not the
# only cue.
DIGIT_COLOURS = [*PALETTE, "#882255", "#999933"]
# What the augmentation fields do, in words, for figure labels (AugmentParams field -> words).
TRANSFORM_WORDS = {
    "crop_scale": "random crop",
    "rotation": "rotation",
    "translate": "translation",
    "shear": "shear",
    "elastic": "elastic warp",
    "noise": "pixel noise",
    "blur": "blur",
    "erase_p": "random erasing",
}
SMALL = 8  # the smallest font in a figure (tick labels of dense panels, cell counts)

# The course's one style: figures sized at 100 dpi (inline in a notebook they are drawn at
# twice that, "retina", so they stay sharp on high-density screens), fonts readable at that
# size, the palette above as the colour cycle, no top/right frame, digits drawn pixel by pixel.
STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "figure.titlesize": 12,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "legend.title_fontsize": 9,
    "legend.framealpha": 0.85,
    "axes.prop_cycle": cycler(color=PALETTE),
    "axes.spines.top": False,
    "axes.spines.right": False,
    "grid.alpha": 0.3,
    "lines.markersize": 5,
    "image.interpolation": "nearest",
}


def use_style() -> None:
    """Apply ``STYLE`` to matplotlib for this process (every notebook calls it once).

    In a Jupyter kernel it also asks for "retina" inline figures: the PNG holds twice the
    pixels of the figure's displayed size, so 8-9 pt text stays sharp on high-density screens.
    """
    plt.rcParams.update(STYLE)
    try:
        from IPython import get_ipython
    except ImportError:  # plain Python: nothing inline to configure
        return
    if get_ipython() is not None and "inline" in plt.get_backend():
        from matplotlib_inline.backend_inline import set_matplotlib_formats

        set_matplotlib_formats("retina")


ArrayLike = Tensor | np.ndarray


def _as_images(images: ArrayLike) -> np.ndarray:
    """uint8 0..255 or float [0, 1], (B, 28, 28) or (B, 1, 28, 28) -> float (B, H, W) in [0, 1]."""
    x = torch.as_tensor(images).detach().cpu()
    if x.dim() == 4 and x.shape[1] == 1:
        x = x[:, 0]  # drop the channel axis
    if x.dim() != 3 or len(x) == 0:
        raise ValueError(f"expected images (B, H, W) or (B, 1, H, W), B >= 1, got {tuple(x.shape)}")
    return (x.float() / 255.0 if x.dtype == torch.uint8 else x.float()).numpy()


def _show(ax: Axes, image: np.ndarray, title: str | None = None) -> None:
    # ticks and frame off, but not ax.axis("off"), so a ylabel can still name the row
    ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title is not None:
        ax.set_title(title, fontsize=8)


def _grid(rows: int, cols: int, cell: float, title: str | None) -> tuple[Figure, np.ndarray]:
    # "compressed" layout packs fixed-aspect images without wide white margins
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=(cols * cell, rows * cell + 0.3 * bool(title)),
        squeeze=False,
        layout="compressed",
    )
    if title:
        fig.suptitle(title)
    return fig, axes


def image_grid(
    images: ArrayLike,
    nrow: int = 8,
    titles: Sequence[str] | None = None,
    title: str | None = None,
    scale: float = 1.0,
) -> Figure:
    """Digits in a grid, ``nrow`` per row (as in torchvision's make_grid), grayscale, no axes.

    Args:
        images: (B, 28, 28) or (B, 1, 28, 28), uint8 or float in [0, 1].
        titles: one short caption per image. title: figure title. scale: inches per digit.
    """
    x = _as_images(images)
    if titles is not None and len(titles) != len(x):
        raise ValueError(f"got {len(titles)} titles for {len(x)} images; pass one per image")
    cols = min(nrow, len(x))
    fig, axes = _grid(math.ceil(len(x) / cols), cols, scale, title)
    for i, ax in enumerate(axes.flat):
        if i < len(x):
            _show(ax, x[i], titles[i] if titles is not None else None)
        else:
            fig.delaxes(ax)  # the last row may be short
    return fig


def view_pairs(x: ArrayLike, x1: ArrayLike, x2: ArrayLike, n: int = 8) -> Figure:
    """Three rows: original digits, their first augmented view, their second view.

    Args:
        x, x1, x2: (B, 28, 28) or (B, 1, 28, 28) each; column i shows digit i. n: digits shown.
    """
    rows = [_as_images(images)[:n] for images in (x, x1, x2)]
    n = min(len(r) for r in rows)
    fig, axes = _grid(3, n, 1.0, None)
    for r, (name, images) in enumerate(zip(("original", "view 1", "view 2"), rows, strict=True)):
        for i in range(n):
            _show(axes[r, i], images[i])
        axes[r, 0].set_ylabel(name, fontsize=9)
    return fig


def _field(history: object, name: str) -> list:
    values = history[name] if isinstance(history, Mapping) else getattr(history, name)
    return list(values)


def training_curves(
    history: object,
    knn_reference: Mapping[str, float] | None = None,
    top1_chance: float | None = None,
    loss_reference: tuple[str, float] | None = None,
) -> Figure:
    """Four panels against epoch: loss, contrastive top-1, kNN monitor, learning rate.

    Args:
        history: object or dict with lists ``epoch``, ``loss``, ``top1``, ``lr`` and ``knn``
            (``knn`` may be empty or hold None for epochs without a kNN check).
        knn_reference: name -> accuracy drawn as a dashed line on the kNN panel (e.g. raw
            pixels on the same validation digits), so the monitor has something to beat.
        top1_chance: the top-1 of guessing, 1 / (2N - 1), drawn on the top-1 panel.
        loss_reference: (name, loss) drawn as a dashed line on the loss panel, e.g. the loss
            of one reference configuration (``loss.loss_floor``), so the curve has a scale.
    """
    epoch = _field(history, "epoch")
    if not epoch:
        raise ValueError("history has no epochs yet; train for at least one epoch first")
    knn = _field(history, "knn")
    if knn and len(knn) != len(epoch):
        raise ValueError(f"knn has {len(knn)} entries for {len(epoch)} epochs; use None for gaps")
    fig, axes = plt.subplots(2, 2, figsize=(8, 5.5), layout="constrained")
    (loss_ax, top1_ax), (knn_ax, lr_ax) = axes
    loss_ax.plot(epoch, _field(history, "loss"), marker=".", color=PALETTE[0])
    loss_ax.set(title="NT-Xent loss", xlabel="epoch")
    if loss_reference is not None:
        loss_ax.axhline(loss_reference[1], color=GREY, linestyle="--", label=loss_reference[0])
        loss_ax.legend(loc="upper right")
    top1_ax.plot(epoch, _field(history, "top1"), marker=".", color=PALETTE[0])
    if top1_chance is not None:
        top1_ax.axhline(top1_chance, color=GREY, linestyle="--", label="chance, 1 / (2N - 1)")
        top1_ax.legend(loc="lower right")
    top1_ax.set(title="contrastive top-1", xlabel="epoch", ylim=(0, 1.02))
    checked = [(e, a) for e, a in zip(epoch, knn, strict=False) if a is not None]  # knn may be []
    if checked:
        knn_ax.plot(*zip(*checked, strict=True), marker="o", color=PALETTE[2], label="SimCLR h")
    for colour, (name, value) in zip(PALETTE[1:], (knn_reference or {}).items(), strict=False):
        knn_ax.axhline(value, color=colour, linestyle="--", label=name)
    knn_ax.set(title="kNN monitor (validation)", xlabel="epoch")
    if checked or knn_reference:
        knn_ax.legend(loc="lower right")
    lr_ax.plot(epoch, _field(history, "lr"), marker=".", color=PALETTE[0])
    lr_ax.set(title="learning rate", xlabel="epoch")
    for ax in (loss_ax, top1_ax, knn_ax, lr_ax):
        ax.grid(alpha=0.3)
    return fig


def similarity_heatmap(z1: Tensor, z2: Tensor, title: str | None = None) -> Figure:
    """Cosine similarity of all 2N projections cat(z1, z2), what NT-Xent reads (Chen et al., 2020).

    Positives sit on the two off-diagonals at +-N; lines split the view-1 and view-2 blocks.
    The diagonal (each view with itself, always 1, and masked out of NT-Xent) is drawn grey, so
    that the positives are the brightest cells.

    Args:
        z1, z2: (N, D) projections of the two views.
    """
    z = torch.cat([torch.as_tensor(z1), torch.as_tensor(z2)]).detach().cpu().float()  # (2N, D)
    z = F.normalize(z, dim=1)  # unit rows: dot product = cosine
    similarity = (z @ z.T).numpy()  # (2N, 2N) in [-1, 1]
    np.fill_diagonal(similarity, np.nan)  # self-similarity: not a candidate, drawn grey
    n = len(z1)
    fig, ax = plt.subplots(figsize=(4.5, 3.8), layout="constrained")
    colours = plt.get_cmap("RdBu_r").with_extremes(bad="#bbbbbb")
    image = ax.imshow(similarity, cmap=colours, vmin=-1, vmax=1)
    for position in (ax.axhline, ax.axvline):
        position(n - 0.5, color="black", linewidth=1)
    blocks = [(n - 1) / 2, n + (n - 1) / 2]  # centre of each view's block
    ax.set(
        title=title or "cosine similarity of cat(z1, z2); grey: self, masked",
        xticks=blocks,
        yticks=blocks,
        xticklabels=["view 1", "view 2"],
        yticklabels=["view 1", "view 2"],
    )
    fig.colorbar(image, ax=ax, shrink=0.85)
    return fig


def tsne_scatter(
    points: ArrayLike, labels: ArrayLike, title: str | None = None, ax: Axes | None = None
) -> Figure:
    """2-D map coloured by digit (``DIGIT_COLOURS``), each digit written at its points' median.

    Args:
        points: (N, 2), e.g. from ``evaluate.tsne``. labels: (N,) integer digits.
        ax: draw here instead of a new figure; the figure holding ``ax`` is returned.
    """
    points, labels = np.asarray(points), np.asarray(labels)
    if points.ndim != 2 or points.shape[1] != 2 or len(labels) != len(points):
        raise ValueError(f"need points (N, 2) and labels (N,), got {points.shape}, {labels.shape}")
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4), layout="constrained")
    for digit in np.unique(labels):
        mine = points[labels == digit]
        colour = DIGIT_COLOURS[int(digit) % len(DIGIT_COLOURS)]
        ax.scatter(mine[:, 0], mine[:, 1], s=5, color=colour, alpha=0.7, linewidths=0)
        cx, cy = np.median(mine, axis=0)  # median: robust to a few stray points
        box = {"boxstyle": "round,pad=0.15", "facecolor": "white", "alpha": 0.7, "linewidth": 0}
        ax.text(cx, cy, str(digit), fontsize=11, weight="bold", ha="center", va="center", bbox=box)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10)
    return ax.figure


def tsne_grid(panels: Mapping[str, tuple[ArrayLike, ArrayLike]], ncols: int = 2) -> Figure:
    """One ``tsne_scatter`` per feature space, side by side (``ncols`` per row).

    Args:
        panels: title -> (points (N, 2), labels (N,)).
    """
    if not panels:
        raise ValueError("panels is empty; pass {title: (points, labels)}")
    cols = min(ncols, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(3.2 * cols, 3.3 * rows), squeeze=False, layout="constrained"
    )
    for ax, (name, (points, labels)) in zip(axes.flat, panels.items(), strict=False):
        tsne_scatter(points, labels, title=name, ax=ax)
    for ax in axes.flat[len(panels) :]:
        fig.delaxes(ax)
    return fig


def accuracy_vs(
    x: Sequence[float],
    series: Mapping[str, Sequence[float | None]],
    xlabel: str,
    ylabel: str = "accuracy",
    logx: bool = False,
    title: str | None = None,
    errors: Mapping[str, Sequence[float]] | None = None,
    logy: bool = False,
) -> Figure:
    """Line plot of several series over a shared x (few-label curves, sweeps). None = missing point.

    Args:
        x: (P,) values on the x axis. series: name -> (P,) values, one line each.
        errors: name -> (P,) half-widths of error bars (e.g. the std over seeds), optional.
        logy: log scale on y with plain-number ticks, e.g. for error rates that span 1% to 50%,
            where a linear axis would squash the small ones.
    """
    fig, ax = plt.subplots(figsize=(5, 3.2), layout="constrained")
    for name, values in series.items():
        if len(values) != len(x):
            raise ValueError(f"series {name!r} has {len(values)} values for {len(x)} x values")
        y = np.array(values, dtype=float)  # None -> NaN
        known = ~np.isnan(y)  # join the measured points across gaps
        error = None
        if errors is not None and name in errors:
            error = np.asarray(errors[name], dtype=float)[known]
        ax.errorbar(np.asarray(x)[known], y[known], yerr=error, marker="o", capsize=3, label=name)
    if logx:
        ax.set_xscale("log")
        if len(x) <= 8:  # few points: tick exactly at them, in plain numbers
            ax.set_xticks(list(x), [f"{v:g}" for v in x])
            ax.xaxis.set_minor_locator(NullLocator())
    if logy:
        ax.set_yscale("log")
        low, high = ax.get_ylim()
        ticks = [t for t in (0.5, 1, 2, 5, 10, 20, 50, 100) if low <= t <= high]
        ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
        ax.yaxis.set_minor_locator(NullLocator())
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    if series:
        ax.legend()
    return fig


def frontier(rows: Sequence[Mapping], budget_seconds: float = 300) -> Figure:
    """Accuracy against training time, one numbered point per recipe, the Pareto front joined (04).

    Args:
        rows: dicts with "seconds" and "best" (accuracy in [0, 1]), as in
            ``benchmarks/results/frontier.csv``; point i is labelled i, the row's index, so the
            plot reads beside the printed table.
        budget_seconds: where to draw the time budget.
    """
    points = [(float(r["seconds"]), 100 * float(r["best"]), i) for i, r in enumerate(rows)]
    front, best = [], -1.0  # recipes no faster one beats
    for seconds, accuracy, _ in sorted(points, key=lambda p: (p[0], -p[1])):
        if accuracy > best:
            front.append((seconds, accuracy))
            best = accuracy
    fig, ax = plt.subplots(figsize=(6.4, 4), layout="constrained")
    ax.scatter([p[0] for p in points], [p[1] for p in points], color=PALETTE[0], zorder=3)
    ax.plot(*zip(*front, strict=True), color=PALETTE[0], alpha=0.5, label="Pareto front")
    ax.axvline(budget_seconds, color=PALETTE[1], linestyle="--", label="time budget")
    ax.set(
        xlabel="training seconds (2-core CPU)",
        ylabel="leave-one-out kNN, best of h/z (%)",
        title="Time-accuracy frontier (point i = row i of the table)",
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    _label_points(ax, [(seconds, accuracy, str(i)) for seconds, accuracy, i in points])
    return fig


def _label_points(ax: Axes, points: Sequence[tuple[float, float, str]], gap: float = 13) -> None:
    """Write each point's label beside it, in the first of eight places (offsets in points)
    that keeps ``gap`` points away from every label already written and from every marker."""
    ax.figure.canvas.draw()  # fixes the limits, so data -> screen is final
    to_screen = ax.transData.transform
    scale = ax.figure.dpi / 72  # screen pixels per typographic point
    markers = [to_screen((x, y)) for x, y, _ in points]
    taken: list[np.ndarray] = []
    offsets = [(6, 3), (6, -11), (-14, 3), (-14, -11), (6, 13), (-14, 13), (6, -21), (-14, -21)]
    for (x, y, text), anchor in zip(points, markers, strict=True):
        for dx, dy in offsets:
            centre = anchor + scale * np.array([dx + 3, dy + 4])  # middle of a 1-2 digit label
            free = all(np.abs(centre - other).max() > scale * gap for other in taken) and all(
                np.abs(centre - m).max() > scale * 6 for m in markers
            )
            if free:
                break
        taken.append(centre)
        ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=9)


def confusion_matrix_plot(true: ArrayLike, pred: ArrayLike, title: str | None = None) -> Figure:
    """Counts of (true, predicted) digits; colour is the row fraction, so rows compare fairly.

    Args:
        true, pred: (N,) integer labels.
    """
    true, pred = np.asarray(true).astype(int), np.asarray(pred).astype(int)
    if true.shape != pred.shape:
        raise ValueError(f"true and pred must have one shape, got {true.shape} and {pred.shape}")
    classes = np.union1d(true, pred)
    counts = np.zeros((len(classes), len(classes)), dtype=int)  # (C, C): row true, column predicted
    np.add.at(counts, (np.searchsorted(classes, true), np.searchsorted(classes, pred)), 1)
    fractions = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(4.2, 4), layout="constrained")
    ax.imshow(fractions, cmap="Blues", vmin=0, vmax=1)
    for (i, j), count in np.ndenumerate(counts):
        if count:
            ax.text(
                j,
                i,
                str(count),
                ha="center",
                va="center",
                fontsize=SMALL,
                color="white" if fractions[i, j] > 0.5 else "black",
            )
    ax.set(
        xticks=range(len(classes)),
        yticks=range(len(classes)),
        xticklabels=classes,
        yticklabels=classes,
        xlabel="predicted",
        ylabel="true",
        title=title,
    )
    return fig


def neighbour_gallery(
    query_images: ArrayLike,
    neighbour_images_by_space: Mapping[str, ArrayLike],
    query_labels: ArrayLike | None = None,
    neighbour_labels_by_space: Mapping[str, ArrayLike] | None = None,
    query_names: Sequence[str] | None = None,
) -> Figure:
    """For each query, a block of rows, one per feature space: the query, then its neighbours.

    Each block has its own title (the query's name and label), so blocks read apart. With
    labels, each neighbour is captioned with its label, in the palette's green when it matches
    the query's and in vermillion when it does not.

    Args:
        query_images: (Q, 28, 28) digits.
        neighbour_images_by_space: space name -> (Q, k, 28, 28) neighbours, nearest first,
            e.g. ``train_images[nearest_neighbours(...)[1]]``.
        query_labels: (Q,) labels of the queries, optional.
        neighbour_labels_by_space: space name -> (Q, k) labels of the neighbours, optional.
        query_names: a title per query (default "query 1", "query 2", ...).
    """
    queries = _as_images(query_images)
    spaces = {name: torch.as_tensor(images) for name, images in neighbour_images_by_space.items()}
    if not spaces or any(im.dim() < 4 or len(im) != len(queries) for im in spaces.values()):
        raise ValueError(
            "neighbour_images_by_space must map names to (Q, k, 28, 28) with Q = len(query_images)"
        )
    names = list(query_names or [f"query {q + 1}" for q in range(len(queries))])
    if len(names) != len(queries):
        raise ValueError(f"query_names has {len(names)} names for {len(queries)} queries")
    k = max(images.shape[1] for images in spaces.values())
    cell = 0.7
    fig = plt.figure(
        figsize=((1 + k) * cell + 0.9, len(queries) * (len(spaces) * cell + 0.45)),
        layout="constrained",
    )
    for q, block in enumerate(np.atleast_1d(fig.subfigures(len(queries), 1, hspace=0.04))):
        label = "" if query_labels is None else f" (label {int(query_labels[q])})"
        block.suptitle(names[q] + label, fontsize=9, x=0.02, ha="left")
        axes = block.subplots(len(spaces), 1 + k, squeeze=False)
        for s, (name, images) in enumerate(spaces.items()):
            row = axes[s]
            _show(row[0], queries[q])
            row[0].set_ylabel(name, fontsize=SMALL, rotation=0, ha="right", va="center")
            neighbours = _as_images(images[q])  # (k, 28, 28)
            for j, ax in enumerate(row[1:]):
                if j >= len(neighbours):
                    ax.set_visible(False)  # this space returned fewer neighbours
                    continue
                _show(ax, neighbours[j])
                if neighbour_labels_by_space is not None and query_labels is not None:
                    mine = int(neighbour_labels_by_space[name][q][j])
                    match = mine == int(query_labels[q])
                    colour = PALETTE[2] if match else PALETTE[1]
                    ax.set_title(str(mine), fontsize=SMALL, color=colour, pad=1)
    return fig


def image_rows(
    rows: Mapping[str, ArrayLike],
    n: int = 8,
    scale: float = 0.8,
    title: str | None = None,
    outline: Mapping[str, tuple[int, int, int, int]] | None = None,
) -> Figure:
    """Rows of digits with a name on the left of each row: one transform or engine per row.

    Column i of every row should show the same digit, so rows compare at a glance.

    Args:
        rows: name -> (B, 28, 28) or (B, 1, 28, 28) images; the first ``n`` of each are shown.
        n: digits per row. scale: inches per digit. title: figure title.
        outline: row name -> (top, left, height, width) in pixels: a region outlined in every
            image of that row, to point at something small (e.g. the stamped bits of 06).
    """
    if not rows:
        raise ValueError("rows is empty; pass {name: images}")
    images = {name: _as_images(x)[:n] for name, x in rows.items()}
    cols = max(len(x) for x in images.values())
    fig, axes = _grid(len(images), cols, scale, title)
    for row, (name, x) in zip(axes, images.items(), strict=True):
        for i, ax in enumerate(row):
            if i < len(x):
                _show(ax, x[i])
                if outline is not None and name in outline:
                    top, left, height, width = outline[name]
                    ax.add_patch(
                        Rectangle(
                            (left - 0.5, top - 0.5),
                            width,
                            height,
                            fill=False,
                            edgecolor=PALETTE[3],
                            linewidth=1.5,
                        )
                    )
            else:
                ax.set_visible(False)  # this row is shorter
        row[0].set_ylabel(name, fontsize=8, rotation=0, ha="right", va="center")
    return fig


def view_similarity_histograms(
    results: Mapping[str, tuple[ArrayLike, ArrayLike]], bins: int = 30
) -> Figure:
    """Pixel cosine of two views of one digit against two different digits, one panel each.

    Taught in 01_augmentations: once the two histograms overlap, matching pixels no longer
    finds a digit's other view, and the network has to learn what stays the same.

    Args:
        results: panel title (e.g. "strength 1") -> (same (B,), different (B,)) cosines, as
            returned by ``augment.view_similarities``.
        bins: histogram bins over [0, 1].
    """
    if not results:
        raise ValueError("results is empty; pass {title: (same, different)}")
    fig, axes = plt.subplots(
        1,
        len(results),
        figsize=(min(2.6 * len(results), 10), 2.4),
        sharey=True,
        squeeze=False,
        layout="constrained",
    )
    edges = np.linspace(0, 1, bins + 1)  # cosine of non-negative pixels lies in [0, 1]
    for ax, (name, (same, different)) in zip(axes[0], results.items(), strict=True):
        ax.hist(np.asarray(different), edges, alpha=0.6, color=GREY, label="two digits")
        ax.hist(np.asarray(same), edges, alpha=0.6, color=PALETTE[0], label="two views of one")
        ax.set(title=name, xlabel="pixel cosine", xlim=(0, 1))
        ax.title.set_fontsize(9)
    axes[0, 0].set_ylabel("pairs")
    axes[0, 0].legend(fontsize=SMALL, loc="upper left")
    return fig


def candidate_softmax(
    similarity: ArrayLike,
    probabilities: ArrayLike,
    positive: int,
    weights: ArrayLike | None = None,
    title: str | None = None,
) -> Figure:
    """One anchor's softmax over its 2N - 1 candidates, and the gradient weight of each negative.

    Taught in 02_nt_xent_loss. Left: the probability of each candidate, most similar first,
    the positive in orange. Right (with ``weights``): each negative's weight dl/ds = p / tau
    against its cosine similarity; at low tau the weight piles onto the hardest negatives.

    Args:
        similarity: (2N - 1,) cosine of the anchor with each candidate.
        probabilities: (2N - 1,) softmax of similarity / tau, summing to 1.
        positive: position of the partner among the candidates.
        weights: (2N - 1,) dl/ds per candidate (the positive's entry is not drawn), or None.
    """
    similarity, probabilities = np.asarray(similarity), np.asarray(probabilities)
    if similarity.shape != probabilities.shape or not 0 <= positive < len(similarity):
        raise ValueError(
            f"need similarity and probabilities of one shape (2N - 1,) and "
            f"0 <= positive < 2N - 1, got {similarity.shape}, "
            f"{probabilities.shape}, {positive}"
        )
    panels = 1 if weights is None else 2
    fig, axes = plt.subplots(
        1, panels, figsize=(4.5 * panels, 2.8), squeeze=False, layout="constrained"
    )
    order = np.argsort(-similarity, kind="stable")  # most similar first
    colours = np.where(order == positive, PALETTE[1], PALETTE[0])
    bars = axes[0, 0]
    bars.bar(np.arange(len(order)), probabilities[order], width=1.0, color=colours)
    rank = int(np.flatnonzero(order == positive)[0])
    bars.annotate(
        f"positive\np = {probabilities[positive]:.2f}",
        (rank, probabilities[positive]),
        xytext=(0.55, 0.8),
        textcoords="axes fraction",
        fontsize=9,
        color=PALETTE[1],
        arrowprops={"arrowstyle": "->", "color": PALETTE[1]},
    )
    bars.set(
        xlabel="candidates, most similar first",
        ylabel="softmax probability",
        ylim=(0, max(probabilities.max() * 1.15, 1e-3)),
    )
    if weights is not None:
        negatives = np.arange(len(similarity)) != positive
        scatter = axes[0, 1]
        scatter.scatter(
            similarity[negatives], np.asarray(weights)[negatives], s=10, color=PALETTE[0]
        )
        scatter.set(xlabel="cosine similarity of the negative", ylabel="gradient weight p / tau")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def lab_summary(
    temperature_rows: Sequence[Mapping],
    bar_rows: Sequence[Mapping],
    highlight: str | None = None,
    title: str | None = None,
    noise: tuple[float, float] | None = None,
) -> Figure:
    """Lab results (06): leave-one-out kNN against temperature, and one bar per run.

    Args:
        temperature_rows: rows of ``lab.COLUMNS`` (dicts); one line per batch size over tau.
        bar_rows: rows drawn as horizontal bars, labelled by what they change.
        highlight: the "key" of a run to ring in both panels (the lab's current settings).
        title: figure title.
        noise: (mean, std) of one recipe over seeds, accuracies in [0, 1]: a grey band of
            mean +- std in both panels, so a difference inside it reads as noise.

    An empty list leaves its panel out.
    """
    if not temperature_rows and not bar_rows:
        raise ValueError("nothing to plot: both temperature_rows and bar_rows are empty")
    if temperature_rows and bar_rows:
        fig, (left, right) = plt.subplots(1, 2, figsize=(9.5, 3.4), width_ratios=[1, 1.15])
    else:
        fig, ax = plt.subplots(figsize=(4.8, 3.4))
        left, right = (ax, None) if temperature_rows else (None, ax)
    if left is not None:
        _temperature_panel(left, temperature_rows, highlight)
        if noise is not None:
            left.axhspan(
                100 * (noise[0] - noise[1]),
                100 * (noise[0] + noise[1]),
                color=GREY,
                alpha=0.2,
                label="seed noise (mean ± std)",
            )
            left.legend(title="batch size", loc="lower left")
    if right is not None:
        _bar_panel(right, bar_rows, highlight)
        if noise is not None:  # named in the axis label: a legend would cover the bars
            right.axvspan(
                100 * (noise[0] - noise[1]), 100 * (noise[0] + noise[1]), color=GREY, alpha=0.25
            )
            right.set_xlabel("leave-one-out kNN of h (%); grey: seed noise, mean ± std")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _temperature_panel(
    left: Axes, temperature_rows: Sequence[Mapping], highlight: str | None
) -> None:
    sizes = sorted({int(row["batch_size"]) for row in temperature_rows})
    for i, n in enumerate(sizes):
        points = sorted(
            (float(r["temperature"]), float(r["loo_knn"]))
            for r in temperature_rows
            if int(r["batch_size"]) == n
        )
        taus, accs = zip(*points, strict=True)
        left.plot(
            taus,
            [100 * a for a in accs],
            "o-",
            color=PALETTE[i % len(PALETTE)],
            ms=4,
            label=f"N = {n}",
        )
    for row in temperature_rows:
        if highlight is not None and row["key"] == highlight:
            left.plot(
                float(row["temperature"]),
                100 * float(row["loo_knn"]),
                "o",
                ms=11,
                mfc="none",
                mec=PALETTE[1],
                mew=2,
            )
    left.set_xscale("log")
    left.set_xlabel("temperature tau (log scale)")
    left.set_ylabel("leave-one-out kNN of h (%)")
    if sizes:
        left.legend(title="batch size")
    left.grid(alpha=0.3)


def _run_label(label: str) -> str:
    """A lab row's label in words: "no erase_p" -> "no random erasing"."""
    for field, words in TRANSFORM_WORDS.items():
        label = label.replace(field, words)
    return label


def _bar_panel(right: Axes, bar_rows: Sequence[Mapping], highlight: str | None) -> None:
    """One dot per run (a dot plot: unlike bars, dots do not suggest an axis that starts at 0)."""
    shared = {(float(r["temperature"]), int(r["batch_size"])) for r in bar_rows}
    names = [_run_label(str(r["label"])) for r in bar_rows]
    if len(shared) > 1:  # runs differ in tau or N: say so in each label
        names = [
            f"{name} (tau {float(r['temperature']):g}, N {int(r['batch_size'])})"
            for name, r in zip(names, bar_rows, strict=True)
        ]
    elif shared:  # one tau and N for all: once, in the title
        tau, n = shared.pop()
        right.set_title(f"every run at tau {tau:g}, N {n}", fontsize=9)
    accs = [100 * float(r["loo_knn"]) for r in bar_rows]
    colors = [
        PALETTE[1] if highlight is not None and r["key"] == highlight else PALETTE[0]
        for r in bar_rows
    ]
    ys = range(len(bar_rows))
    right.scatter(accs, ys, color=colors, zorder=3)
    right.set_yticks(ys, names, fontsize=9)
    right.invert_yaxis()  # first row on top
    for y, acc in zip(ys, accs, strict=True):
        right.text(acc, y - 0.3, f"{acc:.1f}", ha="center", va="bottom", fontsize=SMALL)
    low, high = min(accs, default=0.0), max(accs, default=100.0)
    right.set_xlim(low - 0.1 * (high - low) - 0.5, high + 0.1 * (high - low) + 0.5)
    right.set_ylim(len(bar_rows) - 0.5, -0.9)
    right.set_xlabel("leave-one-out kNN of h (%)")
    right.grid(alpha=0.3)  # both axes: a row's dot reads against its own line, not a bar


def collapse_curves(
    histories: Mapping[str, object],
    references: Mapping[str, Mapping[str, float]] | None = None,
    starts: Mapping[str, Mapping[str, float | None]] | None = None,
) -> Figure:
    """Four panels against epoch for several runs: kNN of h, effective rank of z, the normalised
    std of z and the uniformity of z, all on the kNN monitor's validation digits (08).

    Args:
        histories: run name -> History (or dict) with ``epoch``, ``knn``, ``rank_z``, ``std_z``
            and ``uniformity`` per epoch (a run trained with the kNN monitor on).
        references: line name -> {panel field: value}, drawn dashed in grey shades (e.g. a
            random encoder's numbers, chance for the kNN, 1/sqrt(D) for the std).
        starts: run name -> ``train.monitor_scores`` of the model the run started from
            (``train.initial_model``), drawn at epoch 0; runs not in it start at epoch 1.
    """
    panels = {
        "knn": "kNN accuracy of h (validation)",
        "rank_z": "effective rank of z",
        "std_z": "std of z on the sphere",
        "uniformity": "uniformity of z (0 = one point)",
    }
    fig, axes = plt.subplots(1, 4, figsize=(10.5, 3.0), layout="constrained")
    for ax, (name, title) in zip(axes, panels.items(), strict=True):
        for colour, (run, history) in zip(PALETTE, histories.items(), strict=False):
            epochs, values = list(_field(history, "epoch")), list(_field(history, name) or [])
            if not values or any(v is None for v in values):
                raise ValueError(
                    f"{run!r} has no {name} per epoch: train it with the kNN monitor (a run "
                    "cached before the monitor recorded it: delete its runs/cache folder)"
                )
            start = (starts or {}).get(run, {}).get(name)
            if start is not None:
                epochs, values = [0, *epochs], [start, *values]
            ax.plot(epochs, values, marker=".", color=colour, label=run)
        styles, drawn = ("--", ":", "-."), []
        for style, (line, values) in zip(styles, (references or {}).items(), strict=False):
            if name in values:
                drawn.append(ax.axhline(values[name], color=GREY, linestyle=style, label=line))
        if drawn and ax is not axes[0]:  # a line the first panel's legend does not name
            ax.legend(handles=drawn, loc="best", fontsize=SMALL)
        ax.set(title=title, xlabel="epoch")
    axes[0].legend(loc="best", fontsize=SMALL)
    return fig


def singular_spectra(spectra: Mapping[str, ArrayLike], title: str | None = None) -> Figure:
    """Normalised singular values against their index, log scale (Jing et al., 2022, Figure 1).

    Args:
        spectra: name -> 1-D descending values (``methods.singular_spectrum``); a cliff to ~0
            marks the dimensions a representation does not use (dimensional collapse).
    """
    fig, ax = plt.subplots(figsize=(5.5, 3.4), layout="constrained")
    for colour, (name, values) in zip(PALETTE, spectra.items(), strict=False):
        values = np.clip(np.asarray(values, dtype=float), 1e-8, None)  # log scale: no zeros
        ax.plot(np.arange(1, len(values) + 1), values, color=colour, label=name)
    ax.set(xlabel="index of the singular value", ylabel="share of the sum (log)", yscale="log")
    ax.set(title=title or "singular value spectrum")
    ax.legend(loc="lower left", fontsize=SMALL)
    return fig
