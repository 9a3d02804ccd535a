"""scripts/notebook_times.py: the README's table of notebook run times (generated, not typed)."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "notebook_times.py"


@pytest.fixture(scope="module")
def times():
    spec = importlib.util.spec_from_file_location("notebook_times", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ROWS = [
    {
        "notebook": "00_setup.ipynb",
        "cold_seconds": "7",
        "warm_seconds": "6",
        "cpu": "X",
        "load_at_start": "0.10",
        "date": "2026-12-05 18:00 UTC",
    },
    {
        "notebook": "04_training_on_mnist.ipynb",
        "cold_seconds": "185",
        "warm_seconds": "61",
        "cpu": "X",
        "load_at_start": "0.10",
        "date": "2026-12-05 18:00 UTC",
    },
]


def test_table_gives_minutes_and_the_machine(times):
    text = times.table(ROWS)
    assert "| 04_training_on_mnist.ipynb | 3:05 | 1:01 |" in text
    assert "| 00_setup.ipynb | 0:07 | 0:06 |" in text
    assert "on X (load average 0.10 at start), 2026-12-05 18:00 UTC" in text


def test_readme_block_is_replaced_between_its_markers(times, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{times.MARK}\nold table\n{times.MARK}\nafter\n")
    times.update_readme("new table", readme)
    assert readme.read_text() == f"before\n{times.MARK}\nnew table\n{times.MARK}\nafter\n"
    readme.write_text("no markers\n")
    with pytest.raises(SystemExit, match="needs exactly two"):
        times.update_readme("new table", readme)


def test_readme_has_the_generated_table(times):
    text = (SCRIPT.parents[1] / "README.md").read_text()
    assert text.count(times.MARK) == 2
    block = text.split(times.MARK)[1]
    csv_rows = (SCRIPT.parents[1] / "notebooks/results/notebook_times.csv").read_text()
    for line in csv_rows.splitlines()[1:]:
        assert f"| {line.split(',')[0]} |" in block  # every measured notebook is in README
