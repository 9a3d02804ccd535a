"""The capstone (notebooks/09_capstone.ipynb) and its checks (simclr_teach/capstone.py).

The checks are pinned here without a notebook run: their oracles agree with the package's own
implementations, the notebook's model answers pass them, and wrong answers fail with a message
that names the mistake. nbval's run of 09 with tests/nbval_grading.py checks the same inside the
notebook (its wrong answers: WRONG_ANSWERS["09_capstone"]); the student version, blank, is
autograded by nbgrader here: it scores 0 and only its exercise cells fail.
"""

import json
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from simclr_teach import capstone
from simclr_teach.capstone import (
    TestVault,
    calls_into,
    check_evaluation,
    check_loss,
    check_paired_difference,
    check_pretrain,
    check_train_steps,
    check_views,
    nt_xent_by_anchor,
)
from simclr_teach.data import load_mnist
from simclr_teach.loss import nt_xent
from simclr_teach.train import TrainConfig, build_model
from tests.support import code_cell_errors

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "09_capstone.ipynb"
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "tests"))

import assignments  # noqa: E402
from nbval_grading import CHAINED, WRONG_ANSWERS, nbgrader_of  # noqa: E402


def _cells() -> list[dict]:
    return json.loads(NOTEBOOK.read_text())["cells"]


@pytest.fixture(scope="module")
def answers() -> dict:
    """The kernel namespace after the notebook's imports, parameters and model answers 1-6."""
    namespace: dict = {}
    code = [c for c in _cells() if c["cell_type"] == "code"]
    for cell in code[:2]:  # imports, parameters
        exec("".join(cell["source"]), namespace)
    for cell in code:
        grade_id = nbgrader_of(cell).get("grade_id", "")
        if grade_id.endswith("-answer") and grade_id != "ex09-7-answer":
            exec("".join(cell["source"]), namespace)
    return namespace


@pytest.fixture(scope="module")
def digits():
    data = load_mnist("embedded")
    return data, data.train_images[:, None].float() / 255


@pytest.mark.parametrize("n,d,tau", capstone.LOSS_CASES)
def test_the_oracle_is_nt_xent(n, d, tau):
    g = torch.Generator().manual_seed(n)
    z = torch.randn(2, n, d, generator=g, dtype=torch.float64)
    mine, theirs = z.clone().requires_grad_(), z.clone().requires_grad_()
    value = nt_xent_by_anchor(mine[0], mine[1], tau)
    reference = nt_xent(theirs[0], theirs[1], tau)
    assert value.item() == pytest.approx(reference.item(), rel=1e-9)
    value.backward()
    reference.backward()
    assert torch.allclose(mine.grad, theirs.grad, atol=1e-10)


def test_every_named_mistake_is_another_loss():
    z1, z2 = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(0))
    right = nt_xent_by_anchor(z1, z2, 0.5).item()
    for flags in capstone.LOSS_MISTAKES:
        assert nt_xent_by_anchor(z1, z2, 0.5, **dict(flags)).item() != pytest.approx(right)


def test_the_model_answers_pass(answers, digits):
    data, train = digits
    assert check_views(answers["make_views"], train[:256]) > 0.05
    check_loss(answers["nt_xent"])
    check_train_steps(answers["train_steps"])
    check_paired_difference(answers["paired_difference"])
    chosen = check_evaluation(
        answers["evaluate"], train, data.train_labels, data.test_images, data.test_labels
    )
    assert set(chosen.values()) <= {1, 3, 10}, chosen  # clean validation digits: a small k


def test_the_package_loss_is_not_the_students_own_work():
    with pytest.raises(AssertionError, match="calls the course package"):
        check_loss(nt_xent)


@pytest.mark.parametrize(
    "mistake,message",
    [
        ({"include_self": True}, "its own denominator"),
        ({"normalise": False}, "cosine"),
        ({"both_views": False}, "first view"),
    ],
)
def test_the_loss_check_names_the_mistake(mistake, message):
    def wrong(z1, z2, temperature):
        return nt_xent_by_anchor(z1, z2, temperature, **mistake)

    with pytest.raises(AssertionError, match=message):
        check_loss(wrong)


def test_a_loop_without_zero_grad_is_caught(answers):
    def piles_up(model, optimizer, view_pairs, loss_fn):
        model.train()
        losses = []
        for x1, x2 in view_pairs:
            loss = loss_fn(model(x1)[1], model(x2)[1])
            loss.backward()  # no zero_grad: every step adds the earlier gradients
            optimizer.step()
            losses.append(loss.item())
        return losses

    with pytest.raises(AssertionError, match="zero_grad"):
        check_train_steps(piles_up)


def test_pretrain_is_held_to_its_budget_of_views(digits):
    data, train = digits
    model = build_model(TrainConfig(seed=0, amp=False))

    def four_views(model, images, epochs, generator):
        model(images[:128])
        for _ in range(4 * epochs * len(images) // 128):
            model(images[:128])

    with pytest.raises(AssertionError, match="two views of each digit per epoch"):
        check_pretrain(four_views, model, train[:256], data.train_labels[:256], 1, 0.0)
    with pytest.raises(AssertionError, match="no digit"):
        check_pretrain(lambda *args: None, model, train[:256], data.train_labels[:256], 1, 0.0)


def test_an_evaluation_that_chooses_k_on_test_digits_is_caught(answers, digits):
    data, train = digits
    namespace = dict(answers)
    source = next(s for c, v, s in WRONG_ANSWERS["09_capstone"] if "k chosen on test" in s)
    exec(source, namespace)
    with pytest.raises(AssertionError, match="not the best on validation"):
        check_evaluation(
            namespace["evaluate"], train, data.train_labels, data.test_images, data.test_labels
        )


def test_the_vault_opens_once():
    vault = TestVault(torch.zeros(3, 28, 28), torch.tensor([1, 2, 3]))
    images, labels = vault.open()
    assert images.shape == (3, 28, 28) and labels.tolist() == [1, 2, 3]
    with pytest.raises(RuntimeError, match="already looked at once"):
        vault.open()
    assert vault.opened == 2 and "opened 2" in repr(vault)
    with pytest.raises(ValueError, match="3 test images but 2 labels"):
        TestVault(torch.zeros(3, 28, 28), torch.tensor([1, 2]))


def test_calls_into_sees_the_package_and_nothing_else():
    z = torch.randn(4, 3)
    with calls_into() as found:
        F.normalize(z, dim=1)
        math.sqrt(2)
    assert found == set()
    with calls_into() as found:
        nt_xent(z, z, 0.5)
    assert "simclr_teach.loss.nt_xent" in found


def test_the_capstone_is_graded_chained_and_its_points_add_up():
    assert "09_capstone" in CHAINED
    points = [
        nbgrader_of(c)["points"]
        for c in _cells()
        if nbgrader_of(c).get("grade") and nbgrader_of(c).get("points")
    ]
    assert len(points) == 9 and sum(points) == 22 and len(set(points)) > 1


def test_the_blank_student_version_scores_nothing_and_only_exercises_fail(tmp_path):
    """nbgrader's autograder on the untouched student version of 09 (no training runs)."""
    released = assignments.generate(tmp_path, [NOTEBOOK])[0]
    scores = assignments.autograde(tmp_path, released, "blank")
    assert len(scores) == 7 and all(score == 0 for score, _ in scores.values()), scores
    executed = tmp_path / "autograded" / "blank" / NOTEBOOK.stem / NOTEBOOK.name
    for meta, source, errors in code_cell_errors(executed):
        if not meta:
            assert not errors, f"a lesson cell failed:\n{source}"
        elif meta.get("grade"):
            assert errors, f"{meta['grade_id']} passed on a blank answer"
