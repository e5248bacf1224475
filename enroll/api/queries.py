"""Who is this? (identify) and is this them? (verify), with the ``identify`` scope.

    curl -H "Authorization: Bearer $TOKEN" -F photo=@query.jpg -F top_k=3 http://127.0.0.1:8000/v1/identify

Both are ``enroll.service``'s identify / verify on the uploaded photo, embedded by the API's
embedder and searched in its live index (never stale: live_index.py). The answer carries the face
box (x, y, width, height in the photo's pixels) next to the CLI's fields.
"""
from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile

from enroll import service
from enroll.api.auth import require
from enroll.api.context import context_of
from enroll.api.limits import read_photos

router = APIRouter(prefix="/v1", tags=["identify"])
IDENTIFY = Depends(require("identify"))
PHOTO = File(description="a photo; the largest face in it is the query")


@router.post("/identify", dependencies=[IDENTIFY], responses={
    422: {"description": "no face in the photo, or not an image"}})
def identify(request: Request, photo: Annotated[UploadFile, PHOTO],
             top_k: Annotated[int, Form(description="how many people to list")] = 3,
             method: Annotated[Literal["nearest", "knn", "svm"], Form(
                 description="nearest enrolled face, or a KNN / linear SVM on the gallery")] = "nearest") -> dict:
    """The nearest enrolled people; ``name`` is "unknown" beyond τ (``enroll identify``)."""
    context = context_of(request)
    (upload,) = read_photos([photo], context.settings)
    return service.identify(context.gallery, context.home, upload, top_k, method, embedder=context.embedder)


@router.post("/verify", dependencies=[IDENTIFY], responses={
    404: {"description": "nobody of that name is enrolled"}, 422: {"description": "no face in the photo"}})
def verify(request: Request, photo: Annotated[UploadFile, PHOTO],
           name: Annotated[str, Form(description="the enrolled person to compare with")],
           method: Annotated[Literal["distance", "head"], Form(
               description="closest face within τ, or the Siamese verification head")] = "distance") -> dict:
    """Is the face in the photo the enrolled person ``name``? (``enroll verify``)"""
    context = context_of(request)
    (upload,) = read_photos([photo], context.settings)
    return service.verify(context.gallery, context.home, upload, name, method, embedder=context.embedder)
