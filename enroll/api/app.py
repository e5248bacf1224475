"""The FastAPI app of ``enroll serve``: ``create_app(home)`` for one process or a test,
``app_from_environment`` for each of uvicorn's workers (settings in $FACENET_API_SETTINGS).

Request path, outermost first: security headers -> CORS (only with --cors-origin) -> body size
limit (413) -> token check on /v1/ (401) -> the route (403 scope, then the work). The gallery, the
token store and the embedder are opened at start-up (context.py) and closed at shutdown.
"""
from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from enroll.api import errors, jobs, people, queries, system, web
from enroll.api.auth import TokenGate
from enroll.api.context import open_context
from enroll.api.limits import BodyLimit
from enroll.api.settings import ApiSettings, settings_from_environment

DESCRIPTION = """One-shot face enrolment and identification against the production FaceNet model.

Every `/v1/` call needs `Authorization: Bearer <token>` (`enroll token create --scope ...`); scopes:
`identify` (identify, verify), `enrol` (add, list, remove people), `admin` (everything, retraining
and tokens included). Errors are `{"error": "<one line>"}` with the status code saying which kind.
"""


def create_app(home=None, settings: ApiSettings | None = None) -> FastAPI:
    from enroll.home import resolve_home

    settings = settings or ApiSettings(home=str(resolve_home(home)))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.context = await run_in_threadpool(open_context, settings)
        try:
            yield
        finally:
            await run_in_threadpool(app.state.context.close)

    app = FastAPI(title="FaceNet enrolment", version="1", description=DESCRIPTION, lifespan=lifespan,
                  redoc_url=None, docs_url=None)  # /docs: web.py, Swagger UI served locally
    errors.install(app)
    for module in (people, queries, jobs, system):
        app.include_router(module.router)
    web.mount(app)
    # add_middleware puts each one outside the ones added before it.
    app.add_middleware(TokenGate, token_store_of=lambda scope: scope["app"].state.context.tokens)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "POST", "DELETE"], allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(web.SecurityHeaders)
    return app


def app_from_environment() -> FastAPI:
    """uvicorn's factory (``enroll.api.app:app_from_environment``)."""
    return create_app(settings=settings_from_environment())
