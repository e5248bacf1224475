"""Errors as the API answers them: ``{"error": "<one line>"}`` with a status code, never a traceback.

The reasons are the CLI's (enroll's GalleryError messages); their kind chooses the status:

    400  bad input: a malformed request, an unusable name, top_k < 1, ...
    401  no token, or not a live one              403  the token lacks the scope
    404  no such person, job, token or path        409  already enrolled, job already ended, ...
    413  body, photo count or photo size over its limit (limits.py)
    422  a photo that cannot be used: not an image, no face (``photos`` says why for each one)
    503  not ready: no production model, Ray or the embedding server or the database not answering
    500  a bug: "internal error", the details in the server's log only
"""
from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from enroll.gallery import Conflict, GalleryError, NotFound, Unavailable
from trainer.cliargs import one_line

log = logging.getLogger("enroll.api")


class ApiError(HTTPException):
    """A refusal made by the HTTP layer itself (auth, limits). An HTTPException, so that FastAPI lets it
    through when it is raised while the request body is being read."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(status, message, headers)
        self.message = message


def gallery_status(exc: GalleryError) -> int:
    from enroll.model_versions import ModelError
    from enroll.service import PhotoRefused

    for kind, status in ((NotFound, 404), (Conflict, 409), (Unavailable, 503), (ModelError, 503),
                         (PhotoRefused, 422)):
        if isinstance(exc, kind):
            return status
    return 400


def error_response(status: int, message: str, headers: dict | None = None, **extra) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


async def send_error(send, exc: ApiError) -> None:
    """Answer ``exc`` from ASGI middleware, before any route (or the body) was reached."""
    response = error_response(exc.status_code, exc.message, {**(exc.headers or {}), "Connection": "close"})
    await send({"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


def _validation_message(exc: RequestValidationError) -> str:
    """FastAPI's list of validation errors as one line: ``top_k: Input should be a valid integer``."""
    parts = []
    for error in exc.errors()[:3]:
        where = ".".join(str(p) for p in error.get("loc", ())[1:]) or "request"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return one_line("; ".join(parts) or "invalid request")


def install(app: FastAPI) -> None:
    @app.exception_handler(GalleryError)
    async def gallery_error(request: Request, exc: GalleryError):
        extra = {"photos": exc.photos} if hasattr(exc, "photos") else {}
        return error_response(gallery_status(exc), one_line(exc), **extra)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        return error_response(400, _validation_message(exc))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        message = exc.message if isinstance(exc, ApiError) else one_line(exc.detail or "error")
        return error_response(exc.status_code, message, exc.headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, f"internal error ({type(exc).__name__}); the server's log has the details")
