"""The retraining hook: ``enroll add-person --retrain`` records a request; nothing retrains yet.

What a retraining job will need is already kept: the class changes since the production model's
training data (``gallery.changes_since(meta["gallery_version"])``: people added, appended to or
removed — removed people must be left out of any future training set), the aligned crops of every
enrolled person as an identity folder for ``data.extra_source`` (``export_people``), and
``models.register_run`` to calibrate and promote the warm-started run once trained (record the
exported ``gallery_version`` in the new run's plan so that ``enroll status`` counts from it). The job itself (a Ray job running
``trainer.train --init-from`` on the source run's data plus the gallery's people, then
``register_run``) is to be wired in here; it should move its job row through
``requested -> running -> succeeded | failed`` with ``gallery.update_job``.
"""
from __future__ import annotations

from pathlib import Path

from enroll.gallery import GalleryError
from enroll.models import production_meta, resolve_home


def request_retrain(home=None, reason: str = "", gallery=None) -> tuple[int, str]:
    """Record a retraining request as a job in state ``requested``; returns (job id, message).

    It does not train anything: the message says so, so that no caller reports a retrain that
    did not happen.
    """
    from enroll.store import SqliteGallery

    home = resolve_home(home)
    own = gallery is None
    gallery = gallery if gallery is not None else SqliteGallery(home)
    try:
        version, meta = production_meta(home)
        pending = gallery.changes_since(meta.get("gallery_version", 0))
        job_id = gallery.add_job("retrain", {"reason": reason, "production_version": version,
                                             "gallery_version": gallery.gallery_version(),
                                             "class_changes": len(pending)})
    finally:
        if own:
            gallery.close()
    return job_id, (f"retraining requested (job {job_id}, state 'requested', {len(pending)} class changes "
                    f"since model {version}); automatic warm-start retraining is not wired in yet, so nothing "
                    "is training now: train with `python -m trainer.train --init-from RUN` and promote the "
                    "result with `enroll init --run NEW_RUN`")


def export_people(gallery, out_dir) -> tuple[int, dict[str, int]]:
    """Write every enrolled person's aligned crops as ``out_dir/<name>/<face id>.png``, the
    identity-folder form ``data.extra_source`` reads; returns (gallery version, faces per person).

    The version is read first: a change racing the export has a later sequence number, so it is
    counted as not yet learnt even if the export happened to include it. Crops are stored at the
    size of the production model of their enrolment; prepare resizes them to the training size.
    """
    version, written = gallery.gallery_version(), {}
    for name, _ in gallery.list_people():
        person = gallery.get(name)
        if person is None:
            continue  # removed since the listing
        folder = Path(out_dir) / name
        folder.mkdir(parents=True, exist_ok=True)
        written[name] = 0
        for face in person.faces:
            try:
                (folder / f"{face.id:08d}.png").write_bytes(gallery.crop(face.sha256))
                written[name] += 1
            except GalleryError:
                continue  # removed mid-export
    return version, written
