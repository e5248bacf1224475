"""The run plan: what a training run trains on, written once as ``runs/<run>/plan.json``.

``trainer.plan.plan_run`` builds it on the driver; the workers, evaluation, enrolment and the
experiments read it back. ``RunPlan`` owns the file: ``save`` writes it atomically (a reader never
sees half a plan, e.g. ``enroll remove-person`` rewriting it while a job reads it), ``load`` reads
it with one-line errors naming the file. Ray's ``train_loop_config`` must be a plain dict, so the
plan crosses that boundary as ``to_dict()`` and the worker rebuilds it with ``from_dict``.

Plans written by older versions still load: a missing optional key takes its default and a key
this version no longer knows (e.g. ``retrain_job``) is ignored.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from trainer.files import atomic_write, read_json
from trainer.splits import Split

PLAN_FILE = "plan.json"


@dataclass
class Shards:
    """The aligned-shard paths (one per identity) of each split."""

    train: list[str] = field(default_factory=list)
    val: list[str] = field(default_factory=list)
    test: list[str] = field(default_factory=list)


@dataclass
class RunPlan:
    run_dir: str  # absolute, as planned; a run directory moved since still loads (see ``load``)
    config: dict  # the resolved Config as a dict; parsed by trainer.config, which owns its keys
    image_size: int  # aligned crop side the model is built for
    face_template: str = "arcface"  # the framing of its crops (trainer/align.py TEMPLATES); older plans: arcface
    run_name: str = ""
    manifest: str = ""  # the data.source manifest the shards came from
    data_fingerprint: str = ""
    data_counts: dict = field(default_factory=dict)  # data.source's preparation counts
    source_counts: dict = field(default_factory=dict)  # per source ("" = data.source), for the record
    split: Split = field(default_factory=Split)
    shards: Shards = field(default_factory=Shards)
    # train_* are parallel to shards.train: the pipeline's draw weights and photo counts per identity.
    train_weights: list[float] = field(default_factory=list)
    train_unlabeled: list[int] = field(default_factory=list)  # indices of shards without trusted labels
    train_photos: list[int] = field(default_factory=list)
    train_images: int = 0
    eval_sets: dict[str, list[str]] = field(default_factory=dict)  # evaluated after every epoch as <name>_*
    init_from: str = ""  # warm start: the checkpoint the weights come from ("" = from scratch)
    gallery_version: int = 0  # the gallery change a retraining's data reflects (enroll.model_versions.register_run)
    # Filled in by trainer.plan.open_tracking on the driver before training:
    tracking_uri: str = ""
    mlflow_run_id: str = ""
    parent_run_id: str = ""  # an MLflow run to nest this one under ("" = none)

    def drop_shards(self, gone: set[str]) -> bool:
        """Forget the shards ``gone`` (a removed person's) in every split and evaluation set, keeping
        the parallel ``train_*`` lists and the unlabeled indices in step; True when any was listed."""
        kept = [i for i, path in enumerate(self.shards.train) if path not in gone]
        listed = {*self.shards.train, *self.shards.val, *self.shards.test,
                  *(path for paths in self.eval_sets.values() for path in paths)}
        if not gone & listed:
            return False

        def parallel(values: list) -> list:
            return [values[i] for i in kept] if len(values) == len(self.shards.train) else values

        new_index = {old: new for new, old in enumerate(kept)}
        self.train_weights, self.train_photos = parallel(self.train_weights), parallel(self.train_photos)
        self.train_unlabeled = [new_index[i] for i in self.train_unlabeled if i in new_index]
        self.shards = Shards(*([p for p in paths if p not in gone]
                               for paths in (self.shards.train, self.shards.val, self.shards.test)))
        self.eval_sets = {name: [p for p in paths if p not in gone] for name, paths in self.eval_sets.items()}
        return True

    def to_dict(self) -> dict:
        """The JSON-able form, as written to plan.json (and passed to Ray workers)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data) -> RunPlan:
        """Rebuild a plan from ``to_dict()``'s form; ``ValueError`` when it cannot be one."""
        if not isinstance(data, dict):
            raise ValueError(f"a run plan is a JSON object, not {type(data).__name__}")
        if not isinstance(data.get("config"), dict):
            raise ValueError("the run plan holds no config")
        if data.get("image_size") is None:
            raise ValueError("the run plan holds no image_size")
        known = {f.name: f for f in fields(cls)}
        # None (e.g. an old plan's "parent_run_id": null) means "not set", as a missing key does.
        values = {k: v for k, v in data.items() if k in known and v is not None}
        values.setdefault("run_dir", "")
        try:
            values["image_size"] = int(values["image_size"])
            if "split" in values:
                values["split"] = Split(**_only(values["split"], Split))
            if "shards" in values:
                values["shards"] = Shards(**_only(values["shards"], Shards))
            return cls(**values)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"the run plan is malformed: {exc}") from None

    def save(self, run_dir: str | Path | None = None) -> Path:
        """Write ``<run_dir>/plan.json`` (default: the plan's own run directory) atomically."""
        path = Path(run_dir if run_dir is not None else self.run_dir) / PLAN_FILE
        return atomic_write(path, json.dumps(self.to_dict(), indent=1))  # readers never see a mix

    @classmethod
    def load(cls, run_dir: str | Path) -> RunPlan:
        """The plan of the run directory ``run_dir``. Raises ``FileNotFoundError`` when it has none,
        ``ValueError`` when its plan.json is not one; both one line naming the file."""
        path = Path(run_dir) / PLAN_FILE
        try:
            data = read_json(path, f"not a run directory (no {PLAN_FILE}): {run_dir}")
        except ValueError as exc:
            raise ValueError(f"not a run directory ({exc})") from None
        try:
            plan = cls.from_dict(data)
        except ValueError as exc:
            raise ValueError(f"not a run directory ({path}: {exc})") from None
        plan.run_dir = plan.run_dir or str(Path(run_dir).resolve())  # hand-made plans may omit it
        return plan


def _only(value, kind) -> dict:
    """The keys of ``value`` that the dataclass ``kind`` knows (older or newer files may hold others)."""
    if not isinstance(value, dict):
        raise ValueError(f"{kind.__name__.lower()} is not a JSON object")
    names = {f.name for f in fields(kind)}
    return {k: v for k, v in value.items() if k in names}
