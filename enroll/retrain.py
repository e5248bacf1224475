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

from enroll.gallery import Conflict, GalleryError, NotFound, Unavailable
from enroll.home import ENV as HOME_ENV, resolve_home
from enroll.model_versions import production_meta

LOCAL_DASHBOARD = "http://127.0.0.1:8265"
ACTIVE = ("submitted", "running")


def _auth_headers() -> dict | None:
    """Ray >= 2.59 protects clusters with a bearer token ($RAY_AUTH_TOKEN, else ~/.ray/auth_token).
    It is sent explicitly: a process that already runs its own Ray may have settled on sending none."""
    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    token = os.environ.get("RAY_AUTH_TOKEN") or (token_file.read_text().strip() if token_file.exists() else "")
    return {"Authorization": f"Bearer {token}"} if token else None


def _job_client(address: str, start_head: bool = True, env: dict[str, str] | None = None):
    from ray.job_submission import JobSubmissionClient

    if address:
        return JobSubmissionClient(address, headers=_auth_headers()), False
    try:
        return JobSubmissionClient(LOCAL_DASHBOARD, headers=_auth_headers()), False
    except Exception:  # noqa: BLE001 - no local head yet: start one
        if not start_head:  # a server does not start clusters from a request
            raise Unavailable(f"no Ray cluster answers at {LOCAL_DASHBOARD}: set ray_address in enroll.yaml "
                              "or $RAY_ADDRESS, or start one with `ray start --head`") from None
        ray = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
        # Any local Ray (e.g. this process's own, for data preparation) holds the dashboard agent's
        # default port; the head's job agent needs one of its own.
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            agent_port = probe.getsockname()[1]
        subprocess.run([ray, "start", "--head", "--dashboard-host", "127.0.0.1", "--disable-usage-stats",
                        "--dashboard-agent-listen-port", str(agent_port)],
                       check=True, capture_output=True, timeout=120, env={**os.environ, **(env or {})})
        last = ""
        for _ in range(60):
            try:
                return JobSubmissionClient(LOCAL_DASHBOARD, headers=_auth_headers()), True
            except Exception as exc:  # noqa: BLE001
                last = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
                time.sleep(1)
        raise Unavailable(f"started a local Ray head but its dashboard at {LOCAL_DASHBOARD} does not answer ({last})")


def submit_retrain(home=None, reason: str = "", gallery=None, address: str = "",
                   start_head: bool = True) -> tuple[int, str, str]:
    """Submit a warm-start retraining; returns (job id, Ray submission id, message). Without an
    address and a local head, one is started, unless ``start_head`` is False (the API's case)."""
    from enroll.backends import backend_env, head_env, open_gallery
    from enroll.settings import load_settings

    home = resolve_home(home)
    own = gallery is None
    gallery = gallery if gallery is not None else open_gallery(home, create=True)
    try:
        version, meta = production_meta(home)
        pending = gallery.changes_since(meta.get("gallery_version", 0))
        address = address or load_settings(home).ray_address or os.environ.get("RAY_ADDRESS", "")
        dashboard = address if address.startswith("http") else LOCAL_DASHBOARD
        job_id = gallery.add_job("retrain", {"reason": reason, "production_version": version,
                                             "class_changes": len(pending), "ray_address": dashboard,
                                             "token": uuid.uuid4().hex[:6]}, state="submitted")
        try:
            client, started = _job_client(address if address.startswith("http") else "", start_head, head_env())
            submission = submission_id(next(j for j in gallery.jobs() if j.id == job_id))
            python = sys.executable if not address else "python"
            # Submitting can race the dashboard agent's start-up on a fresh head: retry briefly.
            for attempt in range(30):
                try:
                    client.submit_job(
                        entrypoint=f"{python} -m enroll.retrain_job --home {home} --job {job_id}",
                        submission_id=submission,
                        # No TF_USE_LEGACY_KERAS here: importing enroll sets it, and the driver's
                        # ray.init adds it for workers (Ray refuses a key set twice).
                        runtime_env={"env_vars": {HOME_ENV: str(home), "FACENET_WORKDIR": os.getcwd(),
                                                 **backend_env()}})
                    break
                except RuntimeError as exc:
                    if "No available agent" not in str(exc) or attempt == 29:
                        raise
                    time.sleep(1)
        except Exception as exc:  # noqa: BLE001 - any submission failure leaves a failed job, nothing else
            gallery.update_job(job_id, "failed", f"submission failed: {(str(exc).splitlines() or [''])[0][:200]}")
            raise Unavailable(f"could not submit the retraining job: {(str(exc).splitlines() or [''])[0][:200]}") from None
        gallery.update_job(job_id, "submitted", f"ray job {submission}")
    finally:
        if own:
            gallery.close()
    where = "a local Ray head started for it" if started else (address or LOCAL_DASHBOARD)
    return job_id, submission, (f"warm-start retraining submitted as job {job_id} (Ray job {submission} on {where}; "
                                f"{len(pending)} class changes since model {version}); follow it with `enroll status`")


def maybe_retrain(home, gallery, reason: str, start_head: bool = True):
    """The ``retrain_after_changes`` policy: submit when enough changes accumulated and no job is active."""
    from enroll.settings import load_settings

    k = load_settings(home).retrain_after_changes
    if k > 0:
        reconcile(home, gallery)  # a job killed on Ray must not hold the policy off for ever
    if k <= 0 or any(j.kind == "retrain" and j.state in ACTIVE for j in gallery.jobs()):
        return None
    _, meta = production_meta(home)
    if len(gallery.changes_since(meta.get("gallery_version", 0))) < k:
        return None
    return submit_retrain(home, reason, gallery, start_head=start_head)


def submission_id(job) -> str:
    return f"facenet-retrain-{job.id}-{job.params['token']}"


def reconcile(home, gallery) -> list[int]:
    """Give job rows that still say submitted/running the final state their Ray job reached.

    A job records its own end, except when it never gets to: stopped (``enroll retrain --cancel``,
    ``ray job stop``: Ray kills the driver) or its driver killed. Ray knows; ask it. Returns the
    ids of the rows changed. A cluster that does not answer leaves the rows as they are.
    """
    changed = []
    for job in gallery.jobs():
        if job.kind != "retrain" or job.state not in ACTIVE or "token" not in job.params:
            continue
        try:
            info = _client_for(job).get_job_info(submission_id(job))
        except Exception:  # noqa: BLE001 - unreachable cluster or unknown job: nothing to learn
            continue
        if not info.status.is_terminal():
            continue
        job = next(j for j in gallery.jobs() if j.id == job.id)  # the driver has exited: its last word is in
        if job.state not in ACTIVE:
            continue
        if _promoted_by(home, job.id) or info.status.value == "STOPPED":
            state, detail = stopped_state(home, job.id)
        else:
            message = (str(info.message or "").strip().splitlines() or ["no message"])[-1][:200]
            state, detail = "failed", f"Ray job {info.status.value} without recording a result: {message}"
        gallery.update_job(job.id, state, detail)
        changed.append(job.id)
    return changed


def cancel_retrain(home, gallery, job_id: int, timeout: float = 120):
    """Stop a submitted or running retraining on Ray and record it; returns the Job."""
    job = next((j for j in gallery.jobs() if j.id == job_id and j.kind == "retrain"), None)
    if job is None:
        raise NotFound(f"no retraining job {job_id}")
    if job.state not in ACTIVE:
        raise Conflict(f"retraining job {job_id} already ended {job.state}")
    if "token" not in job.params:
        raise GalleryError(f"job {job_id} predates cancellation support: stop it with `ray job stop`")
    try:
        client = _client_for(job)
        client.stop_job(submission_id(job))
    except Exception as exc:  # noqa: BLE001 - cluster gone, or it forgot the job
        raise Unavailable(f"cannot stop job {job_id} on Ray at {job.params['ray_address']}: "
                           f"{(str(exc).splitlines() or [type(exc).__name__])[0][:200]}") from None
    deadline = time.time() + timeout
    while not client.get_job_status(submission_id(job)).is_terminal():
        if time.time() > deadline:
            raise Unavailable(f"Ray did not stop job {job_id} within {timeout:.0f} s")
        time.sleep(1)
    reconcile(home, gallery)
    return next(j for j in gallery.jobs() if j.id == job_id)


def _client_for(job):
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(job.params["ray_address"], headers=_auth_headers())


def stopped_state(home, job_id: int) -> tuple[str, str]:
    """(state, detail) of a job stopped midway: a stop can arrive after the PRODUCTION switch."""
    if _promoted_by(home, job_id):
        return "succeeded", "promoted; stopped on Ray afterwards"
    return "cancelled", "stopped on Ray before it promoted anything"


def _promoted_by(home, job_id: int) -> bool:
    """Did this job's run become the production model (a cancel can arrive after the switch)?"""
    try:
        _, meta = production_meta(home)
    except GalleryError:
        return False
    return Path(meta.get("source_run", "")).name.startswith(f"retrain-job{job_id}-")


def wait_for(home, job_id: int, timeout: float = 3600, poll: float = 2.0):
    """Block until the job row reaches a final state (asking Ray when it may never say); returns the Job."""
    from enroll.backends import open_gallery

    deadline = time.time() + timeout
    with_gallery = open_gallery(resolve_home(home), create=True)
    try:
        while True:
            job = next(j for j in with_gallery.jobs() if j.id == job_id)
            if job.state in ACTIVE and time.time() <= deadline:
                reconcile(home, with_gallery)
                job = next(j for j in with_gallery.jobs() if j.id == job_id)
            if job.state not in ACTIVE or time.time() > deadline:
                return job
            time.sleep(poll)
    finally:
        with_gallery.close()


def export_people(gallery, out_dir) -> tuple[int, dict[str, int]]:
    """Write every enrolled person's aligned crops as ``out_dir/<name>/<face id>.png``, the
    identity-folder form ``data.extra_source`` reads; returns (gallery version, faces per person).
    A held-out face (``Face.held_out``) is left out: the promotion gate judges the person on it.

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
        for face in (f for f in person.faces if not f.held_out):
            try:
                (folder / f"{face.id:08d}.png").write_bytes(gallery.crop(face.sha256))
                written[name] += 1
            except GalleryError:
                continue  # removed mid-export
    return version, written
