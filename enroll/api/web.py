"""The web page at / : plain HTML and JavaScript from static/ (no build step, nothing from a CDN),
and the OpenAPI docs at /docs with Swagger UI served from the swagger-ui-bundle package (FastAPI's
default page loads it from a CDN, which leaves it blank on a network without internet).

The page calls the same /v1/ API as any client, with the token pasted into it (kept in the tab's
sessionStorage only). Every answer of the app carries headers that keep browsers strict: the
page may load scripts, styles and images from this server only (and photos the user picked, as
blob: URLs), may not be framed, and no answer is sniffed as another type.
"""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).with_name("static")
PAGE_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
               "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")
HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
           (b"x-frame-options", b"DENY")]

router = APIRouter(include_in_schema=False)


@router.api_route("/", methods=["GET", "HEAD"])
def page() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": PAGE_POLICY,
                                                        "Cache-Control": "no-cache"})


@router.get("/docs")
def docs() -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title="FaceNet enrolment: API docs",
                               swagger_js_url="/swagger/swagger-ui-bundle.js",
                               swagger_css_url="/swagger/swagger-ui.css", swagger_favicon_url="/swagger/favicon-32x32.png")


def mount(app: FastAPI) -> None:
    from swagger_ui_bundle import swagger_ui_path

    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.mount("/swagger", StaticFiles(directory=str(swagger_ui_path)), name="swagger")


class SecurityHeaders:
    """ASGI middleware adding ``HEADERS`` to every HTTP answer."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *HEADERS]}
            await send(message)

        await self.app(scope, receive, with_headers)
