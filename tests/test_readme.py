"""README's measured numbers against their one source: a committed results file or notebook output.

A number in README that is measured (not a setting) comes from a file a command writes or from a
notebook's committed output; these tests fail when README and that source part, so that a rerun
cannot leave README quoting the old run.
"""

from __future__ import annotations

import json
import re
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pandas as pd

from simclr_teach.protocol import FEW_LABEL_METHODS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def cell_output(notebook: str, source_contains: str) -> str:
    """The text output of the one code cell of ``notebook`` whose source holds the string."""
    cells = json.loads((ROOT / "notebooks" / notebook).read_text())["cells"]
    hits = [
        c for c in cells if c["cell_type"] == "code" and source_contains in "".join(c["source"])
    ]
    assert len(hits) == 1, f"{len(hits)} cells of {notebook} hold {source_contains!r}"
    texts = []
    for output in hits[0]["outputs"]:
        text = output.get("text") or output.get("data", {}).get("text/plain", "")
        texts.append("".join(text))
    return "".join(texts)


def test_the_few_label_table_is_the_committed_study():
    few = pd.read_csv(ROOT / "notebooks/results/few_labels.csv")
    stats = few.groupby(["per_class", "method"]).test_accuracy.agg(["mean", "std"]) * 100
    rows = {}
    for line in README.splitlines():
        match = re.match(r"\| (\d+)( \(all\))? \| (.+) \|$", line)
        if match:
            cells = [c.replace("**", "").strip() for c in match.group(3).split(" | ")]
            rows[int(match.group(1))] = cells
    assert sorted(rows) == sorted(few.per_class.unique()), "one README row per budget"
    for per_class, cells in rows.items():
        expected = [
            f"{stats.loc[(per_class, m), 'mean']:.1f} ± {stats.loc[(per_class, m), 'std']:.1f}"
            for m in FEW_LABEL_METHODS
        ]
        assert cells == expected, f"{per_class} per class: README {cells}, CSV {expected}"


def test_the_evaluation_table_is_notebook_05s():
    """README's `evaluate` table and 05's table come from the same model and protocol."""
    names = {"SimCLR h": "SimCLR h", "SimCLR z": "SimCLR z", "raw pixels": "raw pixels"}
    names["random-init encoder"] = "random init"
    notebook = cell_output("05_evaluation_tsne_knn.ipynb", 'rows.append({"features": name')

    def numbers(text: str, name: str) -> list[str]:
        line = next(line for line in text.splitlines() if line.startswith(name + " "))
        return line[len(name) :].split()

    block = README.split("features               dim")[1].split("```")[0]
    for readme_name, notebook_name in names.items():
        assert numbers(block, readme_name) == numbers(notebook, notebook_name), readme_name


def test_the_default_runs_seconds_are_notebook_04s():
    printed = cell_output("04_training_on_mnist.ipynb", "training took {history.seconds[-1]")
    seconds = re.search(r"training took (\d+) s", printed).group(1)
    quoted = re.search(r"(\d+) s of training in notebook 04", README).group(1)
    assert quoted == seconds


def _figures(text: str) -> list[str]:
    return re.findall(r"\d[\d,]*(?:\.\d+)?", text)


def assert_figures_written(text: str, source: Path, skip_small: bool = True) -> None:
    """Each number of ``text`` is a figure of ``source`` (to the digits ``text`` shows, or as a
    percentage of a fraction there). Small whole numbers are left out with ``skip_small``: any
    of them would be found somewhere in a long results file."""
    written = [Decimal(x.replace(",", "")) for x in _figures(source.read_text())]
    for figure in _figures(text):
        if skip_small and "." not in figure and len(figure) < 3:  # 21x, 4 GiB: too common
            continue
        value = Decimal(figure.replace(",", ""))
        step = Decimal(1).scaleb(value.as_tuple().exponent)  # README's last digit
        shown = {w.quantize(step, ROUND_HALF_UP) for w in written}
        shown |= {(100 * w).quantize(step, ROUND_HALF_UP) for w in written}
        assert value in shown, f"README's {figure!r} ({text[:60]}...) is not in {source.name}"


def readme_paragraph(starts_with: str) -> str:
    """The one paragraph (or list item) of README that begins with ``starts_with``."""
    blocks = [b.strip() for b in re.split(r"\n\s*\n|\n(?=- )", README)]
    found = [b for b in blocks if b.lstrip("- ").startswith(starts_with)]
    assert len(found) == 1, f"{len(found)} README paragraphs begin with {starts_with!r}"
    return found[0]


def test_every_figure_of_the_benchmark_table_is_in_the_results_summary():
    """Each number in the result column of README's benchmark table is a figure that `make
    bench` wrote into benchmarks/results/summary.md, so a table that drifts fails here."""
    summary = ROOT / "benchmarks/results/summary.md"
    table = next(b for b in README.split("## Benchmarks")[1].split("\n\n") if b.startswith("| "))
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) >= 8, "README's benchmark table moved: update this test"
    for row in rows[1:]:  # the header row names the columns
        assert_figures_written(row.split(" | ")[1], summary)


def test_the_peer_paragraph_quotes_the_results_summary():
    text = readme_paragraph("lightly's example (resnet18")
    text = re.sub(r"^lightly's example \([^)]*\)", "", text)  # its settings, not measured
    assert_figures_written(
        text.split("`python -m benchmarks")[0], ROOT / "benchmarks/results/summary.md"
    )


def test_how_long_ci_takes_is_the_recorded_run():
    """README's CI times come from one clean-clone `.ci/run`, as scripts/ci_stages.py wrote
    them (benchmarks/results/ci_stages.md); every figure of the paragraph, small ones too."""
    text = readme_paragraph("**How long CI takes.**")
    body = re.sub(r"20\d\d-\d\d-\d\d", "", text)  # dates and the targets are not measured
    body = re.sub(r"\d+-minute target \(\d+ with the variant\)", "", body)
    body = body.replace("2-core", "").replace("AVX-512", "")
    assert_figures_written(body, ROOT / "benchmarks/results/ci_stages.md", skip_small=False)


def test_the_lab_sweeps_minutes_are_its_rows_seconds():
    sweep = pd.read_csv(ROOT / "notebooks/results/lab_sweep.csv")
    quoted = re.search(r"notebook 06\): ~(\d+) min of training", README).group(1)
    assert int(quoted) == round(sweep.train_seconds.sum() / 60)


def test_the_method_studys_runs_and_minutes_are_its_note():
    note = (ROOT / "notebooks/results/methods.txt").read_text()
    minutes = float(re.search(r"minutes of this call[^:]*: ([\d.]+)", note).group(1))
    runs = int(re.search(r"runs: (\d+)", note).group(1))
    quoted = re.search(r"methods on equal terms: (\d+) lab runs, ~(\d+) min", README).groups()
    assert quoted == (str(runs), str(round(minutes)))


def test_the_sentence_under_the_evaluation_table_is_its_arithmetic():
    block = README.split("features               dim")[1].split("```")[0]
    row = {
        line[:23].strip(): line[23:].split()
        for line in block.splitlines()[2:]
        if line[:1].isalpha() and "chosen" not in line
    }
    knn = float(row["SimCLR h"][5]) - float(row["raw pixels"][5])  # dim, knn@1..200, knn, linear
    probe = float(row["SimCLR h"][6]) - float(row["raw pixels"][6])
    quoted = re.search(
        r"under kNN \(([\d.]+) points\) and under a linear probe \(([\d.]+) points\)", README
    )
    assert quoted.groups() == (f"{knn:.1f}", f"{probe:.1f}")
