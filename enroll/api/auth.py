"""Bearer tokens on every /v1/ endpoint; scopes per endpoint.

    Authorization: Bearer fnk_...        (``enroll token create --scope identify``)

``TokenGate`` (ASGI middleware) authenticates every request under /v1/ before its body is read:
no token, or one that is unknown or revoked, is a 401 at once, so an anonymous client cannot make
the server parse a large upload. ``require(scope)`` (a route dependency, which also documents the
scheme in OpenAPI) then refuses a token without the route's scope with 403. ``admin`` holds every
scope. /healthz, /readyz, the page at / and /docs need no token; every /v1/ call does, identify
included: a face search reveals who is enrolled, so it is not public.
"""
from __future__ import annotations

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from enroll.api.errors import ApiError, gallery_status, send_error
from enroll.gallery import GalleryError
from enroll.tokens import Token
from trainer.cliargs import one_line

PROTECTED_PREFIX = "/v1/"
CHALLENGE = {"WWW-Authenticate": "Bearer"}
bearer = HTTPBearer(auto_error=False, scheme_name="token",
                    description="A token from `enroll token create --scope identify,enrol`")


def _secret(headers) -> str | None:
    value = headers.get(b"authorization", b"").decode("latin-1").strip()
    scheme, _, secret = value.partition(" ")
    return secret.strip() if scheme.lower() == "bearer" and secret.strip() else None


class TokenGate:
    def __init__(self, app, token_store_of):
        self.app, self.token_store_of = app, token_store_of  # token_store_of(scope) -> TokenStore

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith(PROTECTED_PREFIX):
            return await self.app(scope, receive, send)
        secret = _secret(dict(scope.get("headers") or ()))
        if secret is None:
            return await send_error(send, ApiError(
                401, "no token: send 'Authorization: Bearer <token>' (create one with `enroll token create`)", CHALLENGE))
        try:
            token = await run_in_threadpool(self.token_store_of(scope).lookup, secret)
        except GalleryError as exc:  # the token store's database unreachable: 503, as the routes answer it
            return await send_error(send, ApiError(gallery_status(exc), one_line(exc)))
        if token is None:
            return await send_error(send, ApiError(401, "invalid or revoked token", CHALLENGE))
        scope.setdefault("state", {})["token"] = token
        await self.app(scope, receive, send)


def require(scope_needed: str):
    """A dependency: the request's token (checked by TokenGate), which must hold ``scope_needed``."""
    def dependency(request: Request, _: HTTPAuthorizationCredentials | None = Security(bearer)) -> Token:
        token = getattr(request.state, "token", None)
        if token is None:  # TokenGate runs before every /v1/ route; anything else is a wiring bug
            raise ApiError(401, "no token", CHALLENGE)
        if not token.allows(scope_needed):
            raise ApiError(403, f"this token's scopes ({', '.join(token.scopes)}) do not include {scope_needed!r}")
        return token
    dependency.__name__ = f"require_{scope_needed}"
    return dependency


def any_token(request: Request, _: HTTPAuthorizationCredentials | None = Security(bearer)) -> Token:
    """Any live token, whatever its scopes (GET /v1/status)."""
    token = getattr(request.state, "token", None)
    if token is None:
        raise ApiError(401, "no token", CHALLENGE)
    return token
