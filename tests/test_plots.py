"""Tests of simclr_teach.plots: each function returns a compact Figure with the expected axes."""

from __future__ import annotations

from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")  # tests only: no window; the package never picks a backend

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from simclr_teach import plots  # noqa: E402

pytestmark = pytest.mark.usefixtures("close_figures")


@pytest.fixture(autouse=True)
def seeded() -> None:
    """digits() and torch.randn draw from torch's global generator: the same inputs in every test,
    whatever ran before it.
    """
    torch.manual_seed(0)


def digits(*shape: int) -> torch.Tensor:
    return torch.randint(0, 256, (*shape, 28, 28), dtype=torch.uint8)


def check(fig: Figure, n_axes: int) -> None:
    assert isinstance(fig, Figure)
    assert len(fig.axes) == n_axes
    width, height = fig.get_size_inches()
    assert width <= 10.5 and height <= 10.5  # small enough for a notebook PNG
    fig.canvas.draw()  # renders without error


def test_image_grid_uint8_and_float_with_titles():
    check(plots.image_grid(digits(10), nrow=4, title="ten digits"), 10)  # 3 rows, last one short
    floats = digits(3).unsqueeze(1).float() / 255  # (3, 1, 28, 28) in [0, 1]
    fig = plots.image_grid(floats, titles=["a", "b", "c"], scale=0.8)
    check(fig, 3)
    assert [ax.get_title() for ax in fig.axes] == ["a", "b", "c"]
    assert fig.axes[0].images[0].get_array().max() <= 1.0


def test_image_grid_rejects_wrong_titles_and_shapes():
    with pytest.raises(ValueError, match="one per image"):
        plots.image_grid(digits(3), titles=["a"])
    with pytest.raises(ValueError, match="expected images"):
        plots.image_grid(torch.zeros(28, 28))


def test_view_pairs_three_rows():
    fig = plots.view_pairs(digits(10), digits(10), digits(10).float() / 255, n=5)
    check(fig, 15)
    assert [fig.axes[5 * r].get_ylabel() for r in range(3)] == ["original", "view 1", "view 2"]


def test_training_curves_from_object_and_dict():
    history = SimpleNamespace(
        epoch=[1, 2, 3, 4],
        loss=[5.0, 4.0, 3.5, 3.2],
        top1=[0.1, 0.4, 0.6, 0.7],
        lr=[0.1, 0.3, 0.2, 0.1],
        knn=[None, 0.8, None, 0.9],
        seconds=[1.0] * 4,
    )
    fig = plots.training_curves(
        history, knn_reference={"raw pixels": 0.85}, loss_reference=("floor", 3.0)
    )
    check(fig, 4)
    knn_line = fig.axes[2].lines[0]
    assert list(knn_line.get_xdata()) == [2, 4]  # None epochs skipped
    assert list(fig.axes[2].lines[1].get_ydata()) == [0.85, 0.85]  # the reference line
    assert list(fig.axes[0].lines[1].get_ydata()) == [3.0, 3.0]  # the loss's reference line
    assert fig.axes[0].get_legend().get_texts()[0].get_text() == "floor"
    no_knn = {**vars(history), "knn": []}
    fig = plots.training_curves(no_knn)
    check(fig, 4)
    assert len(fig.axes[2].lines) == 0


def test_collapse_curves_start_at_epoch_0_with_reference_lines():
    run = {"epoch": [1, 2], "knn": [0.8, 0.9], "rank_z": [5.0, 9.0], "std_z": [0.05, 0.1]}
    run["uniformity"] = [-1.0, -2.0]
    fig = plots.collapse_curves(
        {"a": run, "b": run},
        references={"1/sqrt(D)": {"std_z": 0.125}, "chance": {"knn": 0.1}},
        starts={"a": {"knn": 0.7, "rank_z": 1.5, "std_z": 0.002, "uniformity": -0.001}},
    )
    check(fig, 4)
    assert list(fig.axes[2].lines[0].get_xdata()) == [0, 1, 2]  # "a" from its start
    assert list(fig.axes[2].lines[0].get_ydata()) == [0.002, 0.05, 0.1]
    assert list(fig.axes[2].lines[1].get_xdata()) == [1, 2]  # "b" has no start
    assert fig.axes[2].get_legend().get_texts()[0].get_text() == "1/sqrt(D)"
    with pytest.raises(ValueError, match="no std_z per epoch.*delete its runs/cache folder"):
        plots.collapse_curves({"old": {**run, "std_z": [None, None]}})


def test_training_curves_errors():
    with pytest.raises(ValueError, match="no epochs"):
        plots.training_curves({"epoch": [], "loss": [], "top1": [], "lr": [], "knn": []})
    with pytest.raises(ValueError, match="None for gaps"):
        plots.training_curves(
            {"epoch": [1, 2], "loss": [1, 1], "top1": [0, 0], "lr": [1, 1], "knn": [0.5]}
        )


def test_similarity_heatmap_is_cosine_of_both_views():
    z1, z2 = torch.randn(6, 4), torch.randn(6, 4)
    fig = plots.similarity_heatmap(z1, z2, title="sim")
    check(fig, 2)  # heatmap and colour bar
    matrix = fig.axes[0].images[0].get_array()
    assert matrix.shape == (12, 12)
    assert np.ma.getmaskarray(matrix).diagonal().all()  # self-similarity masked (grey)
    assert not np.ma.getmaskarray(matrix)[0, 1:].any()
    assert np.isclose(matrix[0, 6], torch.cosine_similarity(z1[0], z2[0], dim=0).item(), atol=1e-5)


def test_tsne_scatter_labels_every_digit_and_reuses_ax():
    points, labels = np.random.default_rng(0).normal(size=(50, 2)), np.arange(50) % 10
    fig = plots.tsne_scatter(points, labels, title="map")
    check(fig, 1)
    assert sorted(t.get_text() for t in fig.axes[0].texts) == [str(d) for d in range(10)]
    own, (left, right) = plt.subplots(1, 2)
    assert plots.tsne_scatter(points, labels, ax=right) is own
    assert len(right.collections) == 10 and not left.collections
    with pytest.raises(ValueError, match="points"):
        plots.tsne_scatter(points[:, :1], labels)


@pytest.mark.parametrize("n_panels", [3, 5])
def test_tsne_grid_one_axes_per_panel(n_panels):
    rng = np.random.default_rng(0)
    panels = {f"space {i}": (rng.normal(size=(30, 2)), np.arange(30) % 3) for i in range(n_panels)}
    fig = plots.tsne_grid(panels)
    check(fig, n_panels)
    assert [ax.get_title() for ax in fig.axes] == list(panels)


def test_accuracy_vs_lines_and_log_axis():
    x = [10, 100, 1000]
    fig = plots.accuracy_vs(
        x,
        {"SimCLR": [0.8, 0.9, 0.95], "pixels": [0.6, None, 0.9]},
        xlabel="labels per class",
        logx=True,
        title="few labels",
    )
    check(fig, 1)
    assert len(fig.axes[0].lines) == 2 and fig.axes[0].get_xscale() == "log"
    errors = {"SimCLR": [20, 10, 5], "pixels": [40, 20, 2]}  # error rates in %, 2 to 40
    fig = plots.accuracy_vs(x, errors, xlabel="labels per class", logx=True, logy=True)
    assert fig.axes[0].get_yscale() == "log"
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["2", "5", "10", "20"]
    with pytest.raises(ValueError, match="SimCLR"):
        plots.accuracy_vs(x, {"SimCLR": [0.1]}, xlabel="n")


def test_accuracy_vs_error_bars():
    fig = plots.accuracy_vs(
        [1, 10], {"a": [0.5, 0.9], "b": [0.4, 0.8]}, xlabel="n", errors={"a": [0.05, 0.01]}
    )
    bars = [c for c in fig.axes[0].collections if len(c.get_segments())]  # error-bar segments
    assert len(bars) == 1 and len(bars[0].get_segments()) == 2
    low, high = bars[0].get_segments()[0][:, 1]
    assert low == pytest.approx(0.45) and high == pytest.approx(0.55)


def test_confusion_matrix_counts_and_row_fractions():
    true, pred = np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 2])
    fig = plots.confusion_matrix_plot(true, pred, title="kNN")
    check(fig, 1)
    fractions = fig.axes[0].images[0].get_array()
    assert np.allclose(fractions.sum(axis=1), 1.0)
    assert np.allclose(fractions[0], [0.5, 0.5, 0.0])
    assert sorted(t.get_text() for t in fig.axes[0].texts) == ["1", "1", "1", "2"]


def test_neighbour_gallery_rows_per_query_and_space():
    queries = digits(2)
    spaces = {"pixels": digits(2, 3), "SimCLR h": digits(2, 3).float() / 255}
    labels = {"pixels": [[1, 2, 1], [0, 0, 3]], "SimCLR h": [[1, 1, 1], [3, 3, 0]]}
    fig = plots.neighbour_gallery(queries, spaces, [1, 3], labels, ["hard for h", "easy"])
    check(fig, 2 * 2 * (1 + 3))  # (queries x spaces) rows of query + 3 neighbours
    assert fig.axes[0].get_ylabel() == "pixels" and fig.axes[4].get_ylabel() == "SimCLR h"
    titles = [sub._suptitle.get_text() for sub in fig.subfigs]
    assert titles == ["hard for h (label 1)", "easy (label 3)"]  # one block per query
    captions = [(ax.get_title(), ax.title.get_color()) for ax in fig.axes[1:4]]
    assert [c for c, _ in captions] == ["1", "2", "1"]
    assert captions[0][1] == plots.PALETTE[2] and captions[1][1] == plots.PALETTE[1]
    with pytest.raises(ValueError, match="Q = len"):
        plots.neighbour_gallery(queries, {"pixels": digits(3, 3)})


def test_no_figure_is_shown(monkeypatch):
    monkeypatch.setattr(plt, "show", lambda *a, **k: pytest.fail("plots must not call plt.show()"))
    plots.image_grid(digits(2))
    plots.similarity_heatmap(torch.randn(3, 2), torch.randn(3, 2))


def test_lab_summary_panels_and_highlight():
    rows = [
        {
            "key": f"k{t}{n}",
            "label": "all on",
            "temperature": t,
            "batch_size": n,
            "loo_knn": 0.9 + t / 10,
        }
        for t in (0.1, 0.5)
        for n in (64, 256)
    ]
    fig = plots.lab_summary(rows, rows[:3], highlight="k0.164")
    left, right = fig.axes
    assert len(left.get_lines()) == 3  # two batch sizes and the highlight ring
    dots = right.collections[-1]  # one dot per run, the highlighted one in vermillion
    assert len(dots.get_offsets()) == 3
    assert [t.get_text() for t in right.get_yticklabels()][0] == "all on (tau 0.1, N 64)"
    assert tuple(dots.get_facecolors()[2][:3]) != tuple(dots.get_facecolors()[0][:3])
    low, _ = right.get_xlim()
    assert low > 80  # a dot plot: no axis from zero, no bar length to misread
    plt.close(fig)
    assert len(plots.lab_summary([], rows).axes) == 1
    with pytest.raises(ValueError, match="nothing to plot"):
        plots.lab_summary([], [])


def test_frontier_joins_the_pareto_front():
    rows = [
        {"recipe": "a", "seconds": 10, "best": 0.90},
        {"recipe": "b", "seconds": 20, "best": 0.85},
        {"recipe": "c", "seconds": 30, "best": 0.95},
    ]
    fig = plots.frontier(rows, budget_seconds=25)
    check(fig, 1)
    front = fig.axes[0].lines[0]
    assert list(front.get_xdata()) == [10, 30]  # b is slower and worse than a
    assert [t.get_text() for t in fig.axes[0].texts] == ["0", "1", "2"]  # row numbers
