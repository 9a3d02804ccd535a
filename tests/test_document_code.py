"""Notebook 03's corrected program computes NT-Xent; the blog post's original loss does not.

The notebook keeps the corrected program's definitions in one code cell whose first line is
``# corrected program: definitions``; we run only that cell (no training) and compare its
``contrastive_loss`` with ``simclr_teach.loss.nt_xent``. The blog's code is read from the
notebook's markdown quote, so the test follows the notebook if either changes.
"""

import json
import math
import re
from pathlib import Path

import pytest
import torch

from simclr_teach.loss import nt_xent

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "03_fixing_the_document_code.ipynb"
MARKER = "# corrected program: definitions"


def _cells(cell_type: str) -> list[str]:
    notebook = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    return ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == cell_type]


@pytest.fixture(scope="module")
def corrected() -> dict:
    """The namespace left by the corrected program's definitions cell."""
    sources = [source for source in _cells("code") if source.startswith(MARKER)]
    assert len(sources) == 1, f"expected one code cell starting with {MARKER!r}, got {len(sources)}"
    namespace: dict = {}
    exec(compile(sources[0], f"{NOTEBOOK.name}: corrected program", "exec"), namespace)
    return namespace


@pytest.fixture(scope="module")
def blog_model_source() -> str:
    """The imports and the SimCLR class of the blog's program, from the notebook's quote."""
    blocks = [
        m.group(1)
        for source in _cells("markdown")
        for m in re.finditer(r"```python\n(.*?)```", source, re.S)
    ]
    quotes = [block for block in blocks if "class SimCLR" in block]
    assert len(quotes) == 1, "the notebook should quote the blog's program once"
    return quotes[0].split("# 设定训练参数")[0].strip()  # stop before the training script


@pytest.mark.parametrize("n,d", [(1, 3), (2, 2), (8, 16), (33, 7), (64, 128)])
@pytest.mark.parametrize("temperature", [0.05, 0.1, 0.5, 1.0])
def test_corrected_loss_is_nt_xent(corrected, n, d, temperature):
    g = torch.Generator().manual_seed(1000 * n + d)
    z_a, z_b = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    ours = corrected["contrastive_loss"](z_a, z_b, temperature)
    assert ours.item() == pytest.approx(nt_xent(z_a, z_b, temperature).item(), abs=1e-5, rel=1e-5)


def test_corrected_loss_gradients_match_nt_xent(corrected):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 16, 8, generator=g)
    ours, reference = z.clone().requires_grad_(), z.clone().requires_grad_()
    corrected["contrastive_loss"](ours[0], ours[1], 0.2).backward()
    nt_xent(reference[0], reference[1], 0.2).backward()
    assert torch.allclose(ours.grad, reference.grad, atol=1e-6)


def test_corrected_model_returns_h_and_z(corrected):
    model = corrected["SimCLR"]()
    h, z = model(torch.rand(4, 1, 28, 28))
    assert h.shape == (4, 512) and z.shape == (4, 64)


def test_the_notebook_runs_the_code_it_quotes(blog_model_source):
    code_cells = [source.strip() for source in _cells("code")]
    assert blog_model_source in code_cells, "the verbatim cell must match the quoted blog code"


def test_blog_loss_is_not_nt_xent(blog_model_source):
    namespace: dict = {}
    exec(compile(blog_model_source, "blog post", "exec"), namespace)
    blog = namespace["SimCLR"](784, temperature=0.5)
    g = torch.Generator().manual_seed(0)
    z_a, z_b = torch.randn(16, 8, generator=g), torch.randn(16, 8, generator=g)
    value = blog.contrastive_loss(z_a, z_b).item()
    assert math.isnan(value) or value != pytest.approx(nt_xent(z_a, z_b, 0.5).item(), abs=1e-3)
