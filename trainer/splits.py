"""Split a prepared dataset by identity: no person appears in two of train / validation / test.

The split depends only on the sorted identity names, the fractions and the seed, so it is
reproducible; it is written to ``splits.json`` in every run directory and logged to MLflow.
Identities with fewer than ``min_images`` aligned faces cannot form a positive pair and are
excluded (and counted), never silently dropped.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Split:
    train: list[str] = field(default_factory=list)
    val: list[str] = field(default_factory=list)
    test: list[str] = field(default_factory=list)
    excluded_too_few_images: list[str] = field(default_factory=list)
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def split_identities(aligned_counts: dict[str, int], val_fraction: float, test_fraction: float,
                     seed: int = 0, min_images: int = 2) -> Split:
    """Deterministic identity split; each non-empty fraction gets at least 2 identities when possible."""
    usable = sorted(name for name, n in aligned_counts.items() if n >= min_images)
    excluded = sorted(name for name, n in aligned_counts.items() if n < min_images)
    order = [usable[i] for i in np.random.default_rng(seed).permutation(len(usable))]
    n_val = _count(len(order), val_fraction)
    n_test = _count(len(order), test_fraction)
    test, val, train = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
    return Split(sorted(train), sorted(val), sorted(test), excluded, seed)


def _count(n: int, fraction: float) -> int:
    if fraction <= 0:
        return 0
    return min(max(2, int(round(n * fraction))), max(0, n - 2))


def shard_paths(manifest: dict, identities: list[str]) -> list[str]:
    root = Path(manifest["dir"])
    return [str(root / manifest["identities"][name]["shard"]) for name in identities]
