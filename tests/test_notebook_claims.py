"""Every number in a notebook's prose was printed, or written in code, by a cell above it.

Issue 13, item 5: prose drifts when a notebook is re-run and its outputs change. This test reads
each committed notebook (outputs included, no kernel) and, for every markdown cell, checks each
number in it against the "known" numbers above it: those printed by a code cell above (stream
text and text/plain) and those written in the source of a code cell above (hyperparameters,
comments). A number rounded in prose ("4.84" for a printed 4.844, "92%" for a printed 0.9165)
counts as known. What is not a measured claim is skipped: years, section / figure / bug numbers,
list markers, notebook numbers, code spans, LaTeX, names and formulas such as ResNet-50, 2N or
log(2N - 1), and the per-notebook constants in ALLOWED, each with its reason.
"""

import bisect
import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))

# Constants that are not measured here, by notebook (file-name prefix) -> {number: reason}.
ALLOWED: dict[str, dict[str, str]] = {
    "01": {
        "9": "a digit's class, not a count: 'the first 2, 5, 7, 6 and 9 of the data, flipped'",
    },
    "06": {
        "9": "a digit's class, not a count: 'hard negatives (a 4 against a 9)'",
    },
    "08": {
        "9": "a digit's class, not a count: 'is this a 6 or an upside-down 9?'",
        "0.999": "MoCo's momentum in the paper (He et al., 2020, sec. 3.2)",
        "65,536": "MoCo's queue in the paper, K = 65,536 (He et al., 2020)",
        "100": "SimSiam's Table 4 compares methods at 100 ImageNet epochs (Chen & He, 2021)",
    },
    "07": {
        "0.3": "the paper's linear rule, LearningRate = 0.3 x BatchSize / 256 (appendix B.1)",
        "0.075": "the paper's square-root rule, LearningRate = 0.075 x sqrt(BatchSize) (B.1)",
        "0.001": "LARS's trust coefficient eta (You et al., 2017)",
    },
}

NUMBER = re.compile(r"(?<![\w.])[-+−]?\d+(?:[,_]\d{3})*(?:\.\d+)?(?:[eE][-+]?\d+)?(%?)")
_VARIABLE = r"\d*[A-Za-zτ](?![\w])"  # N, 2N, τ, i: one letter, maybe a factor
_TERM = rf"(?:{_VARIABLE}|\d+(?:\.\d+)?)"
_OPERATOR = r"(?:\s*[−+±×/·*^]\s*| - )\(?\s*"
FORMULA = rf"(?<![\w.]){_TERM}(?:{_OPERATOR}{_TERM}\)?)+"  # 2N − 2, 1 / (2N − 1), also 8 × 512
# Spans of markdown that hold no measured claim; each is blanked (same length) before the search.
NOT_CLAIMS = [
    r"```.*?```",  # fenced code
    r"(?m:^(?: {4}|\t).*$)",  # indented code
    r"`[^`]*`",  # code spans
    r"\$\$.*?\$\$",
    r"\$[^$]*\$",  # LaTeX
    r"<[^>]+>",
    r"\]\([^)]*\)",
    r"https?://\S+",  # HTML tags, link targets, URLs
    r"(?m:^\s*(?:#+\s*)?(?:\*\*)?\d+(?:\.\d+)*[.)]\s)",  # list markers, headings, **1. Title**
    r"\*\*Rubric \(\d+ points?\)\.\*\*",  # a hand-graded answer's points, not a measurement
    r"(?m:\|\s*\d+\s*\|\s*$)",  # the last column of a table of whole numbers (points)
    r"(?m:^\|\s*\d+\s*\|)",  # the numbered first column of a table
    r"(?m:^#+ [0-9][0-9] ·)",  # the notebook's number in its title
    r"\b(?:19[5-9]\d|20[0-2]\d)[a-z]?\b",  # years (Chen et al., 2020)
    r"(?i:\b(?:sec(?:tion)?s?\.?|fig(?:ure)?s?\.?|table|eq(?:uation)?s?\.?|appendix|algorithm"
    r"|part|parts|step|steps|bugs?|fix(?:es)?|exercises?|notebooks?|chapter|row|column|columns"
    r"|view|views|anchor|anchors|rank|ranks|strength|level))"
    r"\s+[A-Z]?\d+(?:\.\d+)*(?:\s*(?:,|and|to|or|-|–)\s*[A-Z]?\d+(?:\.\d+)*)*",  # references
    r"(?:log|exp|√)\s*\([^()]*(?:\([^()]*\)[^()]*)*\)",  # formulas: log(2N − 1), exp(1/τ)
    FORMULA,  # formulas with a variable (see _blank)
    r"\b0[0-8](?:_\w+)?\b",  # notebook numbers: 04, 06_temperature...
    r"[\w.]*[A-Za-z_][\w.]*\d[\w.]*|\b\d[\w.]*[A-Za-z_]\w*",  # names: z1, float32, 2N, 28x28
    r"\b\w+-\d+\b|\b\d+-[A-Za-z]\w*",  # names: ResNet-50, top-1, 2-D, 3-layer
]
NOT_CLAIMS_RE = re.compile("|".join(f"(?:{p})" for p in NOT_CLAIMS), re.DOTALL)


def _blank(match: re.Match) -> str:
    """Spaces for a span that is no claim; arithmetic without a variable (8 × 512) is kept."""
    span = match.group()
    if re.fullmatch(FORMULA, span) and not re.search(r"[A-Za-zτ]", span):
        return span
    return " " * len(span)


BOUNDARIES = (". ", "\n\n", "\n-", "|")  # of the sentence quoted in a failure


def _parse(token: str) -> tuple[float, int]:
    """'4,000' -> (4000.0, 0); '97.30' -> (97.3, 2); '-1e-3' -> (0.001, 3). Sign ignored."""
    token = token.lstrip("-+−").replace(",", "").replace("_", "")
    mantissa, _, exponent = token.lower().partition("e")
    decimals = len(mantissa.partition(".")[2]) - int(exponent or 0)
    return abs(float(token)), max(decimals, 0)


def numbers_in_markdown(text: str) -> list[tuple[str, float, int, bool, str]]:
    """The claims of a markdown cell: (as written, value, decimals, is a percentage, sentence)."""
    blanked = NOT_CLAIMS_RE.sub(_blank, text)
    claims = []
    for match in NUMBER.finditer(blanked):
        token = match.group().rstrip("%")
        value, decimals = _parse(token)
        start = max(text.rfind(mark, 0, match.start()) for mark in BOUNDARIES) + 1
        ends = [i for i in (text.find(mark, match.end()) for mark in BOUNDARIES) if i >= 0]
        sentence = " ".join(text[start : min(ends, default=len(text)) + 1].split()).strip("| ")
        claims.append((match.group(), value, decimals, bool(match.group(1)), sentence))
    return claims


def _output_text(cell: dict) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output["output_type"] == "stream":
            parts.append("".join(output["text"]))
        elif "data" in output and "text/plain" in output["data"]:
            parts.append("".join(output["data"]["text/plain"]))
    return "\n".join(parts)


def known_numbers_above(cells: list[dict], index: int) -> list[float]:
    """Sorted values printed by, or written in, the code cells before cells[index]."""
    known = set()
    for cell in cells[:index]:
        if cell["cell_type"] != "code":
            continue
        for text in ("".join(cell["source"]), _output_text(cell)):
            known.update(_parse(match.group().rstrip("%"))[0] for match in NUMBER.finditer(text))
    return sorted(known)


def _is_known(known: list[float], value: float, decimals: int, percent: bool) -> bool:
    """True if some known number, rounded to the claim's decimals, is the claim.

    A percentage in prose also matches the fraction it stands for: 97.3% matches a printed 0.9731.
    """
    candidates = [(value, decimals)] + ([(value / 100, decimals + 2)] if percent else [])
    for claim, places in candidates:
        tolerance = 0.5 * 10.0**-places * (1 + 1e-9) + 1e-12
        i = bisect.bisect_left(known, claim - tolerance)
        if i < len(known) and known[i] <= claim + tolerance:
            return True
    return False


def unknown_claims(path: Path) -> list[str]:
    """One line per number in the markdown of `path` that no cell above it printed or wrote."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    allowed = ALLOWED.get(path.name[:2], {})
    problems = []
    for index, cell in enumerate(cells):
        if cell["cell_type"] != "markdown":
            continue
        claims = numbers_in_markdown("".join(cell["source"]))
        known = known_numbers_above(cells, index) if claims else []
        for written, value, decimals, percent, sentence in claims:
            if written.rstrip("%").lstrip("-+−") in allowed or _is_known(
                known, value, decimals, percent
            ):
                continue
            problems.append(f"{path.name} cell {index} (0-based): {written!r} in: {sentence}")
    return problems


def test_numbers_in_markdown_skips_what_is_not_a_claim():
    text = (
        "At 0.6 the loss was 4,324.5 (Chen et al., 2020, sec. 4.2, Figure 6), log(2N − 1) "
        "= 4.84 for ResNet-50 in `x = 7`, notebook 02; 2N − 2 negatives, 97.3% top-1.\n"
        "1. a list item $\\tau = 9$"
    )
    assert [(w, v, p) for w, v, _, p, _ in numbers_in_markdown(text)] == [
        ("0.6", 0.6, False),
        ("4,324.5", 4324.5, False),
        ("4.84", 4.84, False),
        ("97.3%", 97.3, True),
    ]


def test_known_numbers_are_rounded_and_read_as_percentages():
    cells = [
        {
            "cell_type": "code",
            "source": ["x = 0.5\n"],
            "outputs": [{"output_type": "stream", "text": ["loss 4.844, kNN 0.9165, top-1 55%\n"]}],
        },
        {"cell_type": "markdown", "source": []},
    ]
    known = known_numbers_above(cells, 1)
    assert _is_known(known, 4.84, 2, False) and _is_known(known, 91.7, 1, True)
    assert _is_known(known, 55, 0, True) and _is_known(known, 50, 0, True)  # 55% and x = 0.5
    assert not _is_known(known, 4.85, 2, False) and not _is_known(known, 4.324, 3, False)
    assert not _is_known(known, 91.65, 2, False), "a fraction matches only a percentage"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_every_number_in_prose_comes_from_a_cell_above(path: Path):
    problems = unknown_claims(path)
    assert not problems, (
        "numbers in markdown that no code cell above printed or wrote "
        "(print them in a cell above, or allow-list a constant in ALLOWED "
        "with its reason):\n" + "\n".join(problems)
    )
