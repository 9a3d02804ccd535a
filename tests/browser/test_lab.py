"""JupyterLab + Chromium end-to-end: the notebooks run in a real browser and the widgets respond.

Run with `make test-browser` (never part of `make test`). Screenshots: artifacts/browser/.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
# Run All in the browser for these (each < 2 min on CPU); the others are only opened.
QUICK = ["00_setup.ipynb", "01_augmentations.ipynb", "02_nt_xent_loss.ipynb"]

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]


def _write_smoke_notebook(path) -> None:
    """A plain IntSlider driving an Output: proves the page, kernel and widget manager work."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
        "name": "python3",
    }
    nb.cells = [
        nbformat.v4.new_code_cell("import sys\nprint('kernel:', sys.executable)"),
        nbformat.v4.new_code_cell("# NBVAL_RAISES_EXCEPTION\nraise ValueError('expected')"),
        nbformat.v4.new_code_cell(
            "import ipywidgets as w\n"
            "slider = w.IntSlider(value=3, min=0, max=10, description='n')\n"
            "out = w.Output()\n"
            "def show(change=None):\n"
            "    out.clear_output()\n"
            "    with out:\n"
            "        print(f'value is {slider.value}')\n"
            "slider.observe(show, 'value')\n"
            "show()\n"
            "box = w.VBox([slider, out])\n"
            "box.add_class('smoke-box')\n"
            "box"
        ),
        nbformat.v4.new_code_cell("raise RuntimeError('an error the test must see')"),
    ]
    for cell in nb.cells:
        if "NBVAL_RAISES_EXCEPTION" in cell.source:
            cell.metadata["tags"] = ["raises-exception"]
    nbformat.write(nb, path)


def test_lab_drives_a_plain_slider(lab, expect):
    """The machinery itself: the kernel is .venv's python, Run All goes on past an expected
    error, errors() finds an unexpected one, and a slider moved with the keyboard reaches the
    kernel and the Output redraws."""
    _write_smoke_notebook(lab.server.root / "smoke.ipynb")
    lab.open("smoke.ipynb")
    lab.run_all()
    assert lab.prompts() == ["1", "2", "3", "4"]
    errors = lab.errors()  # the expected ValueError is not one; the last cell's RuntimeError is
    assert len(errors) == 1 and "RuntimeError: an error the test must see" in errors[0], errors
    outputs = lab.code_cells().locator(".jp-OutputArea")
    assert f"kernel: {sys.executable}" in outputs.nth(0).inner_text()
    assert "ValueError" in outputs.nth(1).inner_text()  # ran, raised, and Run All went on

    box = lab.notebook.locator(".smoke-box")
    box.wait_for()
    shown = box.locator(".widget-output")
    expect(shown).to_have_text("value is 3")
    lab.screenshot("rendered", box)
    slider = lab.slider(box, "n")
    assert int(lab.press_slider(slider, "ArrowRight")) == 4
    expect(shown).to_have_text("value is 4")
    assert int(lab.press_slider(slider, "End")) == 10
    expect(shown).to_have_text("value is 10")
    lab.screenshot("slider-moved", box)


def _run_clean(lab, notebook: str) -> None:
    """Open a copy of `notebook`, Run All, and check every cell ran without an error output."""
    assert (lab.server.root / notebook).exists(), f"notebooks/{notebook} is missing"
    lab.open(notebook)
    lab.run_all()
    errors = lab.errors()
    assert not errors, f"{notebook} shows error output(s) after Run All:\n" + "\n".join(errors)
    prompts = lab.prompts()
    assert all(p.isdigit() for p in prompts), f"not every cell of {notebook} ran: {prompts}"


def test_00_setup_runs_clean(lab):
    _run_clean(lab, "00_setup.ipynb")
    lab.screenshot("after-run-all")


def _open_explorer(lab, expect, notebook: str, css_class: str):
    """Run ``notebook`` clean, find its one explorer, and check its picture is drawn.

    Returns (explorer, its image, its caption) as locators.
    """
    _run_clean(lab, notebook)
    explorer = lab.notebook.locator(f".{css_class}")
    expect(explorer).to_have_count(1)
    explorer.scroll_into_view_if_needed()
    image, caption = explorer.locator("img").last, explorer.locator(".widget-html").last
    expect(image).to_be_visible()
    lab.screenshot("rendered", explorer)
    return explorer, image, caption


def test_01_augmentation_explorer(lab, expect):
    """Run 01, then move the explorer's sliders: the views redraw and the caption follows."""
    explorer, image, caption = _open_explorer(
        lab, expect, "01_augmentations.ipynb", "simclr-augmentation-explorer"
    )
    views = lab.image_bytes(image)

    rotation = lab.slider(explorer, "rotation (max degrees)")
    assert float(lab.press_slider(rotation, "End")) == 180
    views = lab.wait_for_change(lambda: lab.image_bytes(image), views, "views after rotation")
    lab.screenshot("rotation-180", explorer)

    strength = lab.slider(explorer, "strength (all)")
    assert float(lab.press_slider(strength, "Home")) == 0
    lab.wait_for_change(lambda: lab.image_bytes(image), views, "views after strength 0")
    # strength 0 is the identity: every view is the digit itself
    expect(caption).to_contain_text("mean pixel cosine between these views: 1.00")
    lab.screenshot("strength-0", explorer)


def _caption_numbers(caption) -> dict[str, float]:
    """The temperature explorer's caption as numbers: anchor loss, batch loss, log(2N - 1)."""
    text = caption.inner_text()
    match = re.search(
        r"loss of this anchor: ([\d.]+).*batch loss \(N = (\d+)\): ([\d.]+)"
        r".*log\(2N - 1\) = ([\d.]+)",
        text,
    )
    assert match, f"unexpected caption: {text!r}"
    anchor, n, batch, log_2n_minus_1 = match.groups()
    return {
        "anchor_loss": float(anchor),
        "n": int(n),
        "loss": float(batch),
        "log_2n_minus_1": float(log_2n_minus_1),
    }


def test_02_temperature_explorer(lab, expect):
    """Run 02, then move tau: the softmax plot redraws and the loss follows."""
    explorer, image, caption = _open_explorer(
        lab, expect, "02_nt_xent_loss.ipynb", "simclr-temperature-explorer"
    )
    plot, start = lab.image_bytes(image), _caption_numbers(caption)

    tau = lab.slider(explorer, "temperature tau")
    assert float(lab.press_slider(tau, "Home")) == pytest.approx(0.01)
    plot = lab.wait_for_change(lambda: lab.image_bytes(image), plot, "softmax plot at tau 0.01")
    sharp = lab.wait_for_change(lambda: _caption_numbers(caption), start, "loss at tau 0.01")
    lab.screenshot("tau-0.01", explorer)

    assert float(lab.press_slider(tau, "End")) == pytest.approx(2)
    lab.wait_for_change(lambda: lab.image_bytes(image), plot, "softmax plot at tau 2")
    flat = lab.wait_for_change(lambda: _caption_numbers(caption), sharp, "loss at tau 2")
    lab.screenshot("tau-2", explorer)

    assert len({start["loss"], sharp["loss"], flat["loss"]}) == 3, (start, sharp, flat)
    assert start["log_2n_minus_1"] == sharp["log_2n_minus_1"] == flat["log_2n_minus_1"]
    # cosines lie in [-1, 1], so at tau = 2 every logit is within 1 of the others and the loss
    # is within 1 of log(2N - 1), the loss of a uniform softmax
    assert abs(flat["loss"] - flat["log_2n_minus_1"]) <= 1.0 + 1e-3, flat


@pytest.mark.parametrize("notebook", sorted({p.name for p in NOTEBOOKS.glob("*.ipynb")} - {*QUICK}))
def test_every_other_notebook_opens(lab, expect, notebook):
    """The notebooks not run above open in JupyterLab with all their cells and a live kernel
    (they are too long to run here; nbval runs them in `make test`)."""
    lab.open(notebook)
    served = nbformat.read(lab.server.root / notebook, as_version=4)  # the copy, not notebooks/
    expect(lab.notebook.locator(".jp-Cell")).to_have_count(len(served.cells))
