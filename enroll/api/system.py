"""The service itself: liveness, readiness, status, and tokens.

    GET /healthz          200 while the process serves requests (Kubernetes' liveness probe); no token
    GET /readyz           200 once the production model is loaded and the gallery answers, else 503
                          with the reason (the readiness probe); no token
    GET /v1/status        ``enroll status``: model version, τ, gallery size, class changes, jobs; any token
    GET/POST/DELETE /v1/tokens   list, create (the secret is in this one answer only), revoke; ``admin``
"""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import JSONResponse

from enroll.api.auth import any_token, require
from enroll.api.context import context_of
from enroll.tokens import SCOPES

router = APIRouter()
ADMIN = Depends(require("admin"))


@router.get("/healthz", tags=["service"])
def healthz() -> dict:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz", tags=["service"], responses={503: {"description": "not ready, and why"}})
def readyz(request: Request):
    """Readiness: the production model is loaded and the gallery is reachable."""
    ready, answer = context_of(request).readiness()
    return JSONResponse({"ready": ready, **answer}, status_code=200 if ready else 503)


@router.get("/v1/status", tags=["service"], dependencies=[Depends(any_token)])
def status(request: Request) -> dict:
    """The production model, the gallery's size, class changes since the model, and the jobs."""
    from enroll.status import status_report

    context = context_of(request)
    report, _ = status_report(context.home, context.gallery)
    return report


@router.get("/v1/tokens", tags=["tokens"], dependencies=[ADMIN])
def list_tokens(request: Request) -> dict:
    """Every token: id, name, scopes, created, last used, revoked (never the secret: only its hash is kept)."""
    return {"tokens": [t.to_dict() for t in context_of(request).tokens.tokens()]}


@router.post("/v1/tokens", tags=["tokens"], status_code=201, dependencies=[ADMIN])
def create_token(request: Request,
                 scopes: Annotated[list[str], Body(description=f"some of {', '.join(SCOPES)}")],
                 name: Annotated[str, Body(description="what the token is for")] = ""):
    """A new token; its secret is in this answer and nowhere else."""
    token, secret = context_of(request).tokens.create(tuple(scopes), name)
    return JSONResponse({**token.to_dict(), "token": secret}, status_code=201)


@router.delete("/v1/tokens/{token_id}", tags=["tokens"], dependencies=[ADMIN], responses={404: {"description": "no such token"}})
def revoke_token(request: Request, token_id: int) -> dict:
    """Revoke a token: refused from the next request on, by every replica."""
    return context_of(request).tokens.revoke(token_id).to_dict()
