"""nbval plugin: the exercises graded as a student meets them, inside nbval's own run.

`make test-notebooks` and `make test-variant` load it (``-p tests.nbval_grading``); plain
``pytest --nbval-lax notebooks/`` does not. Each graded notebook is then executed once, and that
one run checks the instructor version and the student version together:

- the lesson cells and every model answer with its check (hidden tests included) run as nbval
  runs them, in the notebook's kernel;
- the kernel works in the student's folder (``assignments.generate``'s release of the notebook),
  so a relative path resolves as it does for a student;
- after each exercise's check, in the same kernel and from the variables the answer cell met:
  the student version's blank answer must raise NotImplementedError, its check must fail on it,
  and each plausible wrong answer of ``WRONG_ANSWERS`` must be rejected by the check;
- then the kernel's variables are put back as a student's kernel holds them (the blank answer
  ran, the model answer did not), so every lesson cell after it runs as it does for a student
  who has not answered. A lesson cell that reads an answer's variable fails here. In a notebook
  of ``CHAINED`` (the capstone, whose exercises build on each other) the model answer's
  variables stay instead, so each exercise is graded on top of right answers to the ones
  before it; there the student version's blank run is nbgrader's own (tests/test_capstone.py).

A check cell item fails with the list of what went wrong. The session ends with one line of
counts (``pytest_terminal_summary``).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from queue import Empty

import pytest

REPO = Path(__file__).resolve().parents[1]
MARK = "@@grading@@"  # the kernel's report starts with this
REJECTING = ("AssertionError", "TypeError", "RuntimeError", "ValueError")  # a check's "no"
TIMEOUT = 1800  # seconds for one exercise's grading in the kernel (06 reads lab runs)


# ---- plausible wrong answers, each rejected by its check -----------------------------------------

# 05, exercise 1: the kNN of SimCLR z at k = 20, scored on the validation or on the test digits
_VAL_05 = "knn_accuracy(z_train[~val], y[~val], z_train[val], y[val], k=20, temperature={})"
_TEST_05 = "knn_accuracy(z_train, y, z_test, data.test_labels, k=20, temperature={})"
_BY_VAL_05 = f"max(TEMPERATURES, key=lambda t: {_VAL_05.format('t')})"
_BY_TEST_05 = f"max(TEMPERATURES, key=lambda t: {_TEST_05.format('t')})"
_LEAKY_05 = f"max({_TEST_05.format('t')} for t in TEMPERATURES)"
_HONEST_05 = _TEST_05.format(_BY_VAL_05)


def _scores_06(ablate: bool, seeds: tuple[int, ...]) -> str:
    """06, exercise 1: the LOO kNN scores of "all on" (or "no translate") over these seeds."""
    run = f"lab_config({{'translate_ablate': {ablate}, 'seed': s}})"
    return f"[lab_run({run}, CACHE)['loo_knn'] for s in {seeds}]"


def _gap_06(seeds: tuple[int, ...]) -> str:
    """06, exercise 1: mean LOO kNN of "no translate" minus "all on" over these seeds."""
    return (
        f"(statistics.mean({_scores_06(True, seeds)}) - "
        f"statistics.mean({_scores_06(False, seeds)}))"
    )


def _pooled_06(seeds: tuple[int, ...]) -> str:
    """06, exercise 1: the pooled sd of one run over both arms' scores."""
    return (
        f"math.sqrt((statistics.variance({_scores_06(False, seeds)}) + "
        f"statistics.variance({_scores_06(True, seeds)})) / 2)"
    )


_FRESH_06 = (1, 2, 3)  # seed 0 chose "no translate": the test uses fresh seeds
_GAP_06, _POOLED_06 = _gap_06(_FRESH_06), _pooled_06(_FRESH_06)
_SE_06 = f"{_POOLED_06} * math.sqrt(2 / 3)"

# 08, exercise 2: the right number of epochs the queue holds
EPOCHS = "QUEUE / (2 * BASE.batch_size * (len(images) // BASE.batch_size))"

# 09, the capstone: each wrong answer is its model answer with one plausible mistake made in it,
# a whole definition (a multi-line source is run as it is, not assigned to the variable)
CAPSTONE = REPO / "notebooks" / "09_capstone.ipynb"


def _capstone_answer(grade_id: str) -> str:
    """The model answer of ``grade_id`` in 09, without its solution markers."""
    cell = next(
        c
        for c in json.loads(CAPSTONE.read_text())["cells"]
        if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == grade_id
    )
    lines = "".join(cell["source"]).splitlines(keepends=True)
    return "".join(
        line
        for line in lines
        if "### BEGIN SOLUTION" not in line and "### END SOLUTION" not in line
    )


def _mistake(grade_id: str, old: str, new: str) -> str:
    """The model answer of ``grade_id`` with ``old`` replaced by ``new`` (which must occur)."""
    source = _capstone_answer(grade_id)
    if old not in source:
        raise ValueError(f"{grade_id}: the model answer no longer holds {old!r}")
    return source.replace(old, new)


_BLOG_LOSS_09 = """
def nt_xent(z1, z2, temperature):  # the blog post's formula: N anchors, all 2N in the sum
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = len(z1)
    logits = z[:n] @ z.T / temperature  # (N, 2N): the anchor itself among the candidates
    return F.cross_entropy(logits, torch.arange(n, 2 * n))
"""
_ON_TEST_09 = """
def evaluate(representations, train_images, train_labels, vault, ks):  # k chosen on test digits
    val = validation_split(train_labels)
    test_images, test_labels = vault.open()
    results = {}
    for name, represent in representations.items():
        features, test_features = represent(train_images), represent(test_images)
        scores = {
            k: knn_accuracy(
                features[~val], train_labels[~val], features[val], train_labels[val], k=k
            )
            for k in ks
        }
        on_test = {
            k: knn_accuracy(features, train_labels, test_features, test_labels, k=k) for k in ks
        }
        k = max(ks, key=on_test.get)
        predicted = knn_predict(features, train_labels, test_features, k=k)
        results[name] = {"k": k, "val_accuracy": scores, "test_correct": predicted == test_labels}
    return results
"""
CHAINED = {"09_capstone"}

# notebook -> [(check grade_id, variable, wrong answer as Python source)]
WRONG_ANSWERS: dict[str, list[tuple[str, str, str]]] = {
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
        ("ex02-1-check", "my_tau", "loss_floor(TRAIN_N, 0.1)"),  # the helper: a loss, not a tau
        ("ex02-1-check", "my_tau", "0.1"),  # section 6's "near 0 below 0.1", not solved
        ("ex02-1-check", "my_tau", "TEMPERATURE"),  # the default run's tau
        (
            "ex02-1-check",
            "my_tau",
            "1 / math.log((2 * TRAIN_N - 1) / (math.exp(0.05) - 1))",
        ),  # 2N - 1 negatives: the partner counted among them
        ("ex02-1-check", "my_tau", "1 / math.log((2 * TRAIN_N - 2) / 0.05)"),  # log(1 + x) ~ x
        (
            "ex02-1-check",
            "my_tau",
            "1 / math.log((2 * N_PAIRS - 2) / (math.exp(0.05) - 1))",
        ),  # this notebook's batch, not the training run's
        ("ex02-1-check", "my_tau", "math.log((2 * TRAIN_N - 2) / (math.exp(0.05) - 1))"),  # 1 / tau
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
        ("ex03-1-check", "answers", "{'loss_a': 10, 'loss_b': 16, 'loss_c': 14}"),
        (
            "ex03-3-check",
            "mirror_cosine",
            "F.cosine_similarity(model(images[:64])[1], model(images[:64])[1]).detach()",
        ),  # the old exercise: the same picture twice, cosine 1
        ("ex03-3-check", "mirror_cosine", "torch.ones(64)"),  # "a flip changes nothing"
        (
            "ex03-3-check",
            "mirror_cosine",
            "F.cosine_similarity(embed(model, images[:64], 'z'), "
            "embed(model, images[:64].flip(-2), 'z'))",
        ),  # upside down, not mirrored
        (
            "ex03-3-check",
            "mirror_cosine",
            "F.cosine_similarity(embed(model, images[:64]), embed(model, images[:64].flip(-1)))",
        ),  # h, not z
        (
            "ex03-3-check",
            "mirror_cosine",
            "F.cosine_similarity(model(images[:64])[1], model(images[:64].flip(-1))[1]).detach()",
        ),  # train mode: BatchNorm normalises with each batch's own statistics
        (
            "ex03-3-check",
            "mirror_cosine",
            "F.cosine_similarity(embed(model, images[:64], 'z'), "
            "embed(model, images[:64].flip(-1), 'z'), dim=0)",
        ),  # the wrong axis
        ("ex03-5-check", "step_ratio", "{'loss': True, 'similarities': False}"),  # bug 14's case
        ("ex03-5-check", "step_ratio", "{'SGD': 1, 'Adam': 1}"),  # Adam's lesson carried over
        ("ex03-5-check", "step_ratio", "{'SGD': 10, 'Adam': 10}"),
        ("ex03-5-check", "step_ratio", "{'SGD': 0.1, 'Adam': 1}"),  # upside down
        ("ex03-5-check", "step_ratio", "{'SGD': 100, 'Adam': 1}"),  # squared
        ("ex03-5-check", "step_ratio", "{'SGD': 10, 'Adam': 0.1}"),
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
            f"{_gap_06((0, 1, 2))}, {_pooled_06((0, 1, 2))} * math.sqrt(2 / 3), "
            f"{_gap_06((0, 1, 2))} > 2 * {_pooled_06((0, 1, 2))} * math.sqrt(2 / 3)",
        ),  # seed 0 again: the run that picked "no translate" tests it
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
            f"{_GAP_06}, {_POOLED_06}, {_GAP_06} > 2 * {_POOLED_06}",
        ),  # the noise of one run
        (
            "ex06-1-check",
            "translate_gap, standard_error, significant",
            f"{_GAP_06}, {_POOLED_06} / math.sqrt(3), {_GAP_06} > 2 * {_POOLED_06} / math.sqrt(3)",
        ),  # the standard error of one mean, not of a difference
        (
            "ex06-1-check",
            "translate_gap, standard_error, significant",
            f"{_GAP_06}, noise * math.sqrt(2 / 3), {_GAP_06} > 2 * noise * math.sqrt(2 / 3)",
        ),  # the sweep's "all on" seeds only, not the six runs compared
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
        ("ex07-1-check", "received_bytes", "lambda cores: received"),  # 128 cores' bytes, always
        (
            "ex07-1-check",
            "received_bytes",
            "(PAPER_CORES - 1) * 2 * (PAPER_BATCH // PAPER_CORES) * PAPER_DIM * 4",
        ),  # the number for the paper's 128 cores, not a function
        (
            "ex07-1-check",
            "received_bytes",
            "lambda cores: cores * 2 * (PAPER_BATCH // cores) * PAPER_DIM * 4",
        ),  # its own views too
        (
            "ex07-1-check",
            "received_bytes",
            "lambda cores: (cores - 1) * 2 * (PAPER_BATCH // cores) * PAPER_DIM",
        ),  # numbers, not bytes
        (
            "ex07-1-check",
            "received_bytes",
            "lambda cores: (cores - 1) * (PAPER_BATCH // cores) * PAPER_DIM * 4",
        ),  # pairs, not views
        (
            "ex07-1-check",
            "received_bytes",
            "lambda cores: (cores - 1) * 2 * (PAPER_BATCH // PAPER_CORES) * PAPER_DIM * 4",
        ),  # 32 pairs per core kept: the global batch grows with the cores
        (
            "ex07-1-check",
            "received_bytes",
            "lambda cores: (cores - 1) * 2 * (PAPER_BATCH / cores) * PAPER_DIM * 4",
        ),  # a float
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
        ("ex07-3-check", "lr, lr_scaling", "TrainConfig.gpu_preset().lr, 'sqrt'"),  # sqrt(4) = 2
        ("ex07-3-check", "lr, lr_scaling", "TrainConfig.gpu_preset().lr, 'none'"),  # the old rate
        (
            "ex07-3-check",
            "lr, lr_scaling",
            "scaled_lr(TrainConfig.gpu_preset().lr, 'sqrt', 4), 'none'",
        ),  # the helper's sqrt(K), by hand
        ("ex07-3-check", "lr, lr_scaling", "TrainConfig.gpu_preset().lr * 2, 'none'"),  # linear
        (
            "ex07-3-check",
            "lr, lr_scaling",
            "TrainConfig.gpu_preset().lr * math.sqrt(2), 'sqrt'",
        ),  # scaled twice
        ("ex07-3-check", "lr, lr_scaling", "TrainConfig.gpu_preset().lr / 2, 'linear'"),
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
        # one number per momentum of section 6's search
        (
            "ex08-2-check",
            "queue_half_lives",
            "dict.fromkeys(OWN_SETTING['moco'][1], QUEUE // (2 * BASE.batch_size))",
        ),  # steps, not half-lives
        (
            "ex08-2-check",
            "queue_half_lives",
            "{m: QUEUE // (2 * BASE.batch_size) * (1 - m) for m in OWN_SETTING['moco'][1]}",
        ),  # 1 / (1 - m) steps taken for the half-life
        (
            "ex08-2-check",
            "queue_half_lives",
            "{m: m ** (QUEUE // (2 * BASE.batch_size)) for m in OWN_SETTING['moco'][1]}",
        ),  # the weight left after the span, not a number of half-lives
        (
            "ex08-2-check",
            "queue_half_lives",
            "{m: QUEUE // BASE.batch_size * math.log(m) / math.log(0.5) "
            "for m in OWN_SETTING['moco'][1]}",
        ),  # N keys per step, not 2N
        (
            "ex08-2-check",
            "queue_half_lives",
            "{m: math.log(0.5) / math.log(m) / (QUEUE // (2 * BASE.batch_size)) "
            "for m in OWN_SETTING['moco'][1]}",
        ),  # upside down
        (
            "ex08-2-check",
            "queue_half_lives",
            f"dict.fromkeys(OWN_SETTING['moco'][1], {EPOCHS})",
        ),  # the epochs of digits the queue holds
        (
            "ex08-2-check",
            "queue_half_lives",
            "{MOMENTUM: QUEUE // (2 * BASE.batch_size) * math.log(MOMENTUM) / math.log(0.5)}",
        ),  # only the momentum of section 3
    ],
    "09_capstone": [
        ("ex09-1-check", "make_views", "lambda images, generator: (images, images)"),  # no views
        (
            "ex09-1-check",
            "make_views",
            _mistake("ex09-1-answer", "(view + noise).clamp(0, 1)", "view + noise"),
        ),  # noise not clamped: pixels outside [0, 1]
        (
            "ex09-1-check",
            "make_views",
            _mistake("ex09-1-answer", "x.shape, generator=generator", "x.shape"),
        ),  # noise from the global generator: a seed does not repeat the views
        (
            "ex09-1-check",
            "make_views",
            "from simclr_teach.augment import BatchAugment\n\n"
            "def make_views(images, generator):\n"
            "    return BatchAugment()(images, generator), BatchAugment()(images, generator)\n",
        ),  # the course's own augmentation
        (
            "ex09-1-check",
            "make_views",
            _mistake("ex09-1-answer", "shift = 0.2 *", "shift = 2.0 *"),
        ),  # shifted off the image: views that no longer show their digit
        ("ex09-2-check", "nt_xent", _BLOG_LOSS_09),
        (
            "ex09-2-check",
            "nt_xent",
            "from simclr_teach.loss import nt_xent\n",
        ),
        (
            "ex09-2-check",
            "nt_xent",
            _mistake(
                "ex09-2-answer", "F.normalize(torch.cat([z1, z2]), dim=1)", "torch.cat([z1, z2])"
            ),
        ),  # dot products, not cosines
        (
            "ex09-2-check",
            "nt_xent",
            _mistake(
                "ex09-2-answer", 'logits = logits.masked_fill(self_pairs, float("-inf"))', "pass"
            ),
        ),  # the anchor in its own denominator
        (
            "ex09-2-check",
            "nt_xent",
            _mistake(
                "ex09-2-answer",
                "F.cross_entropy(logits, partner)",
                "F.cross_entropy(logits[:n], partner[:n])",
            ),
        ),  # one view's anchors
        (
            "ex09-2-check",
            "nt_xent",
            _mistake("ex09-2-answer", "z @ z.T / temperature", "(z @ z.T).detach() / temperature"),
        ),  # no gradient
        (
            "ex09-3-check",
            "train_steps",
            _mistake(
                "ex09-3-answer", "        optimizer.zero_grad()  # this batch's gradient only\n", ""
            ),
        ),  # a loop without zero_grad: gradients pile up
        (
            "ex09-3-check",
            "train_steps",
            _mistake("ex09-3-answer", "losses.append(loss.item())", "losses.append(loss)"),
        ),  # tensors, each holding its graph
        (
            "ex09-3-check",
            "train_steps",
            _mistake(
                "ex09-3-answer",
                "    model.train()  # BatchNorm uses and updates batch statistics\n",
                "",
            ),
        ),  # left in evaluation mode
        # no training; an answer over the budget of views trains the budget before it fails,
        # so tests/test_capstone.py checks that one with a stand-in that only counts
        ("ex09-4-check", "pretrain", "lambda model, images, epochs, generator: []"),
        ("ex09-5-check", "evaluate", _ON_TEST_09),
        (
            "ex09-5-check",
            "evaluate",
            _mistake(
                "ex09-5-answer",
                "choices[name] = (max(ks, key=scores.get), scores, features)",
                "choices[name] = (min(ks, key=scores.get), scores, features)",
            ),
        ),  # not the best k on validation
        (
            "ex09-5-check",
            "evaluate",
            _mistake(
                "ex09-5-answer",
                "predicted = knn_predict(features, train_labels,",
                "predicted = knn_predict(features[~val], train_labels[~val],",
            ),
        ),  # not refitted on every training digit
        (
            "ex09-6-check",
            "paired_difference",
            "lambda a, b: ((a.double().mean() - b.double().mean()).item(), "
            "math.sqrt(a.double().var() / len(a) + b.double().var() / len(b)))",
        ),  # unpaired: as if the two were tested on different digits
        (
            "ex09-6-check",
            "paired_difference",
            _mistake("ex09-6-answer", "d.std() / math.sqrt(len(d))", "d.std()"),
        ),  # the spread of one digit's difference, not of their mean
        (
            "ex09-6-check",
            "paired_difference",
            _mistake("ex09-6-answer", "d.std()", "d.std(correction=0)"),
        ),  # M, not M - 1
        (
            "ex09-6-check",
            "paired_difference",
            _mistake("ex09-6-answer", "d.mean().item()", "-d.mean().item()"),
        ),  # b - a
    ],
}

# ---- what runs in the kernel ---------------------------------------------------------------------

# Defined in the kernel once per graded notebook, under one dunder name. ``snapshot`` keeps the
# variables an answer cell meets; ``grade`` runs the student's blank answer and its check, then
# the wrong answers, prints its findings as one JSON line, and puts the variables back as a
# student's kernel holds them after the blank answer.
KERNEL_CODE = r"""
class __Grading:
    import json as _json

    def __init__(self, mark):
        self.mark, self.before = mark, None

    def snapshot(self):
        self.before = dict(get_ipython().user_ns)

    @staticmethod
    def _error(source, namespace):
        try:
            exec(compile(source, "<grading>", "exec"), namespace)
        except Exception as error:  # every failure is a "no", whatever its type
            return f"{type(error).__name__}: {str(error)[:200]}"
        return None

    @staticmethod
    def _same(a, b):
        import torch
        if callable(a) or callable(b):
            return False
        try:
            return torch.equal(a, b) if isinstance(a, torch.Tensor) else bool(a == b)
        except (RuntimeError, TypeError, ValueError):
            return False

    def grade(self, blank_answer, blank_check, check, wrong, chained):
        user_ns = get_ipython().user_ns
        instructor = dict(user_ns)  # the model answer ran, then its check
        student = dict(self.before)
        report = {"blank_answer": self._error(blank_answer, student)}
        report["blank_check"] = self._error(blank_check, dict(student))
        report["wrong"] = []
        for variable, source in wrong:
            namespace = dict(self.before)
            code = source if "\n" in source else f"{variable} = {source}"  # a def, or a value
            verdict = self._error(code, namespace)
            names = [name.strip() for name in variable.split(",")]
            if verdict is not None:
                verdict = "the wrong answer itself failed: " + verdict
            elif all(self._same(namespace[n], instructor.get(n)) for n in names):
                verdict = "same"  # this run gives the model answer's values: nothing to reject
            else:
                verdict = self._error(check, namespace)
            report["wrong"].append([variable, source, verdict])
        if not chained:  # later cells meet what a student who left it blank has
            for name in [name for name in user_ns if name not in student]:
                del user_ns[name]
            user_ns.update(student)
        print(self.mark + self._json.dumps(report))


"""


def _execute(kernel, code: str, timeout: float = TIMEOUT) -> tuple[str, str | None]:
    """Run ``code`` in nbval's kernel: (its stdout, "Name: message" of an error or None)."""
    msg_id = kernel.execute_cell_input(code, allow_stdin=False)
    kernel.await_reply(msg_id, timeout=timeout)
    text, error = [], None
    while True:
        try:
            msg = kernel.get_message(stream="iopub", timeout=60)
        except Empty:
            raise RuntimeError("the kernel sent nothing for 60 s while grading") from None
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "status" and content["execution_state"] == "idle":
            return "".join(text), error
        if kind == "stream":
            text.append(content["text"])
        elif kind == "error":
            error = f"{content['ename']}: {content['evalue']}"


def nbgrader_of(cell) -> dict:
    """A cell's nbgrader metadata ({} for a lesson cell)."""
    return cell.get("metadata", {}).get("nbgrader", {})


class Grading:
    """One graded notebook under nbval: its student version, its exercises, what was found."""

    def __init__(self, notebook: Path, released: Path):
        self.released = released
        self.student = {
            nbgrader_of(c)["grade_id"]: "".join(c["source"])
            for c in _read_cells(released)
            if nbgrader_of(c) and c["cell_type"] == "code"
        }
        self.wrong = WRONG_ANSWERS.get(notebook.stem, [])
        self.chained = notebook.stem in CHAINED
        self.started = False

    def start(self, kernel) -> None:
        """Before the first cell: the helper, and the student's folder as working directory."""
        code = f"{KERNEL_CODE}\n__grading__ = __Grading({MARK!r})\ndel __Grading\n"
        code += f"import os as __os\n__os.chdir({str(self.released.parent)!r})\ndel __os\n"
        _, error = _execute(kernel, code)
        if error:
            raise RuntimeError(f"grading could not start in the kernel: {error}")
        self.started = True

    def grade(self, kernel, check_id: str, instructor_check: str) -> dict:
        """After the model answer and its check: the blank answer and the wrong ones."""
        answer_id = check_id.replace("-check", "-answer")
        wrong = [(variable, source) for cid, variable, source in self.wrong if cid == check_id]
        call = (
            f"__grading__.grade({self.student[answer_id]!r}, {self.student[check_id]!r}, "
            f"{instructor_check!r}, {wrong!r}, {self.chained!r})"
        )
        text, error = _execute(kernel, call)
        if error:
            raise RuntimeError(f"grading {check_id} failed in the kernel: {error}")
        line = next(line for line in text.splitlines() if line.startswith(MARK))
        return json.loads(line[len(MARK) :])


def _read_cells(path: Path) -> list[dict]:
    return json.loads(Path(path).read_text())["cells"]


def problems(check_id: str, report: dict) -> list[str]:
    """What a grading report shows wrong: a blank answer that scores, a wrong answer accepted."""
    found = []
    # the blank answer raises NotImplementedError itself, or it defines a function whose body
    # does (the student version keeps the signature), and the check meets it when it calls it
    raised = report["blank_answer"] or (report["blank_check"] or "")
    if not raised.startswith("NotImplementedError"):
        found.append(
            f"{check_id}: the blank answer raised {report['blank_answer']!r}, "
            "not NotImplementedError"
        )
    if report["blank_check"] is None:
        found.append(f"{check_id}: the check passes on the blank answer")
    for variable, source, verdict in report["wrong"]:
        if verdict == "same":
            continue
        if verdict is None or not verdict.startswith(REJECTING):
            found.append(f"{check_id}: {variable} = {source} was not rejected ({verdict})")
    return found


class Session:
    """The grading state of one pytest session: released notebooks and counts."""

    def __init__(self):
        self.root: Path | None = None
        self.by_file: dict[str, Grading] = {}
        self.counts = {"notebooks": 0, "exercises": 0, "rejected": 0, "same": 0}

    def release(self, notebooks: list[Path]) -> None:
        """Release every graded notebook of the session at once (one nbgrader start-up)."""
        graded = [path for path in notebooks if any(nbgrader_of(c) for c in _read_cells(path))]
        if not graded:
            return
        sys.path.insert(0, str(REPO / "scripts"))
        import assignments  # noqa: PLC0415 - nbgrader is imported only when grading

        self.root = Path(tempfile.mkdtemp(prefix="grading-"))
        released = assignments.generate(self.root, graded)
        for notebook, student in zip(graded, released, strict=True):
            self.by_file[str(notebook)] = Grading(notebook, student)
        self.counts["notebooks"] = len(graded)

    def close(self) -> None:
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)


SESSION_KEY = pytest.StashKey[Session]()


def pytest_configure(config):
    config.stash[SESSION_KEY] = Session()


def pytest_collection_finish(session):
    files = {str(item.parent.fspath) for item in session.items if hasattr(item, "cell")}
    session.config.stash[SESSION_KEY].release([Path(path) for path in sorted(files)])


def pytest_unconfigure(config):
    if SESSION_KEY in config.stash:
        config.stash[SESSION_KEY].close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    cell = getattr(item, "cell", None)
    kernel = getattr(item.parent, "kernel", None)
    if cell is None or kernel is None:  # not an nbval cell
        return (yield)
    session = item.config.stash[SESSION_KEY]
    grading = session.by_file.get(str(item.parent.fspath))
    if grading is None:
        return (yield)
    if not grading.started:
        grading.start(kernel)
    meta = nbgrader_of(cell)
    if meta.get("solution") and cell.cell_type == "code":
        _, error = _execute(kernel, "__grading__.snapshot()")
        if error:
            raise RuntimeError(f"grading could not keep the variables: {error}")
    result = yield  # the cell itself, as nbval runs it; a failure ends here
    if meta.get("grade") and not meta.get("solution") and cell.cell_type == "code":
        report = grading.grade(kernel, meta["grade_id"], cell.source)
        session.counts["exercises"] += 1
        session.counts["same"] += sum(v == "same" for *_, v in report["wrong"])
        session.counts["rejected"] += sum(
            v is not None and v.startswith(REJECTING) for *_, v in report["wrong"]
        )
        found = problems(meta["grade_id"], report)
        if found:
            raise AssertionError("the student version's checks:\n" + "\n".join(found))
    return result


def pytest_terminal_summary(terminalreporter, config):
    if SESSION_KEY not in config.stash:
        return
    counts = config.stash[SESSION_KEY].counts
    if counts["notebooks"]:
        terminalreporter.write_line(
            f"grading (tests/nbval_grading.py): {counts['notebooks']} notebooks, "
            f"{counts['exercises']} exercises graded blank and wrong, "
            f"{counts['rejected']} wrong answers rejected, {counts['same']} equal to the model "
            "answer on this run (nothing to reject)"
        )
