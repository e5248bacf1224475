"""What one request may carry: its body size, the photos in it and each photo's size (413 beyond).

``BodyLimit`` is ASGI middleware: a declared Content-Length over the limit is refused before a
byte of the body is read, and a body sent without one (chunked) is cut off as soon as it passes
the limit. ``read_photos`` then checks the count and each upload's size, and hands the photos to
the service as ``PhotoBytes`` named by their file name alone (no directory part, no control
characters), which is what the gallery records as a face's source.
"""
from __future__ import annotations

import re

from fastapi import UploadFile

from enroll.api.errors import ApiError, send_error
from enroll.api.settings import ApiSettings
from enroll.service import PhotoBytes

MAX_FILE_NAME = 200
_UNSAFE = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")


class BodyLimit:
    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, int(max_bytes)

    def _too_large(self, size: str) -> ApiError:
        return ApiError(413, f"request body of {size} bytes is over the limit of {self.max_bytes:,} bytes")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await send_error(send, self._too_large(f"{int(declared):,}"))
        received = 0
        started = False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._too_large(f"more than {received:,}")
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except ApiError as exc:  # raised outside a route (e.g. by middleware reading the body)
            if started:
                raise
            await send_error(send, exc)


def file_name(upload: UploadFile, position: int) -> str:
    """The upload's file name without any directory part (``/`` or ``\\``) or control characters."""
    name = re.split(r"[/\\]", upload.filename or "")[-1]
    name = _UNSAFE.sub("", name).strip()[:MAX_FILE_NAME]
    return name if name.strip(".") else f"photo-{position + 1}"


def read_photos(uploads: list[UploadFile], settings: ApiSettings) -> list[PhotoBytes]:
    """The uploads' bytes, after the count and size limits."""
    if not uploads:
        raise ApiError(400, "no photo given: send at least one file in the form field 'photos'")
    if len(uploads) > settings.max_photos:
        raise ApiError(413, f"{len(uploads)} photos in one request, the limit is {settings.max_photos}")
    photos = []
    for i, upload in enumerate(uploads):
        name = file_name(upload, i)
        data = upload.file.read(settings.max_photo_bytes + 1)
        if len(data) > settings.max_photo_bytes:
            raise ApiError(413, f"{name}: photo is over the limit of {settings.max_photo_bytes:,} bytes")
        photos.append(PhotoBytes(name, data))
    return photos
