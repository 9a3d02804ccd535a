"""Each benchmark runs at a tiny size (--quick) and writes its results; no timing is asserted."""

import csv
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` is not installed

from benchmarks import BENCHMARKS, DEFAULT  # noqa: E402
from benchmarks.__main__ import main  # noqa: E402
from benchmarks.common import interleaved, markdown_table, render, save  # noqa: E402
from benchmarks.time_to_accuracy import parse_variant  # noqa: E402


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_each_benchmark_runs_quick_and_saves(name, tmp_path):
    if name == "peer":
        pytest.importorskip("lightly", reason="make bench installs benchmarks/requirements.txt")
    module = __import__(BENCHMARKS[name], fromlist=["run"])
    result = module.run(quick=True, out_dir=tmp_path)
    assert result["name"] == name and result["quick"] and result["tables"]
    for table in result["tables"]:
        assert table["rows"] and all(len(row) == len(table["headers"]) for row in table["rows"])
    save(result, tmp_path)
    saved = json.loads((tmp_path / f"{name}.json").read_text())
    assert saved["machine"]["cores"] >= 1 and saved["machine"]["torch"]
    summary = (tmp_path / "summary.md").read_text()
    assert result["title"] in summary and "| --- |" in summary
    if name == "time_to_accuracy":
        assert (tmp_path / "time_to_accuracy.png").stat().st_size > 0
    if name == "loss":  # every implementation agrees with the float64 oracle
        for checks in (size["checks"] for size in result["data"]["sizes"].values()):
            assert all(c["loss_error"] < 1e-4 and c["grad_error"] < 1e-4 for c in checks.values())
        assert result["data"]["pml_probe"]["runs"][16]["pml"]["ok"]


def test_command_line_runs_only_what_is_asked(tmp_path, capsys):
    assert main(["--quick", "--only", "suite", "--out", str(tmp_path)]) == 0
    assert "Test suite time" in capsys.readouterr().out
    assert [p.name for p in sorted(tmp_path.iterdir())] == ["suite.json", "summary.md"]
    with pytest.raises(SystemExit):
        main(["--only", "nonsense"])
    assert "suite" not in DEFAULT  # the long one is opt-in


def test_interleaved_times_every_variant_and_tables_render():
    calls = []
    variants = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    times = interleaved(variants, 3, warmup=1)
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}
    assert calls[2:] == ["a", "b", "b", "a", "a", "b"]  # rounds rotate who goes first
    assert markdown_table(["x", "y"], [[1, 2]]).splitlines()[2] == "| 1 | 2 |"
    result = {
        "title": "T",
        "machine": {
            "cpu": "c",
            "cores": 1,
            "memory_gib": 1,
            "torch": "t",
            "torch_threads": 1,
            "python": "p",
            "load_average_1min": 0,
            "date": "d",
        },
        "quick": False,
        "targets": [{"what": "w", "value": 2.0, "goal": ">= 1", "met": True}],
        "tables": [],
        "notes": ["n"],
    }
    assert "| w | 2 | >= 1 | yes |" in render(result)


def test_parse_variant():
    assert parse_variant("width=16, encoder=mlp,temperature=0.2") == {
        "width": 16,
        "encoder": "mlp",
        "temperature": 0.2,
    }
    with pytest.raises(ValueError, match="FIELD=VALUE"):
        parse_variant("width")


def test_frontier_keeps_a_measured_row_whose_run_is_not_cached(tmp_path, monkeypatch):
    from benchmarks import frontier

    name, changes = frontier.RECIPES[0]
    row = {column: "1" for column in frontier.COLUMNS} | {"recipe": name, "cpu": ""}
    with (tmp_path / "frontier.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, [c for c in frontier.COLUMNS])
        writer.writeheader()
        writer.writerow(row)

    def must_not_train(*args, **kwargs):
        raise AssertionError("trained a recipe whose row was kept")

    monkeypatch.setattr(frontier, "score", must_not_train)
    result = frontier.run(out_dir=tmp_path, recipes=[(name, changes)], cache_dir=tmp_path / "c")
    (kept,) = result["data"]["rows"]
    assert kept["recipe"] == name and kept["cpu"] == frontier.EARLIER_CPU  # where it was measured
    with pytest.raises(AssertionError, match="trained a recipe"):  # retrain=True trains it again
        frontier.run(
            out_dir=tmp_path, recipes=[(name, changes)], cache_dir=tmp_path / "c", retrain=True
        )


def test_machine_line_names_the_cpu_and_its_flags():
    from benchmarks.common import CPU_FLAGS, cpu_flags, describe_machine

    info = {"cpu": "X", "cores": 2, "memory_gib": 1.0, "torch": "t", "torch_threads": 2}
    info |= {"python": "p", "load_average_1min": 0.1, "date": "d"}
    assert describe_machine(info).startswith("X, 2 cores")  # results saved before the flags
    assert describe_machine(info | {"cpu_flags": ["avx2", "amx_bf16"]}).startswith(
        "X (avx2 amx_bf16), 2 cores"
    )
    assert describe_machine(info | {"cpu_flags": []}).startswith("X (no AVX2), 2 cores")
    assert set(cpu_flags()) <= set(CPU_FLAGS)
