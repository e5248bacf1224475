"""MLflow tracking: where runs go, and what every training run records.

Embedded default: a sqlite store ``mlflow.db`` and artefacts under ``mlartifacts/`` in the
directory the command runs from (or ``$FACENET_WORKDIR``) (``mlflow ui --backend-store-uri sqlite:///mlflow.db`` shows
them). ``MLFLOW_TRACKING_URI`` (e.g. ``http://mlflow:5000``) or ``mlflow.tracking_uri`` in the
config wins. Paths are made absolute on the driver, so Ray workers started elsewhere log to the
same store. Only the chief worker (rank 0) ever calls into this module.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path


def resolve_tracking_uri(configured: str = "") -> str:
    from trainer.config import resolve_path

    uri = configured or os.environ.get("MLFLOW_TRACKING_URI", "") or "sqlite:///mlflow.db"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(resolve_path(uri[len('sqlite:///'):])).resolve()}"
    return uri


def default_artifact_root(tracking_uri: str) -> str | None:
    """A local artefact folder beside a sqlite store; servers choose their own."""
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
    return None


def start(tracking_uri: str, experiment: str, run_name: str, run_id: str | None = None,
          parent_run_id: str | None = None):
    """Start (or resume, given ``run_id``) an MLflow run; returns the active run."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        mlflow.create_experiment(experiment, artifact_location=default_artifact_root(tracking_uri))
    mlflow.set_experiment(experiment)
    if run_id:
        return mlflow.start_run(run_id=run_id)
    tags = {"mlflow.parentRunId": parent_run_id} if parent_run_id else None
    return mlflow.start_run(run_name=run_name, tags=tags)


def parent_run(tracking_uri: str, experiment: str, name: str, params: dict | None = None) -> str:
    """A finished MLflow run that groups N, N_prim and N_adpt (or any runs to compare) as its
    children; returns its id. The one place such groups are made (warm_vs_full, its continual rounds
    and the lifecycle), so the UI's Compare page finds them alike."""
    import mlflow

    with start(tracking_uri, experiment, name) as run:
        if params:
            mlflow.log_params(params)
        return run.info.run_id


def adopt(tracking_uri: str, parent_run_id: str, run_ids) -> None:
    """Nest runs made before their group existed (e.g. the lifecycle's base run N) under it."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    for run_id in run_ids:
        client.set_tag(run_id, "mlflow.parentRunId", parent_run_id)


def git_commit(directory: str | Path = ".") -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=directory,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
