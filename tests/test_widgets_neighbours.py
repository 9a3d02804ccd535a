"""Tests of the neighbours explorer (05_evaluation_tsne_knn): the pure callback, then the widget."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # tests only: no window; the package never picks a backend

import pytest  # noqa: E402
import torch  # noqa: E402

from simclr_teach.evaluate import neighbour_agreement, neighbours_state  # noqa: E402
from simclr_teach.widgets import Explorer, neighbours_explorer  # noqa: E402

PNG = b"\x89PNG"

pytestmark = pytest.mark.usefixtures("close_figures")


def neighbours_by_loop(query: torch.Tensor, bank: torch.Tensor, k: int) -> list[int]:
    """Oracle: cosine of the query with every bank row, sorted, the first k."""
    cosines = [float(query @ b / (query.norm() * b.norm())) for b in bank]
    return sorted(range(len(bank)), key=lambda i: -cosines[i])[:k]


@pytest.fixture
def setting() -> dict:
    """6 queries and a bank of 20 digits with labels, in two spaces of different dimension."""
    g = torch.Generator().manual_seed(0)
    bank_labels = torch.arange(20) % 2
    query_labels = torch.tensor([0, 1, 0, 1, 0, 1])
    centres = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # one direction per class
    good_bank = centres[bank_labels] + 0.1 * torch.randn(20, 3, generator=g)
    good_queries = centres[query_labels] + 0.1 * torch.randn(6, 3, generator=g)
    return {
        "query_images": torch.randint(0, 256, (6, 28, 28), dtype=torch.uint8, generator=g),
        "bank_images": torch.randint(0, 256, (20, 28, 28), dtype=torch.uint8, generator=g),
        "spaces": {
            "learned": (good_queries, good_bank),
            "random": (torch.randn(6, 7, generator=g), torch.randn(20, 7, generator=g)),
        },
        "query_labels": query_labels,
        "bank_labels": bank_labels,
    }


# --- the pure callback ---------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 4, 20])
def test_neighbours_state_matches_loop_oracle(setting, k):
    for index in range(6):
        state = neighbours_state(index, setting["spaces"], k)
        assert list(state) == ["learned", "random"]  # the order of spaces
        for name, (queries, bank) in setting["spaces"].items():
            assert state[name].tolist() == neighbours_by_loop(queries[index], bank, k)


def test_neighbours_state_changes_with_index_and_caps_k(setting):
    first, second = (neighbours_state(i, setting["spaces"], 5) for i in (0, 1))
    assert not torch.equal(first["learned"], second["learned"])
    assert len(neighbours_state(0, setting["spaces"], 100)["random"]) == 20  # capped at N


def test_neighbours_state_finds_the_same_class_in_a_good_space(setting):
    for index, label in enumerate(setting["query_labels"]):
        found = neighbours_state(index, setting["spaces"], 8)["learned"]
        assert (setting["bank_labels"][found] == label).all()


def test_neighbour_agreement_counts_the_query_label(setting):
    neighbours = neighbours_state(2, setting["spaces"], 6)
    label = int(setting["query_labels"][2])
    counts = neighbour_agreement(neighbours, setting["bank_labels"], label)
    assert list(counts) == list(neighbours)
    for name, indices in neighbours.items():
        assert counts[name] == sum(int(setting["bank_labels"][i]) == label for i in indices)
    assert counts["learned"] == 6  # the good space finds its class


def test_neighbours_state_errors(setting):
    with pytest.raises(ValueError, match="index must be in"):
        neighbours_state(6, setting["spaces"])
    with pytest.raises(ValueError, match="empty"):
        neighbours_state(0, {})
    mismatched = {**setting["spaces"], "short": (torch.randn(6, 2), torch.randn(19, 2))}
    with pytest.raises(ValueError, match="same queries and bank"):
        neighbours_state(0, mismatched)
    with pytest.raises(ValueError, match=r"k \(neighbours\) must be"):
        neighbours_state(0, setting["spaces"], k=0)


# --- the widget, driven through its controls -----------------------------------------------------


def test_explorer_moves_with_its_controls(setting):
    explorer = neighbours_explorer(**setting, k=4)
    assert isinstance(explorer, Explorer) and "simclr-neighbours-explorer" in explorer._dom_classes
    assert all(c.description for c in explorer.controls.values())
    before, png = explorer.state, bytes(explorer.image.value)
    assert png.startswith(PNG) and before["index"] == 0
    assert len(before["neighbours"]["learned"]) == 4
    explorer.controls["index"].value = 3
    assert explorer.state["index"] == 3 and bytes(explorer.image.value) != png
    expected = neighbours_state(3, setting["spaces"], 4)
    assert all(torch.equal(explorer.state["neighbours"][n], expected[n]) for n in expected)
    explorer.controls["k"].value = 6
    assert all(len(idx) == 6 for idx in explorer.state["neighbours"].values())
    explorer.close()


def test_explorer_caption_counts_neighbours_with_the_query_label(setting):
    explorer = neighbours_explorer(**setting, k=5, index=1)
    assert explorer.state["label"] == 1 and explorer.state["agreement"]["learned"] == 5
    assert "learned: <b>5/5</b>" in explorer.caption.value
    explorer.close()
    unlabelled = neighbours_explorer(
        setting["query_images"], setting["bank_images"], setting["spaces"]
    )
    assert "agreement" not in unlabelled.state and "test digit 0" in unlabelled.caption.value
    unlabelled.close()


def test_explorer_caption_escapes_the_names_of_the_spaces(setting):
    spaces = {"<img src=x onerror=alert(1)>": setting["spaces"]["learned"]}
    explorer = neighbours_explorer(**{**setting, "spaces": spaces}, k=5, index=1)
    assert "&lt;img src=x onerror=alert(1)&gt;: <b>5/5</b>" in explorer.caption.value
    assert "<img" not in explorer.caption.value
    explorer.close()


def test_explorer_rejects_features_that_do_not_match_the_images(setting):
    with pytest.raises(ValueError, match="one feature row per digit"):
        neighbours_explorer(setting["query_images"], setting["bank_images"][:10], setting["spaces"])
