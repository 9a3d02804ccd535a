"""Speed and accuracy measurements of simclr_teach: `python -m benchmarks` (or `make bench`).

Each module measures one item of issue #6 and has `run(quick, out_dir) -> dict`; the harness in
`common` times variants side by side and writes `results/<name>.json` and `results/summary.md`.
See benchmarks/README.md.
"""

# name -> module; `python -m benchmarks --only NAME,...` picks some. "suite" and "frontier"
# (long) are not run by default.
BENCHMARKS = {
    "augment": "benchmarks.augment_throughput",
    "loss": "benchmarks.loss_speed",
    "train": "benchmarks.train_throughput",
    "time_to_accuracy": "benchmarks.time_to_accuracy",
    "suite": "benchmarks.suite_time",
    "frontier": "benchmarks.frontier",
    "busy_cpu": "benchmarks.busy_cpu",
    "peer": "benchmarks.peer_lightly",
    "default_run": "benchmarks.default_run",
}
DEFAULT = ["augment", "loss", "train", "time_to_accuracy", "busy_cpu", "peer", "default_run"]
