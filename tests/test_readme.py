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


def test_every_figure_of_the_benchmark_table_is_in_the_results_summary():
    """Each number in the result column of README's benchmark table is a figure that `make
    bench` wrote into benchmarks/results/summary.md (to the digits README shows, or as a
    percentage of a fraction there), so a table that drifts from its source fails here. Small
    whole numbers are left out: any of them would be found somewhere in the summary."""
    summary = (ROOT / "benchmarks/results/summary.md").read_text()
    written = [Decimal(x.replace(",", "")) for x in _figures(summary)]
    table = next(b for b in README.split("## Benchmarks")[1].split("\n\n") if b.startswith("| "))
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) >= 8, "README's benchmark table moved: update this test"
    for row in rows[1:]:  # the header row names the columns
        result = row.split(" | ")[1]
        for figure in _figures(result):
            if "." not in figure and len(figure) < 3:  # 21x, 4 GiB: too common to place
                continue
            value = Decimal(figure.replace(",", ""))
            step = Decimal(1).scaleb(value.as_tuple().exponent)  # README's last digit
            shown = {w.quantize(step, ROUND_HALF_UP) for w in written}
            shown |= {(100 * w).quantize(step, ROUND_HALF_UP) for w in written}
            assert value in shown, (
                f"README's {figure!r} ({result[:60]}...) is not in benchmarks/results/summary.md"
            )
