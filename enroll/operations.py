"""The enrolment operations the CLI (enroll/commands.py) and the API (enroll/api/) share, each as one
call on a home and its open gallery that returns a JSON-able result or raises a one-line GalleryError:

    enrol       add a person (or --append photos), then the retraining policy (enroll.yaml)
    remove      forget a person everywhere (enroll/forget.py), then the retraining policy
    submit      a warm-start retraining now (enroll/retrain.py: a Ray job)
    cancel      stop a retraining job on Ray
    job_report  one job's state, asking Ray about an unfinished one first

Refusals come before any change: no production model, or a broken enroll.yaml, refuses an
enrolment or a removal rather than failing after it.
"""
from __future__ import annotations

from enroll.gallery import GalleryError, NotFound
from trainer.cliargs import one_line


def retrain_after(home, gallery, reason: str, requested: bool, start_ray: bool = True) -> dict | None:
    """Submit a warm-start retraining when asked, or when the enroll.yaml policy says so. Without a
    Ray cluster to submit to, a local head is started, unless ``start_ray`` is False (the API)."""
    from enroll.retrain import maybe_retrain, submit_retrain

    submitted = (submit_retrain(home, reason, gallery, start_head=start_ray) if requested
                 else maybe_retrain(home, gallery, reason, start_head=start_ray))
    if submitted is None:
        return None
    job, ray_job, message = submitted
    return {"job": job, "ray_job": ray_job, "message": message}


def check_can_enrol(home) -> None:
    """Refuse an enrolment before anything is touched (or created): no production model, or a
    broken enroll.yaml."""
    from enroll.model_versions import production_meta
    from enroll.settings import load_settings

    production_meta(home)
    load_settings(home)


def enrol(home, gallery, name: str, photos, *, append: bool = False, allow_several: bool = False,
          retrain: bool = False, embedder=None, start_ray: bool = True) -> dict:
    """``service.add_person``'s report; a retraining that could not be submitted afterwards is
    ``report["retrain"]["error"]``: the enrolment is committed all the same."""
    from enroll.service import add_person

    check_can_enrol(home)
    report = add_person(gallery, home, name, photos, append=append, allow_several=allow_several, embedder=embedder)
    try:
        submitted = retrain_after(home, gallery, "add-person", retrain, start_ray)
    except GalleryError as exc:
        report["retrain"] = {"error": one_line(exc)}
    else:
        if submitted:
            report["retrain"] = submitted
    return report


def remove(home, gallery, name: str, start_ray: bool = True) -> dict:
    """Delete ``name`` from the gallery and every copy enrolment made (crops exported for retraining,
    aligned shards, served versions)."""
    from enroll.forget import forget
    from enroll.settings import load_settings

    load_settings(home)
    person = gallery.remove_person(name)
    copies = forget(home, person.name)
    retrain = retrain_after(home, gallery, "remove-person", False, start_ray)
    return {"removed": person.name, "faces": len(person.faces), "copies_deleted": copies, "retrain": retrain}


def submit(home, gallery, reason: str = "enroll retrain", start_ray: bool = True) -> dict:
    from enroll.model_versions import production_meta

    production_meta(home)
    return retrain_after(home, gallery, reason, True, start_ray)


def cancel(home, gallery, job_id: int) -> dict:
    from enroll.model_versions import production_meta
    from enroll.retrain import cancel_retrain

    production_meta(home)
    job = cancel_retrain(home, gallery, job_id)
    return {"job": job.id, "state": job.state, "detail": job.detail}


def job_report(home, gallery, job_id: int) -> dict:
    """Job ``job_id`` as ``enroll status`` lists it (state, detail, the gate's figures), after asking
    Ray about it when its row still says submitted or running."""
    from enroll.retrain import ACTIVE, reconcile

    job = _job(gallery, job_id)
    if job.state in ACTIVE:
        reconcile(home, gallery)
        job = _job(gallery, job_id)
    return {"id": job.id, "kind": job.kind, "state": job.state, "detail": job.detail, "created": job.created,
            "updated": job.updated, "params": {k: v for k, v in job.params.items() if k != "token"},
            "gate": job.result.get("gate")}


def _job(gallery, job_id: int):
    job = next((j for j in gallery.jobs() if j.id == job_id), None)
    if job is None:
        raise NotFound(f"no job {job_id} (see `enroll status`)")
    return job
