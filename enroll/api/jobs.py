"""Warm-start retraining jobs, with the ``admin`` scope: submit, follow, cancel.

    POST   /v1/retrain            submit now (a Ray job; ``enroll retrain``)             202
    GET    /v1/retrain/{job}      its state, detail and the promotion gate's figures
    DELETE /v1/retrain/{job}      stop it on Ray; nothing is promoted (``enroll retrain --cancel``)

The job runs on Ray (enroll/retrain.py) at enroll.yaml's ``ray_address``, else $RAY_ADDRESS, else a
Ray head on this machine's 127.0.0.1:8265; unlike the CLI, the API never starts a Ray head itself
(503 when none answers). These calls only record, ask and stop.
"""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from enroll import operations
from enroll.api.auth import require
from enroll.api.context import context_of

router = APIRouter(prefix="/v1", tags=["retraining"])
ADMIN = Depends(require("admin"))


@router.post("/retrain", status_code=202, dependencies=[ADMIN], responses={
    503: {"description": "Ray did not accept the job (a failed job row says why)"}})
def submit(request: Request):
    """Submit a warm-start retraining of the production model on the enrolled people."""
    context = context_of(request)
    return JSONResponse(operations.submit(context.home, context.gallery, "api", start_ray=False), status_code=202)


@router.get("/retrain/{job}", dependencies=[ADMIN], responses={404: {"description": "no such job"}})
def follow(request: Request, job: int) -> dict:
    """A job's state (submitted, running, succeeded, rejected, failed, cancelled), detail and gate figures."""
    context = context_of(request)
    return operations.job_report(context.home, context.gallery, job)


@router.delete("/retrain/{job}", dependencies=[ADMIN], responses={
    404: {"description": "no such job"}, 409: {"description": "the job already ended"}})
def cancel(request: Request, job: int) -> dict:
    """Stop a submitted or running job on Ray; the production model stays as it is."""
    context = context_of(request)
    return operations.cancel(context.home, context.gallery, job)
