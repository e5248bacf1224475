"""People: enrol (POST), list (GET) and forget (DELETE), all with the ``enrol`` scope.

    curl -H "Authorization: Bearer $TOKEN" -F name="Ada Lovelace" -F photos=@a.jpg -F photos=@b.jpg \\
         http://127.0.0.1:8000/v1/people

Each is one call of enroll/operations.py, as the CLI's add-person / remove-person / list are.
"""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse

from enroll import operations
from enroll.api.auth import require
from enroll.api.context import context_of
from enroll.api.limits import read_photos
from enroll.gallery import validate_name

router = APIRouter(prefix="/v1", tags=["people"])
ENROL = Depends(require("enrol"))


@router.post("/people", status_code=201, dependencies=[ENROL], responses={
    200: {"description": "photos appended to someone enrolled (append=true)"},
    201: {"description": "enrolled: which photos were accepted, faces stored, look-alikes, held-out photo"},
    409: {"description": "already enrolled (use append)"}, 413: {"description": "too many or too large photos"},
    422: {"description": "no photo usable (no face, not an image): nothing stored; `photos` says why"}})
def add_person(request: Request, name: Annotated[str, Form(description="the person's name (any unicode)")],
               photos: Annotated[list[UploadFile], File(description="photos of the person, one face each")],
               append: Annotated[bool, Form(description="add photos to someone already enrolled")] = False,
               allow_several_faces: Annotated[bool, Form(description="keep the largest face of group photos")] = False):
    """Enrol a person from one or more photos (``enroll add-person``)."""
    context = context_of(request)
    uploads = read_photos(photos, context.settings)
    report = operations.enrol(context.home, context.gallery, name, uploads, append=append,
                              allow_several=allow_several_faces, embedder=context.embedder, start_ray=False)
    context.changed()
    return JSONResponse(report, status_code=200 if append else 201)


@router.get("/people", dependencies=[ENROL])
def list_people(request: Request) -> dict:
    """Enrolled people and their number of faces (``enroll list``)."""
    people = context_of(request).gallery.list_people()
    return {"people": [{"name": name, "faces": faces} for name, faces in people]}


@router.get("/people/{name}", dependencies=[ENROL])
def get_person(request: Request, name: str) -> dict:
    """One enrolled person: their faces (photo file names, dates, which one is held out of retraining)."""
    from enroll.gallery import NotFound

    person = context_of(request).gallery.get(validate_name(name))
    if person is None:
        raise NotFound(f"no person named {validate_name(name)!r} is enrolled")
    return {"name": person.name, "created": person.created,
            "faces": [{"id": f.id, "source": f.source, "created": f.created, "held_out": f.held_out}
                      for f in person.faces]}


@router.delete("/people/{name}", dependencies=[ENROL], responses={404: {"description": "nobody of that name"}})
def remove_person(request: Request, name: str) -> dict:
    """Forget a person: gallery rows, crops, embeddings of every model version, and every copy
    enrolment made (``enroll remove-person``)."""
    context = context_of(request)
    report = operations.remove(context.home, context.gallery, name, start_ray=False)
    context.changed()
    return report
