"""List-valued config keys: ``data.sources`` (more photo folders) and ``eval.benchmarks``.

Each item is a small dataclass checked like a config section, with its position in messages,
e.g. ``unknown config key 'data.sources[0].alignn'``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trainer.config_fields import ConfigError, apply_fields


@dataclass
class SourceConfig:
    """One more identity folder (or ``tfds:<name>``) trained on beside ``data.source``."""

    path: str = ""
    name: str = ""  # namespace of its identities ("<name>/<identity>"); "" = the folder's name
    # detect: MTCNN + alignment, photos without a face dropped | prealigned: square aligned crops,
    # MTCNN where it finds the face, else a plain resize | resized: resize only
    align: str = "detect"
    max_per_identity: int = 0  # 0 = every photo; otherwise the first N (sorted) of each identity
    weight: float = 1.0  # how often its identities are drawn into a P×K batch, relative to data.source's
    split: bool = False  # False: every identity trains; True: split into train/val/test like data.source
    # False: the folder names are no labels to trust (or photos of anyone): its photos only teach the
    # distillation term, and the triplet loss sees each as a person of its own (needs train.teacher)
    labeled: bool = True


@dataclass
class BenchmarkConfig:
    """A benchmark in LFW's format every finished run is also evaluated on (trainer/evaluation/benchmark.py)."""

    pairs: str = ""  # LFW's pairs.txt format
    images: str = ""  # <images>/<name>/<photo>
    name: str = ""  # "" = the pairs file's stem
    numbering: str = "auto"  # auto | lfw | sorted: what a pair's image index means


_SOURCE_ALIGN = ("detect", "prealigned", "resized")


def parse_sources(raw: Any) -> list[SourceConfig]:
    """``data.sources``: a list of mappings (or of plain paths), each checked like a section."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError(f"config key 'data.sources' must be a list of sources, got {raw!r}")
    sources = []
    for i, item in enumerate(raw):
        source = SourceConfig()
        label = f"data.sources[{i}]"
        if isinstance(item, str):
            item = {"path": item}
        if not isinstance(item, dict):
            raise ConfigError(f"config key '{label}' must be a mapping with a path, got {item!r}")
        apply_fields(source, item, lambda key: f"config key '{label}.{key}'")
        if not source.path:
            raise ConfigError(f"config key '{label}.path' is missing: give an identity folder or tfds:<name>")
        if source.align not in _SOURCE_ALIGN:
            raise ConfigError(f"config key '{label}.align' must be one of {', '.join(_SOURCE_ALIGN)}, got {source.align!r}")
        if not source.weight > 0 or source.max_per_identity < 0:
            raise ConfigError(f"config key '{label}': weight must be > 0 and max_per_identity >= 0")
        sources.append(source)
    names = [source_name(s) for s in sources]
    if len(set(names)) != len(names):
        raise ConfigError(f"config key 'data.sources': two sources share the name {max(names, key=names.count)!r}; "
                          f"set name: to tell them apart")
    return sources


def parse_benchmarks(raw: Any) -> list[BenchmarkConfig]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        raise ConfigError(f"config key 'eval.benchmarks' must be a list of {{pairs, images}} mappings, got {raw!r}")
    benchmarks = []
    for i, item in enumerate(raw):
        bench = BenchmarkConfig()
        apply_fields(bench, item, lambda key: f"config key 'eval.benchmarks[{i}].{key}'")
        if not bench.pairs or not bench.images:
            raise ConfigError(f"config key 'eval.benchmarks[{i}]' needs both pairs and images")
        if bench.numbering not in ("auto", "lfw", "sorted"):
            raise ConfigError(f"config key 'eval.benchmarks[{i}].numbering' must be one of auto, lfw, sorted")
        benchmarks.append(bench)
    return benchmarks


def source_name(source: SourceConfig) -> str:
    """The namespace of a source's identities: its ``name``, else the last part of its path."""
    return source.name or source.path.rstrip("/").split("/")[-1].removeprefix("tfds:") or "source"


