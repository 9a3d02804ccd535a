"""Explorers for the notebooks: ipywidgets controls wired to pure functions that tests drive.

Wiring only: the pure functions that compute what is shown live with their topic
(``augment.augmentation_views``, ``loss.temperature_state``, ``evaluate.neighbours_state``,
``lab.lab_state``) and are unit-tested without a browser. Each explorer below wires controls
to them and returns an `Explorer`, an ipywidgets VBox that the notebook displays. Nothing is
displayed here. Move a control from code with `explorer.controls["rotation"].value = 30`;
`explorer.state` holds what is shown. The only module of the package that imports ipywidgets.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from torch import Tensor

from simclr_teach import plots
from simclr_teach.augment import (
    OFF_VALUES,
    PARAM_RANGES,
    AugmentParams,
    augmentation_views,
    mean_view_cosine,
    params_from_controls,
    pixel_matching_top1,
)
from simclr_teach.evaluate import neighbour_agreement, neighbours_state
from simclr_teach.lab import BATCH_SIZES, LAB_BASE, default_cache, lab_config, lab_run, lab_state
from simclr_teach.loss import temperature_state
from simclr_teach.model import preprocess
from simclr_teach.shortcut import MAX_BITS
from simclr_teach.train import History, TrainConfig

# --- shared: the Explorer container ----------------------------------------------------------


def figure_png(fig: Figure, dpi: float = plots.STYLE["figure.dpi"]) -> bytes:
    """Render a figure to PNG bytes and close it, so the notebook does not show it twice."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return buffer.getvalue()


class Explorer(widgets.VBox):
    """A panel of controls above a picture and a caption, recomputed whenever a control moves.

    Args:
        controls: name -> control widget; every control with a ``value`` triggers a refresh.
        rows: the widgets to show above the picture (the controls arranged in rows).
        compute: control values {name: value} -> state dict (a pure function).
        render: state -> (PNG bytes, HTML caption).
        css_class: added to the container so a browser test can find it, e.g. "simclr-x".
    """

    def __init__(
        self,
        controls: Mapping[str, widgets.Widget],
        rows: list[widgets.Widget],
        compute: Callable[[dict], dict],
        render: Callable[[dict], tuple[bytes, str]],
        css_class: str,
    ) -> None:
        self.controls = dict(controls)
        self.image = widgets.Image(format="png")
        self.caption = widgets.HTML()
        self._compute, self._render, self._held = compute, render, False
        super().__init__([*rows, self.image, self.caption])
        self.add_class(css_class)
        for control in self.controls.values():
            if hasattr(control, "value"):
                control.observe(self.refresh, names="value")
        self.refresh()

    @contextmanager
    def hold(self) -> Iterator[Explorer]:
        """Move several controls, redraw once: `with explorer.hold(): ...`."""
        self._held = True
        try:
            yield self
        finally:
            self._held = False
            self.refresh()

    def close(self) -> None:
        """Close the explorer and every widget inside it."""

        def close_tree(widget: widgets.Widget) -> None:
            for child in getattr(widget, "children", ()):
                close_tree(child)
            widget.close()

        for child in self.children:
            close_tree(child)
        super().close()

    def values(self) -> dict:
        """The current value of every control that has one."""
        return {name: c.value for name, c in self.controls.items() if hasattr(c, "value")}

    def refresh(self, change: object = None) -> None:
        """Recompute the state from the controls and redraw (not while held)."""
        if self._held:
            return
        self.state = self._compute(self.values())
        self.image.value, self.caption.value = self._render(self.state)

    def static_html(self) -> str:
        """The explorer as it stands, in plain HTML: each control's value, the picture, the caption.

        What a page without a kernel shows (the course's website, a forge's notebook viewer,
        nbconvert): a picture of the widget, with a note that it is live in JupyterLab.
        """
        controls = "".join(f"<div>{_static_control(row)}</div>" for row in self.children[:-2])
        png = base64.b64encode(self.image.value).decode("ascii")
        picture = f'<img alt="the widget\'s picture" src="data:image/png;base64,{png}">'
        return (
            f'<div class="simclr-widget-static"{_BOX}>{controls}{picture if png else ""}'
            f"<div>{self.caption.value}</div><p><em>{STATIC_NOTE}</em></p></div>"
        )

    def _repr_mimebundle_(self, **kwargs: object) -> dict | None:
        """JupyterLab draws the live widget; a viewer without widgets shows `static_html`."""
        data = super()._repr_mimebundle_(**kwargs)
        if data is not None:
            data["text/html"] = self.static_html()
        return data


STATIC_NOTE = (
    "A picture of this widget as the notebook ran. It is live in JupyterLab: run the notebook "
    "(<code>make lab</code>) and every control redraws it."
)


# the static picture's layout: a framed box, rows of controls left-aligned with space between
# them (a page's stylesheet would centre tables and run the cells together)
_BOX = ' style="border: 1px solid #bbb; border-radius: 4px; padding: 0.5em 1em; margin: 0.5em 0"'
_ROW = ' style="margin: 0; border: none; border-collapse: collapse"'
_CELL = ' style="padding: 0 2em 0 0; border: none; text-align: left"'


def _static_value(control: widgets.Widget) -> str:
    """A control's value as its readout shows it."""
    value = control.value
    if isinstance(control, widgets.SelectionSlider):
        return str(control.label)
    if isinstance(value, float):
        return format(value, getattr(control, "readout_format", ".3g"))
    return str(value)


def _static_control(control: widgets.Widget) -> str:
    """One control (or a row of them) as static HTML: no inputs, as viewers strip them."""
    if isinstance(control, widgets.Box):
        cells = "".join(f"<td{_CELL}>{_static_control(c)}</td>" for c in control.children)
        return f"<table{_ROW}><tr>{cells}</tr></table>"
    label = html.escape(getattr(control, "description", ""))
    if isinstance(control, widgets.Button):
        return f"<code>[{label}]</code>"
    if isinstance(control, widgets.Checkbox):
        return f"{'&#9745;' if control.value else '&#9744;'} {label}"
    if isinstance(control, widgets.IntProgress):
        return f"<code>{'&#9608;' * control.value}</code> {label}"
    if isinstance(control, widgets.HTML):
        return control.value
    return f"{label}: <b>{html.escape(_static_value(control))}</b>"


def _slider(
    description: str, value: float, low: float, high: float, step: float, integer: bool = False
) -> widgets.Widget:
    kind = widgets.IntSlider if integer else widgets.FloatSlider
    return kind(
        value=value,
        min=low,
        max=high,
        step=step,
        description=description,
        continuous_update=False,
        style={"description_width": "initial"},
    )


TEMPERATURE_RANGE = (0.01, 2.0)  # tau on the sliders: from a near one-hot softmax to a flat one


def _temperature_slider(value: float) -> widgets.FloatLogSlider:
    """The temperature slider of 02's explorer and 06's lab: log scale, as tau spans decades."""
    low, high = TEMPERATURE_RANGE
    return widgets.FloatLogSlider(
        value=value,
        base=10,
        min=math.log10(low),
        max=math.log10(high),
        step=0.01,
        description="temperature tau",
        continuous_update=False,
        style={"description_width": "initial"},
    )


# --- augmentation explorer (01_augmentations) ------------------------------------------------

# Per transform: on/off switch label, slider label (browser tests find sliders by it), slider
# step, and where the slider starts when the transform is off in AugmentParams() (so that
# switching it on shows something).
AUGMENT_CONTROLS: dict[str, tuple[str, str, float, float]] = {
    "crop_scale": ("crop", "crop: min area kept", 0.01, 0.6),
    "rotation": ("rotation", "rotation (max degrees)", 1.0, 15.0),
    "translate": ("translation", "translation (max fraction)", 0.01, 0.1),
    "shear": ("shear", "shear (max degrees)", 1.0, 10.0),
    "elastic": ("elastic", "elastic (RMS px)", 0.1, 1.5),
    "noise": ("noise", "noise (std)", 0.01, 0.1),
    "blur": ("blur", "blur (max sigma px)", 0.1, 1.0),
    "erase_p": ("erasing", "erasing probability", 0.05, 0.25),
}


def _augment_controls(
    params: AugmentParams, switch: str
) -> tuple[dict[str, widgets.Widget], list[widgets.Widget]]:
    """A slider per AugmentParams field, starting at ``params``, beside a checkbox.

    ``switch="on"``: checkbox "<field>_on", ticked while the transform is on (01's explorer).
    ``switch="ablate"``: checkbox "<field>_ablate", ticked while it is off (06's lab).
    Returns (controls by name, one HBox row per field).
    """
    controls: dict[str, widgets.Widget] = {}
    rows = []
    for field in fields(AugmentParams):
        name, (low, high) = field.name, PARAM_RANGES[field.name]
        short, label, step, when_off = AUGMENT_CONTROLS[name]
        value = getattr(params, name)
        is_on = value != OFF_VALUES[name]
        controls[name] = _slider(label, value if is_on else when_off, low, high, step)
        box = widgets.Checkbox(
            value=is_on if switch == "on" else not is_on,
            indent=False,
            description=short if switch == "on" else f"ablate {short}",
            layout={"width": "110px" if switch == "on" else "150px"},
        )
        controls[f"{name}_{switch}"] = box
        rows.append(widgets.HBox([box, controls[name]]))
    return controls, rows


def _augmentation_state(images: Tensor, values: dict, n_views: int, batch: int) -> dict:
    """The explorer's numbers for the controls' ``values``: the views and how alike they are."""
    params = params_from_controls(values)
    views = augmentation_views(images, values["index"], params, values["seed"], n_views)
    sample = images[:batch]
    generator = torch.Generator().manual_seed(values["seed"])
    return {
        "params": params,
        "views": views,
        "index": values["index"],
        "seed": values["seed"],
        "mean_cosine": mean_view_cosine(views),
        "pixel_top1": pixel_matching_top1(sample, params, generator),
        "batch": len(sample),
    }


def _augmentation_render(images: Tensor, state: dict) -> tuple[bytes, str]:
    original = preprocess(images[state["index"]].reshape(1, *images.shape[-2:]))  # (1, 1, 28, 28)
    shown = torch.cat([original, state["views"]])  # (1 + V, 1, 28, 28)
    titles = ["original", *(f"view {i + 1}" for i in range(len(state["views"])))]
    png = figure_png(plots.image_grid(shown, nrow=len(shown), titles=titles))
    chance = 1 / (2 * state["batch"] - 1)
    caption = (
        f"mean pixel cosine between these views: <b>{state['mean_cosine']:.2f}</b> · "
        f"pixel matching finds a digit's other view for <b>{state['pixel_top1']:.0%}</b>"
        f" of {2 * state['batch']} views (chance {chance:.1%})"
    )
    return png, caption


def augmentation_explorer(
    images: Tensor, seed: int = 0, n_views: int = 8, batch: int = 256
) -> Explorer:
    """Sliders and switches for every transform of the view family. Taught in 01_augmentations.

    Shows the picked digit and `n_views` views of it, their mean pixel cosine, and how often
    pixel matching still solves the pretext task on `batch` digits (see view_similarities).

    Args:
        images: (B, 28, 28) or (B, 1, 28, 28) digits, uint8 or float in [0, 1].
        seed: the first seed; the "re-sample" button adds one.
        n_views: views shown. batch: digits used for the pixel-matching number.

    Returns:
        An Explorer (not displayed). Controls: "strength", each AugmentParams field and its
        "<field>_on" checkbox, "index", "seed", and the "resample" button.
    """
    controls: dict[str, widgets.Widget] = {
        "index": _slider("digit", 0, 0, len(images) - 1, 1, integer=True),
        "seed": widgets.IntText(value=seed, description="seed", layout={"width": "150px"}),
        "resample": widgets.Button(description="re-sample", icon="refresh"),
        "strength": _slider("strength (all)", 1.0, 0.0, 3.0, 0.05),
    }
    rows = [
        widgets.HBox([controls["index"], controls["seed"], controls["resample"]]),
        controls["strength"],
    ]
    augment_controls, augment_rows = _augment_controls(AugmentParams(), "on")
    controls.update(augment_controls)
    rows += augment_rows

    def resample(_: widgets.Button) -> None:
        controls["seed"].value += 1  # the observer redraws

    controls["resample"].on_click(resample)
    return Explorer(
        controls,
        rows,
        compute=lambda v: _augmentation_state(images, v, n_views, batch),
        render=lambda s: _augmentation_render(images, s),
        css_class="simclr-augmentation-explorer",
    )


# --- temperature explorer (02_nt_xent_loss) --------------------------------------------------


def _temperature_render(state: dict) -> tuple[bytes, str]:
    title = f"anchor {state['anchor']} of {2 * state['n']} views, tau = {state['temperature']:.3g}"
    figure = plots.candidate_softmax(
        state["similarity"],
        state["probabilities"],
        state["positive"],
        state["weights"],
        title=title,
    )
    caption = (
        f"loss of this anchor: <b>{state['anchor_loss']:.3f}</b> · batch loss "
        f"(N = {state['n']}): <b>{state['loss']:.3f}</b> · log(2N - 1) = "
        f"<b>{state['log_2n_minus_1']:.3f}</b>, the loss when all views look alike"
    )
    return figure_png(figure), caption


def temperature_explorer(z1: Tensor, z2: Tensor, temperature: float = 0.5) -> Explorer:
    """A log-scale temperature slider over one anchor's softmax. Taught in 02_nt_xent_loss.

    Args:
        z1, z2: (N, D) projections of the two views, N >= 2.
        temperature: where the slider starts, in [0.01, 2].

    Returns:
        An Explorer (not displayed). Controls: "temperature" (FloatLogSlider), "anchor" and
        "n" (the first n pairs; the anchor slider follows it).
    """
    n, (low, high) = len(z1), TEMPERATURE_RANGE
    if n < 2 or not low <= temperature <= high:
        raise ValueError(
            f"need N >= 2 pairs and temperature in [{low:g}, {high:g}], got N = "
            f"{n}, temperature = {temperature}"
        )
    controls = {
        "temperature": _temperature_slider(temperature),
        "anchor": _slider("anchor", 0, 0, 2 * n - 1, 1, integer=True),
        "n": _slider("pairs N", n, 2, n, 1, integer=True),
    }

    def follow_n(change: dict) -> None:  # anchors of the first n pairs only
        controls["anchor"].max = 2 * change["new"] - 1

    controls["n"].observe(follow_n, names="value")  # registered first: runs before refresh
    rows = [controls["temperature"], widgets.HBox([controls["anchor"], controls["n"]])]
    return Explorer(
        controls,
        rows,
        compute=lambda v: temperature_state(
            z1, z2, v["temperature"], min(v["anchor"], 2 * v["n"] - 1), v["n"]
        ),
        render=_temperature_render,
        css_class="simclr-temperature-explorer",
    )


# --- neighbours explorer (05_evaluation_tsne_knn) --------------------------------------------


def _neighbours_compute(
    spaces: Mapping[str, tuple[Tensor, Tensor]],
    query_labels: Tensor | None,
    bank_labels: Tensor | None,
    values: dict,
) -> dict:
    neighbours = neighbours_state(values["index"], spaces, values["k"])
    state = {"index": values["index"], "k": values["k"], "neighbours": neighbours}
    if query_labels is not None and bank_labels is not None:
        state["label"] = int(query_labels[values["index"]])
        state["agreement"] = neighbour_agreement(neighbours, bank_labels, state["label"])
    return state


def _neighbours_render(query_images: Tensor, bank_images: Tensor, state: dict) -> tuple[bytes, str]:
    index = state["index"]
    shown = {name: bank_images[idx].unsqueeze(0) for name, idx in state["neighbours"].items()}
    png = figure_png(plots.neighbour_gallery(query_images[index : index + 1], shown))
    caption = f"test digit {index}"
    if "agreement" in state:
        counts = " · ".join(
            f"{html.escape(str(name))}: <b>{same}/{len(state['neighbours'][name])}</b>"
            for name, same in state["agreement"].items()
        )
        caption += f", a {state['label']}. Neighbours that are also a {state['label']}: {counts}"
    return png, caption


def neighbours_explorer(
    query_images: Tensor,
    bank_images: Tensor,
    spaces: Mapping[str, tuple[Tensor, Tensor]],
    k: int = 8,
    query_labels: Tensor | None = None,
    bank_labels: Tensor | None = None,
    index: int = 0,
) -> Explorer:
    """Pick a digit, see its nearest neighbours in several feature spaces. Taught in 05.

    One row per space (e.g. SimCLR h and raw pixels): the query, then its k nearest bank digits.
    With labels, the caption counts the neighbours that share the query's label.

    Args:
        query_images: (Q, 28, 28) digits to pick from (e.g. the test digits).
        bank_images: (N, 28, 28) digits to search (e.g. the training digits).
        spaces: name -> (query features (Q, D), bank features (N, D)), see ``neighbours_state``.
        k: neighbours shown at first (the slider goes from 1 to 16).
        query_labels: (Q,), bank_labels: (N,); optional, for the caption.
        index: the query shown at first.

    Returns:
        An Explorer (not displayed). Controls: "index" (the query) and "k".
    """
    neighbours_state(index, spaces, k)  # validates spaces and index before building controls
    queries, bank = (len(x) for x in next(iter(spaces.values())))
    if (queries, bank) != (len(query_images), len(bank_images)):
        raise ValueError(
            f"features have (Q, N) = ({queries}, {bank}) rows for "
            f"{len(query_images)} query and {len(bank_images)} bank images; "
            "pass one feature row per digit"
        )
    controls = {
        "index": _slider("test digit", index, 0, len(query_images) - 1, 1, integer=True),
        "k": _slider("neighbours k", min(k, 16), 1, 16, 1, integer=True),
    }
    return Explorer(
        controls,
        [widgets.HBox([controls["index"], controls["k"]])],
        compute=lambda v: _neighbours_compute(spaces, query_labels, bank_labels, v),
        render=lambda s: _neighbours_render(query_images, bank_images, s),
        css_class="simclr-neighbours-explorer",
    )


# --- training lab (06_temperature_augmentation_lab) ------------------------------------------


def _lab_table_row(row: Mapping) -> str:
    """One stored run as a table row; each cell escaped (lab_results.json holds text, not HTML)."""
    cells = (
        str(row["label"]),
        f"{row['temperature']:g}",
        str(row["batch_size"]),
        str(row["epochs"]),
        f"{row['loo_knn']:.1%}",
        f"{row['train_seconds']:.0f}",
    )
    return "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells) + "</tr>"


def _lab_render(state: dict) -> tuple[bytes, str]:
    config, row = state["config"], state["row"]
    label = html.escape(str(state["label"]))  # a run label is text, never markup
    if row is None:
        now = (
            f"<b>{label}</b>, tau {config.temperature:g}, N {config.batch_size}, "
            f"{config.epochs} epochs: not trained yet; press <b>Train</b>."
        )
    else:
        now = (
            f"<b>{label}</b>, tau {config.temperature:g}, N {config.batch_size}, "
            f"{config.epochs} epochs: leave-one-out kNN <b>{row['loo_knn']:.1%}</b> "
            f"(trained in {row['train_seconds']:.0f} s; Train again is instant)."
        )
    if not state["rows"]:
        return b"", now + " No runs yet: the plots appear after the first."
    fig = plots.lab_summary(
        state["curve"],
        state["bars"],
        highlight=state["key"],
        title=f"{len(state['rows'])} lab run(s)",
    )
    cells = "".join(_lab_table_row(r) for r in reversed(state["rows"]))
    table = (
        "<table><tr><th>augmentations</th><th>tau</th><th>N</th><th>epochs</th>"
        f"<th>LOO kNN</th><th>s</th></tr>{cells}</table>"
    )
    return figure_png(fig), now + table


def training_lab(cache_dir: str | Path | None = None, base: TrainConfig | None = None) -> Explorer:
    """Controls for a SimCLR run and a Train button. Taught in 06_temperature_augmentation_lab.

    Train trains the run the controls describe (``lab.lab_run``: cached by configuration, so
    the same settings again are instant), with a progress bar per epoch, then adds it to the
    results table and the plots. Results are stored in ``cache_dir/lab_results.json``.

    Args:
        cache_dir: run cache (default ``runs/cache``, shared with notebooks 04 and 05).
        base: the run the controls start from (default ``lab.LAB_BASE``).

    Returns:
        An Explorer (not displayed). Controls: "temperature" (log scale), "batch_size",
        "epochs", "strength", "shortcut_bits", each AugmentParams field and its
        "<field>_ablate" checkbox, and the "train" button. ``explorer.progress`` is the bar,
        ``explorer.train()`` does what the button does and returns the run's row.
    """
    base = base if base is not None else LAB_BASE
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache()
    controls: dict[str, widgets.Widget] = {
        "temperature": _temperature_slider(base.temperature),
        "batch_size": widgets.SelectionSlider(
            options=sorted({*BATCH_SIZES, base.batch_size}),
            value=base.batch_size,
            description="batch size N",
            continuous_update=False,
            style={"description_width": "initial"},
        ),
        "epochs": _slider("epochs", base.epochs, 1, max(30, base.epochs), 1, integer=True),
        "strength": _slider("strength (all)", base.strength, 0.0, 3.0, 0.05),
        "shortcut_bits": _slider("shortcut bits", base.shortcut_bits, 0, MAX_BITS, 1, integer=True),
        "train": widgets.Button(description="Train", icon="play", button_style="primary"),
    }
    rows = [
        widgets.HBox([controls["temperature"], controls["batch_size"]]),
        widgets.HBox([controls["epochs"], controls["strength"], controls["shortcut_bits"]]),
    ]
    augment_controls, augment_rows = _augment_controls(base.augment, "ablate")
    controls.update(augment_controls)
    rows += augment_rows
    progress = widgets.IntProgress(
        value=0, min=0, max=1, description="not started", style={"description_width": "initial"}
    )
    rows.append(widgets.HBox([controls["train"], progress]))

    def config_values(values: dict) -> dict:
        return {k: v for k, v in values.items() if k != "train"}

    explorer = Explorer(
        controls,
        rows,
        compute=lambda v: lab_state(config_values(v), cache_dir, base),
        render=_lab_render,
        css_class="simclr-training-lab",
    )

    def train(_: object = None) -> dict:
        config = lab_config(config_values(explorer.values()), base)
        progress.max, progress.value, progress.description = config.epochs, 0, "training"

        def on_epoch_end(history: History) -> None:
            progress.value = len(history.epoch)
            progress.description = (
                f"epoch {len(history.epoch)}/{config.epochs}, loss {history.loss[-1]:.2f}"
            )

        controls["train"].disabled = True
        try:
            row = lab_run(config, cache_dir, on_epoch_end=on_epoch_end, base=base)
        finally:
            controls["train"].disabled = False
        progress.value, progress.description = progress.max, f"done: LOO kNN {row['loo_knn']:.1%}"
        explorer.refresh()
        return row

    controls["train"].on_click(train)
    explorer.progress, explorer.train = progress, train
    return explorer
