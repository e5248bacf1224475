"""A finished run's figures: ``runs/<run>/results.json``, written and read only through here.

The chief worker writes it when training ends (trainer/worker.py: ``last_epoch``, ``compute``,
``test``) and the driver adds ``benchmarks`` (trainer/evaluation/benchmark.py); everything else
reads it with ``load``. Its existence is what says the run finished.
"""
from __future__ import annotations

import json
from pathlib import Path

from trainer.files import atomic_write, read_json

RESULTS_FILE = "results.json"


def path(run_dir: str | Path) -> Path:
    return Path(run_dir) / RESULTS_FILE


def save(run_dir: str | Path, results: dict) -> Path:
    """Write the run's results atomically (a reader never sees half of them)."""
    return atomic_write(path(run_dir), json.dumps(results, indent=1))


def load(run_dir: str | Path) -> dict:
    """The run's results. Raises ``FileNotFoundError`` when it has not finished (no results.json),
    ``ValueError`` when the file is not a JSON object; both one line naming the file."""
    target = path(run_dir)
    results = read_json(target, f"run {run_dir} has not finished (no {RESULTS_FILE})")
    if not isinstance(results, dict):
        raise ValueError(f"{target} holds no results (a JSON object)")
    return results


def finished(run_dir: str | Path) -> bool:
    return path(run_dir).is_file()
