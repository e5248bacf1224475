"""Forgetting a person everywhere enrolment copied them (``enroll remove-person`` calls ``forget``).

The gallery removes its own rows, crops and vectors and the name from its change log
(``store.remove_person``). Retraining and serving made copies, removed here:

- retraining exports: ``retrain/job-*/people/<name>/``, the crops a warm start trained on;
- the aligned shards ``prepare`` made of those exports (``<cache>/aligned-*/<slug>-*.tfrecord``
  and their ``.json`` summaries) and the person's entry in those export roots' manifests;
- those shards' paths in the retraining runs' ``plan.json``, and in its copy among the run's
  MLflow artefacts;
- served gallery versions: a TF-Serving version holds names and vectors, so a version without
  the person is exported first, then every version that names them is deleted (TF-Serving keeps
  serving the newest; a client asking for "latest" never finds none).

What cannot be taken back is what a model learnt from their photos: the weights of runs trained
with them. The next promoted retraining no longer sees them.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from enroll import home as layout
from trainer.files import atomic_write
from trainer.run_plan import PLAN_FILE, RunPlan


def forget(home: Path, name: str) -> dict:
    """Delete every copy of ``name`` outside the gallery under ``home``; counts of what went."""
    home = Path(home)
    exports = _retraining_exports(home, name)
    shards = _aligned_shards(home, name)
    plans = _run_plans(home, shards)
    served = _served_versions(home, name)
    return {"retraining_exports": exports, "aligned_shards": len(shards), "run_plans": plans, **served}


def _retraining_exports(home: Path, name: str) -> int:
    folders = [f for f in layout.retraining_exports(home) if f.name == name]
    for folder in folders:
        shutil.rmtree(folder)
    return len(folders)


def _retraining_data(home: Path) -> tuple[set[Path], set[str]]:
    """The caches the home's retraining runs prepared their data in, and the export folders they
    read (from the runs' plans: the paths as they were, should the home have moved since)."""
    caches, exports = set(), set()
    for plan_file in layout.runs_dir(home).glob(f"*/{PLAN_FILE}"):
        data = RunPlan.load(plan_file.parent).config.get("data", {})
        if data.get("cache_dir"):
            caches.add(Path(data["cache_dir"]))
        if data.get("extra_source"):
            exports.add(str(Path(data["extra_source"])))
    return caches, exports


def _aligned_shards(home: Path, name: str) -> set[str]:
    """Delete the person's shards made from this home's exports; returns their paths."""
    here = str(layout.retrain_dir(home).resolve()) + os.sep
    caches, exports = _retraining_data(home)
    removed = set()
    for cache in caches:
        for manifest_file in cache.glob("aligned-*/manifests/*.json"):
            manifest = json.loads(manifest_file.read_text())
            entry = manifest.get("identities", {}).get(name)
            root = str(manifest.get("root", ""))
            if entry is None or not (root.startswith(here) or root in exports):
                continue  # a user's own dataset is theirs to curate
            shard = Path(manifest["dir"]) / entry["shard"]
            for path in (shard, Path(f"{shard}.json")):
                path.unlink(missing_ok=True)
            removed.add(str(shard))
            del manifest["identities"][name]
            _write_json(manifest_file, manifest)
    return removed


def _run_plans(home: Path, shards: set[str]) -> int:
    """Drop deleted shards from the plans that list them, locally and in MLflow."""
    rewritten = 0
    for plan_file in layout.runs_dir(home).glob(f"*/{PLAN_FILE}"):
        plan = RunPlan.load(plan_file.parent)
        if not plan.drop_shards(shards):
            continue
        plan.save(plan_file.parent)  # where it lies: the home may have moved since the run was planned
        if plan.mlflow_run_id and plan.tracking_uri:
            from mlflow.tracking import MlflowClient

            MlflowClient(plan.tracking_uri).log_artifact(plan.mlflow_run_id, str(plan_file))
        rewritten += 1
    return rewritten


def served_people(version_dir: Path) -> set[str]:
    """The people a TF-Serving version can name (read from its variables, without loading it)."""
    import tensorflow as tf

    from serving.module import PEOPLE_CHECKPOINT_KEY

    reader = tf.train.load_checkpoint(str(version_dir / "variables" / "variables"))
    if PEOPLE_CHECKPOINT_KEY not in reader.get_variable_to_shape_map():
        return set()
    return {n.decode() for n in reader.get_tensor(PEOPLE_CHECKPOINT_KEY)}


def _served_or_none(version_dir: Path) -> set[str]:
    """``served_people``, or nobody for a version deleted while we look (an exporter prunes old ones)."""
    try:
        return served_people(version_dir)
    except Exception:  # tf.errors.NotFoundError and the like
        if version_dir.exists():
            raise
        return set()


def _served_versions(home: Path, name: str) -> dict:
    from enroll.serving_export import export_home
    from serving import versions

    deleted = exported = 0
    for model_dir in sorted(p for p in layout.serving_dir(home).glob("*") if p.is_dir()):
        naming = [v for v in versions.list_versions(model_dir.parent, model_dir.name)
                  if name in _served_or_none(model_dir / str(v))]
        if not naming:
            continue
        # The replacement first, so the server always has a version to serve.
        export_home(home, model_dir.name)  # raises before anything served is deleted
        exported += 1
        for version in naming:
            try:
                shutil.rmtree(model_dir / str(version))
            except FileNotFoundError:  # pruned meanwhile by a serving exporter (enroll/serving_sync.py)
                continue
            deleted += 1
    return {"served_versions_deleted": deleted, "served_versions_exported": exported}


def _write_json(path: Path, value: dict) -> None:
    atomic_write(path, json.dumps(value, indent=1))
