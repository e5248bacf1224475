"""Submitting warm-start retraining as a Ray job, and the policy that triggers it.

``enroll retrain`` / ``enroll add-person --retrain`` / the ``retrain_after_changes`` policy all
call ``submit_retrain``: it records a job row, then submits ``python -m enroll.retrain_job`` with
Ray's Job Submission SDK (the same path as ``ray job submit``) to ``ray_address`` (enroll.yaml),
else ``$RAY_ADDRESS``, else a local Ray head on 127.0.0.1:8265, started here if none runs (it keeps
running for later jobs; ``ray stop`` ends it). The job itself is ``enroll/retrain_job.py``.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from enroll.gallery import GalleryError
from enroll.models import production_meta, resolve_home

LOCAL_DASHBOARD = "http://127.0.0.1:8265"
ACTIVE = ("submitted", "running")


def _auth_headers() -> dict | None:
    """Ray >= 2.59 protects clusters with a bearer token ($RAY_AUTH_TOKEN, else ~/.ray/auth_token).
    It is sent explicitly: a process that already runs its own Ray may have settled on sending none."""
    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    token = os.environ.get("RAY_AUTH_TOKEN") or (token_file.read_text().strip() if token_file.exists() else "")
    return {"Authorization": f"Bearer {token}"} if token else None


def _job_client(address: str):
    from ray.job_submission import JobSubmissionClient

    if address:
        return JobSubmissionClient(address, headers=_auth_headers()), False
    try:
        return JobSubmissionClient(LOCAL_DASHBOARD, headers=_auth_headers()), False
    except Exception:  # noqa: BLE001 - no local head yet: start one
        ray = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
        # Any local Ray (e.g. this process's own, for data preparation) holds the dashboard agent's
        # default port; the head's job agent needs one of its own.
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            agent_port = probe.getsockname()[1]
        subprocess.run([ray, "start", "--head", "--dashboard-host", "127.0.0.1", "--disable-usage-stats",
                        "--dashboard-agent-listen-port", str(agent_port)],
                       check=True, capture_output=True, timeout=120)
        last = ""
        for _ in range(60):
            try:
                return JobSubmissionClient(LOCAL_DASHBOARD, headers=_auth_headers()), True
            except Exception as exc:  # noqa: BLE001
                last = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
                time.sleep(1)
        raise GalleryError(f"started a local Ray head but its dashboard at {LOCAL_DASHBOARD} does not answer ({last})")


def submit_retrain(home=None, reason: str = "", gallery=None, address: str = "") -> tuple[int, str, str]:
    """Submit a warm-start retraining; returns (job id, Ray submission id, message)."""
    from enroll.settings import load_settings
    from enroll.store import SqliteGallery

    home = resolve_home(home)
    own = gallery is None
    gallery = gallery if gallery is not None else SqliteGallery(home)
    try:
        version, meta = production_meta(home)
        pending = gallery.changes_since(meta.get("gallery_version", 0))
        address = address or load_settings(home).ray_address or os.environ.get("RAY_ADDRESS", "")
        job_id = gallery.add_job("retrain", {"reason": reason, "production_version": version,
                                             "class_changes": len(pending)}, state="submitted")
        try:
            client, started = _job_client(address if address.startswith("http") else "")
            submission = f"facenet-retrain-{job_id}-{uuid.uuid4().hex[:6]}"
            python = sys.executable if not address else "python"
            # Submitting can race the dashboard agent's start-up on a fresh head: retry briefly.
            for attempt in range(30):
                try:
                    client.submit_job(
                        entrypoint=f"{python} -m enroll.retrain_job --home {home} --job {job_id}",
                        submission_id=submission,
                        # No TF_USE_LEGACY_KERAS here: importing enroll sets it, and the driver's
                        # ray.init adds it for workers (Ray refuses a key set twice).
                        runtime_env={"env_vars": {"FACENET_HOME": str(home), "FACENET_WORKDIR": os.getcwd()}})
                    break
                except RuntimeError as exc:
                    if "No available agent" not in str(exc) or attempt == 29:
                        raise
                    time.sleep(1)
        except Exception as exc:  # noqa: BLE001 - any submission failure leaves a failed job, nothing else
            gallery.update_job(job_id, "failed", f"submission failed: {(str(exc).splitlines() or [''])[0][:200]}")
            raise GalleryError(f"could not submit the retraining job: {(str(exc).splitlines() or [''])[0][:200]}") from None
        gallery.update_job(job_id, "submitted", f"ray job {submission}")
    finally:
        if own:
            gallery.close()
    where = "a local Ray head started for it" if started else (address or LOCAL_DASHBOARD)
    return job_id, submission, (f"warm-start retraining submitted as job {job_id} (Ray job {submission} on {where}; "
                                f"{len(pending)} class changes since model {version}); follow it with `enroll status`")


def maybe_retrain(home, gallery, reason: str):
    """The ``retrain_after_changes`` policy: submit when enough changes accumulated and no job is active."""
    from enroll.settings import load_settings

    k = load_settings(home).retrain_after_changes
    if k <= 0 or any(j.kind == "retrain" and j.state in ACTIVE for j in gallery.jobs()):
        return None
    _, meta = production_meta(home)
    if len(gallery.changes_since(meta.get("gallery_version", 0))) < k:
        return None
    return submit_retrain(home, reason, gallery)


def wait_for(home, job_id: int, timeout: float = 3600, poll: float = 2.0):
    """Block until the job row reaches a final state; returns the Job."""
    from enroll.store import SqliteGallery

    deadline = time.time() + timeout
    with_gallery = SqliteGallery(resolve_home(home))
    try:
        while True:
            job = next(j for j in with_gallery.jobs() if j.id == job_id)
            if job.state not in ACTIVE or time.time() > deadline:
                return job
            time.sleep(poll)
    finally:
        with_gallery.close()


def export_people(gallery, out_dir) -> tuple[int, dict[str, int]]:
    """Write every enrolled person's aligned crops as ``out_dir/<name>/<face id>.png``, the
    identity-folder form ``data.extra_source`` reads; returns (gallery version, faces per person).

    The version is read first: a change racing the export has a later sequence number, so it is
    counted as not yet learnt even if the export happened to include it. Crops are stored at the
    size of the production model of their enrolment; prepare resizes them to the training size.
    """
    version, written = gallery.gallery_version(), {}
    for name, _ in gallery.list_people():
        person = gallery.get(name)
        if person is None:
            continue  # removed since the listing
        folder = Path(out_dir) / name
        folder.mkdir(parents=True, exist_ok=True)
        written[name] = 0
        for face in person.faces:
            try:
                (folder / f"{face.id:08d}.png").write_bytes(gallery.crop(face.sha256))
                written[name] += 1
            except GalleryError:
                continue  # removed mid-export
    return version, written
