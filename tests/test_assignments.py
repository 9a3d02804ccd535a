"""The exercises as assignments: student versions, autograding, checks that reject wrong answers.

The notebooks in notebooks/ are the instructor version (solutions in; nbval runs them).
`scripts/assignments.py` (make assignments) releases the student version with nbgrader.
"""

import copy
import json
import os
import shutil
import sys
from pathlib import Path

import nbformat
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import assignments  # noqa: E402

GRADED = assignments.graded_notebooks()
# the student runs share the notebooks' slow evaluations with nbval (simclr_teach.memo)
pytestmark = pytest.mark.memo


def _nbgrader(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """One course folder with every graded notebook released."""
    root = tmp_path_factory.mktemp("course")
    return root, assignments.generate(root)


def test_some_notebooks_have_graded_exercises():
    assert [path.name for path in GRADED][:1] == ["00_setup.ipynb"]


@pytest.mark.parametrize("path", GRADED, ids=lambda p: p.stem)
def test_every_exercise_is_complete(path):
    """Each answer cell is followed by its check; each check has a visible part; ids unique."""
    cells = json.loads(path.read_text())["cells"]
    graded = [(i, _nbgrader(c)) for i, c in enumerate(cells) if _nbgrader(c)]
    ids = [meta["grade_id"] for _, meta in graded]
    assert len(ids) == len(set(ids)), "grade ids must be unique"
    for i, meta in graded:
        cell = cells[i]
        text = "".join(cell["source"])
        if meta["solution"] and cell["cell_type"] == "code":
            check = _nbgrader(cells[i + 1])
            assert check.get("grade") and not check.get("solution"), f"no check after {meta}"
            assert "### BEGIN SOLUTION" in text and "### END SOLUTION" in text
        if meta["solution"] and cell["cell_type"] == "markdown":
            assert meta["grade"] and meta["points"] > 0, "an open question is graded by hand"
            assert "### BEGIN SOLUTION" in text, "with a model answer for the instructor"
    hints = sum("<summary>Hint</summary>" in "".join(c["source"]) for c in cells)
    answers = sum(1 for _, m in graded if m["solution"])
    assert hints >= answers, "every exercise has a hint"


def test_student_version_hides_solutions_and_hidden_tests(course):
    _, released = course
    assert [p.name for p in released] == [p.name for p in GRADED]
    for path in released:
        nb = nbformat.read(path, as_version=4)
        text = "\n".join(cell.source for cell in nb.cells)
        assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text
        assert not any(cell.get("outputs") for cell in nb.cells if cell.cell_type == "code")
        for cell in nb.cells:
            meta = _nbgrader(cell)
            if meta.get("solution") and cell.cell_type == "code":
                assert "raise NotImplementedError" in cell.source
            if meta.get("solution") and cell.cell_type == "markdown":
                assert "YOUR ANSWER HERE" in cell.source


# nbgrader's own autograder, on the cheapest notebook: its plumbing (submission folders, the
# gradebook, scores of code grade cells). For every notebook the same verdicts come from one
# in-process run of its student version below, and from nbval, which executes the instructor
# version (hidden tests included): a notebook that nbval runs without an error is one that
# nbgrader grades with full marks, since a grade cell scores its points exactly when it does not
# fail. So each notebook is executed once here and once by nbval, not twice more by nbgrader.
AUTOGRADED = "00_setup"


def test_autograder_full_marks_for_the_instructor_none_for_a_blank_student(course):
    """Autograde the instructor version and the untouched student version of one notebook."""
    root, released = course
    source = next(path for path in GRADED if path.stem == AUTOGRADED)
    student = next(path for path in released if path.stem == AUTOGRADED)
    # the instructor version, submitted with the files the student version comes with
    full = root / "instructor-copy" / source.stem
    shutil.copytree(student.parent, full)
    (full / source.name).write_bytes(source.read_bytes())
    instructor = assignments.autograde(root, full / source.name, "instructor")
    blank = assignments.autograde(root, student, "blank")
    assert instructor and all(score == top for score, top in instructor.values()), instructor
    assert set(blank) == set(instructor)
    assert all(score == 0 for score, _ in blank.values()), blank

    executed = nbformat.read(
        root / "autograded" / "blank" / source.stem / source.name, as_version=4
    )
    for cell in executed.cells:
        if cell.cell_type != "code":
            continue
        errors = [o.ename for o in cell.get("outputs", []) if o.output_type == "error"]
        meta = _nbgrader(cell)
        if meta.get("solution"):
            assert errors == ["NotImplementedError"], cell.source
        elif not meta.get("grade"):
            assert not errors, f"{source.name}: a lesson cell failed:\n{cell.source}"


class StudentRun:
    """A blank student version run top to bottom in this process, as the autograder runs it.

    ``namespace``: the variables after every cell (what the lesson cells left; the exercise
    cells add nothing, they fail). ``failed``: grade id -> the exception each exercise cell
    raised (None if it ran). ``instructor``: grade id -> the instructor version's cell source.
    """

    def __init__(self, released: Path, instructor: Path):
        self.namespace: dict = {"__name__": "__lesson__"}
        self.failed: dict[str, str | None] = {}
        cells = json.loads(instructor.read_text())["cells"]
        self.instructor = {
            _nbgrader(c)["grade_id"]: "".join(c["source"]) for c in cells if _nbgrader(c)
        }
        notebook = nbformat.read(released, as_version=4)
        cwd = os.getcwd()
        os.chdir(released.parent)  # relative paths (results/...) as the student meets them
        try:
            for cell in notebook.cells:
                if cell.cell_type == "code":
                    self._run(cell, released.stem)
        finally:
            os.chdir(cwd)

    def _run(self, cell, name: str) -> None:
        meta = _nbgrader(cell)
        code = compile(cell.source, f"{name} [{meta.get('grade_id', 'lesson')}]", "exec")
        if not meta:  # a lesson cell: it must run, whatever the exercises hold
            exec(code, self.namespace)
            return
        # an answer cell raises NotImplementedError; a check cell runs on a copy, so that
        # nothing it defines leaks into the lesson cells after it (the kernel's would; none uses it)
        try:
            exec(code, copy.copy(self.namespace) if meta.get("grade") else self.namespace)
        except Exception as error:  # noqa: BLE001 - every failure scores 0, whatever its type
            self.failed[meta["grade_id"]] = type(error).__name__
        else:
            self.failed[meta["grade_id"]] = None


@pytest.fixture(scope="module")
def student_runs(course):
    """name -> StudentRun, each notebook's student version executed once, on first use."""
    _, released = course
    by_name = {path.stem: path for path in released}
    cache: dict[str, StudentRun] = {}

    def run(name: str) -> StudentRun:
        if name not in cache:
            cache[name] = StudentRun(by_name[name], REPO / "notebooks" / f"{name}.ipynb")
        return cache[name]

    return run


@pytest.mark.parametrize("name", [path.stem for path in GRADED])
def test_blank_student_version_runs_and_scores_nothing(student_runs, name):
    """Every lesson cell of the student version runs (StudentRun raises otherwise); every answer
    cell raises NotImplementedError and every check fails on the blank answer: 0 points."""
    run = student_runs(name)
    checks = [grade_id for grade_id in run.failed if grade_id.endswith("-check")]
    assert checks, f"{name}: no check cell ran"
    for grade_id, error in run.failed.items():
        if grade_id in checks:
            assert error is not None, f"{name}: {grade_id} passes on a blank answer"
        else:
            assert error == "NotImplementedError", f"{name}: {grade_id} raised {error}"


@pytest.mark.parametrize("name", [path.stem for path in GRADED])
def test_model_answers_pass_their_checks(student_runs, name):
    """Each model answer passes its check, hidden tests included, after the lesson cells."""
    run = student_runs(name)
    checks = [grade_id for grade_id in run.failed if grade_id.endswith("-check")]
    for check in checks:
        namespace = copy.copy(run.namespace)
        exec(run.instructor[check.replace("-check", "-answer")], namespace)
        exec(run.instructor[check], namespace)


# ---- the checks reject plausible wrong answers --------------------------------------------------

# 05, exercise 1: the kNN of SimCLR z at k = 20, scored on the validation or on the test digits
_VAL_05 = "knn_accuracy(z_train[~val], y[~val], z_train[val], y[val], k=20, temperature={})"
_TEST_05 = "knn_accuracy(z_train, y, z_test, data.test_labels, k=20, temperature={})"
_BY_VAL_05 = f"max(TEMPERATURES, key=lambda t: {_VAL_05.format('t')})"
_BY_TEST_05 = f"max(TEMPERATURES, key=lambda t: {_TEST_05.format('t')})"
_LEAKY_05 = f"max({_TEST_05.format('t')} for t in TEMPERATURES)"
_HONEST_05 = _TEST_05.format(_BY_VAL_05)


def _gap_06(seeds: tuple[int, ...]) -> str:
    """06, exercise 1: mean LOO kNN of "no translate" minus "all on" over these seeds."""
    score = "lab_run(lab_config({{'translate_ablate': {}, 'seed': s}}), CACHE)['loo_knn']"
    return (
        f"(sum({score.format(True)} for s in {seeds}) - "
        f"sum({score.format(False)} for s in {seeds})) / {len(seeds)}"
    )


_GAP_06, _SE_06 = _gap_06((0, 1, 2)), "noise * math.sqrt(2 / 3)"

# notebook -> [(check grade_id, variable, wrong answer as Python source)]
# 08, exercise 2: the right number of epochs the queue holds
EPOCHS = "QUEUE / (2 * BASE.batch_size * (len(images) // BASE.batch_size))"
WRONG_ANSWERS = {
    "00_setup": [
        ("ex00-1-check", "my_answer", "math.log(2 * 16)"),  # 2N: counted the anchor itself
        ("ex00-1-check", "my_answer", "math.log(2 * 16 - 2)"),  # 2N - 2: forgot the partner
        ("ex00-1-check", "my_answer", "math.log(16)"),  # N: one view per digit
        ("ex00-1-check", "my_answer", "31"),  # no log
        ("ex00-1-check", "my_answer", "math.log10(31)"),  # the wrong logarithm
        ("ex00-3-check", "my_function", "mnist_files_present()"),  # its result, not the function
        ("ex00-3-check", "my_function", "load_mnist"),  # the loader
        ("ex00-4-check", "head_parameters", "count_parameters(model)"),  # the whole model
        ("ex00-4-check", "head_parameters", "count_parameters(model.encoder)"),  # what is kept
        (
            "ex00-4-check",
            "head_parameters",
            "sum(p.numel() for n, p in model.head.named_parameters() if n.endswith('weight'))",
        ),  # weights without biases
    ],
    "01_augmentations": [
        ("ex01-1-check", "no_geometry", "AugmentParams()"),  # geometry still on
        ("ex01-1-check", "no_geometry", "AugmentParams().disabled('crop', 'rotation')"),
        (
            "ex01-1-check",
            "no_geometry",
            "AugmentParams().disabled("
            "'crop', 'rotation', 'translate', 'shear', 'noise', 'erase_p')",
        ),  # everything off
        ("ex01-3-check", "my_strength", "max(STRENGTHS)"),
        ("ex01-3-check", "my_strength", "min(STRENGTHS)"),
        ("ex01-3-check", "my_strength", "0.75"),  # not one of the strengths measured
    ],
    "02_nt_xent_loss": [
        ("ex02-1-check", "my_floor", "math.log(1 + (2 * TRAIN_N - 1) * math.exp(-1 / 0.1))"),
        ("ex02-1-check", "my_floor", "(2 * TRAIN_N - 2) * math.exp(-1 / 0.1)"),  # no log
        ("ex02-1-check", "my_floor", "loss_floor(TRAIN_N, TEMPERATURE)"),  # the wrong tau
        ("ex02-1-check", "my_floor", "loss_floor(N_PAIRS, 0.1)"),  # the wrong N
        ("ex02-2-check", "simplex", "torch.eye(8)"),  # orthogonal, not a simplex
        ("ex02-2-check", "simplex", "torch.eye(8) - 1 / 7"),  # centred by the wrong amount
        ("ex02-2-check", "simplex", "-torch.eye(8)"),
        ("ex02-3-check", "decoupled", "nt_xent"),  # the partner still in the denominator
        ("ex02-3-check", "decoupled", "lambda z1, z2, t: nt_xent(z1, z2, t) - 0.1"),
        ("ex02-3-check", "decoupled", "lambda z1, z2, t: nt_xent(z1, z2, t)[None]"),
    ],
    "03_fixing_the_document_code": [
        ("ex03-1-check", "answers", "{'loss_a': 16, 'loss_b': 10, 'loss_c': 15}"),  # swapped
        ("ex03-1-check", "answers", "{'loss_a': 10, 'loss_b': 16, 'loss_c': 12}"),
        ("ex03-1-check", "answers", "{'loss_a': 10, 'loss_b': 11, 'loss_c': 15}"),
        ("ex03-2-check", "row_max_removed", "sim_matrix - sim_matrix.max(dim=1).values"),  # bug 11
        ("ex03-2-check", "row_max_removed", "sim_matrix - sim_matrix.max()"),  # one global max
        (
            "ex03-2-check",
            "row_max_removed",
            "sim_matrix - sim_matrix.max(dim=0, keepdim=True).values",
        ),  # the columns' max
        (
            "ex03-3-check",
            "same_view_cosine",
            "F.cosine_similarity(model(images[:64])[1], model(images[64:128])[1]).detach()",
        ),
        ("ex03-3-check", "same_view_cosine", "torch.ones(64, 1)"),  # the wrong shape
        ("ex03-5-check", "same_weights", "{'loss': False, 'similarities': False}"),
        ("ex03-5-check", "same_weights", "{'loss': True, 'similarities': True}"),
        ("ex03-5-check", "same_weights", "{'loss': False, 'similarities': True}"),
    ],
    "04_training_on_mnist": [
        (
            "ex04-1-check",
            "total_steps",
            "len(data.train_images) * CONFIG.epochs // CONFIG.batch_size",
        ),  # keeps the short batch
        ("ex04-1-check", "total_steps", "len(data.train_images) // CONFIG.batch_size"),  # 1 epoch
        (
            "ex04-1-check",
            "total_steps",
            "len(data.train_images) / CONFIG.batch_size * CONFIG.epochs",
        ),  # a float
        ("ex04-1-check", "total_steps", "CONFIG.epochs"),
        ("ex04-2-check", "lr_quarter", "CONFIG.lr * 0.75"),  # a linear decay
        ("ex04-2-check", "lr_quarter", "CONFIG.lr * math.cos(math.pi / 8)"),  # no 1/2 (1 + cos)
        ("ex04-2-check", "lr_quarter", "CONFIG.lr"),  # the peak
    ],
    "05_evaluation_tsne_knn": [
        (
            "ex05-1-check",
            "honest_t, honest, leaky",
            f"{_BY_TEST_05}, {_LEAKY_05}, {_LEAKY_05}",
        ),  # the test split chose the temperature
        (
            "ex05-1-check",
            "honest_t, honest, leaky",
            f"{_BY_VAL_05}, max({_VAL_05.format('t')} for t in TEMPERATURES), {_LEAKY_05}",
        ),  # the validation accuracy reported as the test score
        (
            "ex05-1-check",
            "honest_t, honest, leaky",
            f"{_BY_VAL_05}, {_HONEST_05.replace('z_train, y,', 'z_train[~val], y[~val],', 1)}, "
            f"{_LEAKY_05}",
        ),  # not refitted: the bank without the validation digits
        (
            "ex05-1-check",
            "honest_t, honest, leaky",
            f"{_BY_VAL_05}, {_HONEST_05}, {_LEAKY_05}".replace("z_t", "h_t"),
        ),  # h instead of z
        (
            "ex05-1-check",
            "honest_t, honest, leaky",
            f"{_BY_VAL_05}, {_HONEST_05}, {_LEAKY_05}".replace("k=20", "k=5"),
        ),  # the wrong k
        ("ex05-1-check", "honest_t, honest, leaky", f"{_BY_VAL_05}, {_HONEST_05}, {_HONEST_05}"),
        (
            "ex05-3-check",
            "agreement",
            "lambda f, l, k: neighbour_confusion(f, l, k=10).diag().mean().item()",
        ),  # k ignored
        (
            "ex05-3-check",
            "agreement",
            "lambda f, l, k: neighbour_confusion(f, l, k=k).mean().item()",
        ),  # the mean of the whole table, not of its diagonal
        (
            "ex05-3-check",
            "agreement",
            "lambda f, l, k: torch.stack([(l[nearest_neighbours(f, f, k)[1]] == l[:, None])"
            ".float().mean(1)[l == c].mean() for c in range(10)]).mean().item()",
        ),  # each point counted as its own neighbour
        (
            "ex05-3-check",
            "agreement",
            "lambda f, l, k: (l[nearest_neighbours(f, f, k + 1)[1][:, 1:]] == l[:, None])"
            ".float().mean().item()",
        ),  # the mean over points, not over classes
        (
            "ex05-3-check",
            "agreement",
            "lambda f, l, k: torch.stack([(l[(torch.cdist(f, f) + torch.diag(torch.full("
            "(len(f),), float('inf')))).topk(k, largest=False).indices] == l[:, None])"
            ".float().mean(1)[l == c].mean() for c in range(10)]).mean().item()",
        ),  # Euclidean neighbours instead of cosine ones
        (
            "ex05-3-check",
            "agreement",
            "lambda f, l, k: neighbour_confusion(f, l, k=k).diag().mean()",
        ),  # a tensor, not a float
    ],
    "06_temperature_augmentation_lab": [
        (
            "ex06-1-check",
            "translate_gap, standard_error, significant",
            f"{_gap_06((1, 2))}, {_SE_06}, {_gap_06((1, 2))} > 2 * {_SE_06}",
        ),  # seeds 1 and 2 only
        (
            "ex06-1-check",
            "translate_gap, standard_error, significant",
            f"-{_GAP_06}, {_SE_06}, -{_GAP_06} > 2 * {_SE_06}",
        ),  # all on minus no translate
        (
            "ex06-1-check",
            "translate_gap, standard_error, significant",
            f"100 * {_GAP_06}, 100 * {_SE_06}, {_GAP_06} > 2 * {_SE_06}",
        ),  # in points
        (
            "ex06-1-check",
            "translate_gap, standard_error, significant",
            f"{_GAP_06}, noise, {_GAP_06} > 2 * noise",
        ),  # the noise of one run
        (
            "ex06-1-check",
            "translate_gap, standard_error, significant",
            f"{_GAP_06}, noise / math.sqrt(3), {_GAP_06} > 2 * noise / math.sqrt(3)",
        ),  # the standard error of one mean, not of a difference
        (
            "ex06-1-check",
            "translate_gap, standard_error, significant",
            f"{_GAP_06}, noise * math.sqrt(2), {_GAP_06} > 2 * noise * math.sqrt(2)",
        ),  # one run each
        (
            "ex06-1-check",
            "translate_gap, standard_error, significant",
            f"{_GAP_06}, {_SE_06}, not {_GAP_06} > 2 * {_SE_06}",
        ),
        (
            "ex06-3-check",
            "codes_agree",
            "lambda a, b: (read_bits(a) == read_bits(b)).float().mean().item()",
        ),  # the share of bits, not of digits
        (
            "ex06-3-check",
            "codes_agree",
            "lambda a, b: (a == b).flatten(1).all(dim=1).float().mean().item()",
        ),  # the whole views compared
        (
            "ex06-3-check",
            "codes_agree",
            "lambda a, b: ((a[:, 0, 0, ::CELL] > 0.5) == (b[:, 0, 0, ::CELL] > 0.5))"
            ".all(dim=1).float().mean().item()",
        ),  # one pixel per square read
        (
            "ex06-3-check",
            "codes_agree",
            "lambda a, b: (a[:, :, :CELL] == b[:, :, :CELL]).flatten(1).all(dim=1)"
            ".float().mean().item()",
        ),  # the code's pixels compared exactly
        (
            "ex06-3-check",
            "codes_agree",
            "lambda a, b: float((read_bits(a) == read_bits(b)).all(dim=1).sum())",
        ),  # a count, not a share
        (
            "ex06-3-check",
            "codes_agree",
            "lambda a, b: (read_bits(a) == read_bits(b)).all(dim=1).float().mean()",
        ),  # a tensor, not a float
    ],
    "07_scaling_out": [
        (
            "ex07-1-check",
            "received_bytes",
            "PAPER_CORES * 2 * (PAPER_BATCH // PAPER_CORES) * PAPER_DIM * 4",
        ),  # its own views too
        (
            "ex07-1-check",
            "received_bytes",
            "(PAPER_CORES - 1) * 2 * (PAPER_BATCH // PAPER_CORES) * PAPER_DIM",
        ),  # numbers, not bytes
        (
            "ex07-1-check",
            "received_bytes",
            "(PAPER_CORES - 1) * (PAPER_BATCH // PAPER_CORES) * PAPER_DIM * 4",
        ),  # pairs, not views
        (
            "ex07-2-check",
            "partner_column",
            "lambda i, rank, n, world: i + n if i < n else i - n",
        ),  # the one-process partner
        (
            "ex07-2-check",
            "partner_column",
            "lambda i, rank, n, world: n + rank * n + i if i < n else rank * n + i - n",
        ),
        ("ex07-3-check", "batch_size, lr_scaling", "1024, 'none'"),  # the global batch x 8
        ("ex07-3-check", "batch_size, lr_scaling", "128, 'sqrt'"),  # the rate grows x sqrt(8)
        ("ex07-3-check", "batch_size, lr_scaling", "128, 'linear'"),
    ],
    "08_what_simclr_needs": [
        ("ex08-1-check", "rank_by_hand", "float(torch.linalg.matrix_rank(features))"),  # rank
        ("ex08-1-check", "rank_by_hand", "effective_rank(features, center=True)"),  # centred
        (
            "ex08-1-check",
            "rank_by_hand",
            "(lambda p: -(p * p.log()).sum().item())("
            "torch.linalg.svdvals(F.normalize(features, dim=1))"
            " / torch.linalg.svdvals(F.normalize(features, dim=1)).sum())",
        ),  # the entropy, without exp
        (
            "ex08-1-check",
            "rank_by_hand",
            "(lambda s: torch.exp(-(s / s.sum() * (s / s.sum()).log()).sum()).item())("
            "torch.linalg.svdvals(features))",
        ),  # rows not put on the unit sphere
        (
            "ex08-1-check",
            "rank_by_hand",
            "(lambda v: torch.exp(-(v / v.sum() * (v / v.sum()).log()).sum()).item())("
            "torch.linalg.svdvals(F.normalize(features, dim=1)) ** 2)",
        ),  # squared singular values (variances)
        # two answers: the wrong one beside the right one
        ("ex08-2-check", "oldest_key_steps, queue_epochs", f"QUEUE // BASE.batch_size, {EPOCHS}"),
        (
            "ex08-2-check",
            "oldest_key_steps, queue_epochs",
            f"QUEUE / (2 * BASE.batch_size), {EPOCHS}",
        ),
        (
            "ex08-2-check",
            "oldest_key_steps, queue_epochs",
            "QUEUE // (2 * BASE.batch_size), QUEUE / len(images)",
        ),
        (
            "ex08-2-check",
            "oldest_key_steps, queue_epochs",
            "QUEUE // (2 * BASE.batch_size), QUEUE / (2 * len(images))",
        ),  # the dropped short batch counted
    ],
}


def _same(a, b) -> bool:
    """Whether two answer values are equal (numbers, tuples, tensors); functions never are."""
    if callable(a) or callable(b):
        return False
    try:
        return bool(a == b) if not isinstance(a, torch.Tensor) else torch.equal(a, b)
    except (RuntimeError, TypeError, ValueError):
        return False


@pytest.mark.parametrize(
    "name, check, variable, wrong",
    [(name, *case) for name, cases in WRONG_ANSWERS.items() for case in cases],
)
def test_checks_reject_wrong_answers(student_runs, name, check, variable, wrong):
    run = student_runs(name)
    wrong_ns = copy.copy(run.namespace)
    exec(f"{variable} = {wrong}", wrong_ns)
    right_ns = copy.copy(run.namespace)
    exec(run.instructor[check.replace("-check", "-answer")], right_ns)
    names = [part.strip() for part in variable.split(",")]
    if all(_same(wrong_ns[n], right_ns[n]) for n in names):
        # a mistake that happens to give the right values on this run (e.g. the test split
        # choosing the same kNN temperature as validation): no check can reject it here
        pytest.skip(f"on this run the wrong answer gives the model answer's {variable}")
    with pytest.raises((AssertionError, TypeError, RuntimeError, ValueError)):
        exec(run.instructor[check], wrong_ns)
