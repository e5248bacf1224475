"""The ``enroll`` command handlers. Each takes the parsed arguments, the home and a list of notes
(warnings for stderr) and returns (the JSON result, the text lines); ``enroll.cli`` parses the command
line, dispatches here by ``COMMANDS`` and prints. A refusal is a ``GalleryError``, which
``enroll.cli.main`` turns into one ``error: ...`` line."""
from __future__ import annotations

import os
from pathlib import Path

from enroll.cluster_command import cmd_cluster
from enroll.db_command import cmd_db
from enroll.gallery import GalleryError
from enroll.home import settings_file
from enroll.api.serve import cmd_serve
from enroll.serving_export import cmd_export_serving
from enroll.token_command import cmd_token


def photo_lines(photos: list[dict]) -> list[str]:
    return [f"{'accepted' if p['accepted'] else 'rejected'}  {p['source']}" + (f": {p['reason']}" if p["reason"] else "")
            for p in photos]


def _gallery(home: Path, create: bool = False):
    """The home's gallery (SQLite, or PostgreSQL with $FACENET_GALLERY_URL: enroll/backends.py); an
    empty stand-in for read-only commands on a SQLite home not created yet, so that
    `enroll list --home typo/` does not create directories."""
    from enroll.backends import open_gallery

    return open_gallery(home, create)


def cmd_init(args, home, notes):
    from enroll.model_versions import production_meta
    from enroll.settings import check_far_target, init_production

    if not os.path.isdir(args.run):  # (Path.is_dir raises on a name too long)
        raise GalleryError(f"run directory not found: {args.run}")
    if args.far_target is not None:
        check_far_target(args.far_target, "--far-target")
    version = init_production(args.run, home, args.far_target)
    _, meta = production_meta(home)
    with _gallery(home) as gallery:
        faces = sum(n for _, n in gallery.list_people())
    c = meta["calibration"]
    how = (f"at FAR {meta['far_target']:g}" if meta["threshold_method"] == "far" else
           f"best-accuracy threshold: FAR {meta['far_target']:g} is not resolvable with "
           f"{c['different_pairs']} different-person pairs")
    return {"version": version, "threshold": meta["threshold"], "threshold_method": meta["threshold_method"],
            "far_target": meta["far_target"], "calibration": c, "faces_embedded": faces, "home": str(home)}, [
        f"production model: version {version} ({meta['model_name']}, {meta['image_size']} px) in {home}",
        f"τ = {meta['threshold']:.4f} ({how}; {c['pairs']} {c['split']} pairs); every promotion recalibrates "
        f"at FAR {meta['far_target']:g} (far_target in {settings_file(home)})",
        f"embedded {faces} enrolled faces with it"]


def cmd_add_person(args, home, notes):
    from enroll.operations import check_can_enrol, enrol

    check_can_enrol(home)  # before the gallery is created
    with _gallery(home, create=True) as gallery:
        report = enrol(home, gallery, args.name, args.images, append=args.append,
                       allow_several=args.allow_several_faces, retrain=args.retrain)
    if "error" in report.get("retrain", {}):  # the enrolment is committed: exit 0, and say what did not happen
        notes.append(f"warning: {report['name']!r} is enrolled, but {report['retrain']['error']}")
    text = photo_lines(report["photos"]) + [
        f"enrolled {report['name']!r}: {_n(report['faces_added'], 'new face')}, {report['faces_total']} in all "
        f"(model version {report['model_version']})"] + (
        [f"held out of retraining, to judge retrained models on: {report['held_out']}"] if report["held_out"] else [])
    for other in report["lookalikes"]:
        notes.append(f"warning: {report['name']!r} looks like {other['name']!r} (distance {other['distance']:.4f} "
                     f"<= τ {report['threshold']:.4f}): the same person under two names?")
    if "message" in report.get("retrain", {}):
        text.append(report["retrain"]["message"])
    return report, text


def cmd_identify(args, home, notes):
    from enroll.service import identify, identify_remote
    from enroll.video import is_video

    if args.top_k < 1:  # (identify checks it too; the --server path would slice with it)
        raise GalleryError(f"--top-k must be at least 1, got {args.top_k}")
    method = getattr(args, "method", "nearest")
    if is_video(args.image):
        return _identify_video(args, home, method)
    if getattr(args, "fps", None) is not None or getattr(args, "every_n_frames", None) is not None:
        raise GalleryError(f"--fps and --every-n-frames are for videos; {args.image} has no video suffix")
    if args.server:
        if method != "nearest":
            raise GalleryError(f"--method {method} is answered from the local gallery only; drop --server")
        _check_url(args.server)
        r = identify_remote(args.server, args.image, args.top_k)
    else:
        with _gallery(home) as gallery:
            r = identify(gallery, home, args.image, args.top_k, method)
    head = f"{r['name']}" + (f" (distance {r['distance']:.4f}, τ {r['threshold']:.4f})" if r["distance"] is not None else "")
    lines = [head + (f" [{method}]" if method != "nearest" else "")] + [
        f"  {i}. {c['name']}  {c['distance']:.4f}{'  within τ' if c['match'] else ''}"
        + (f"  score {c['score']:.3f}" if "score" in c else "") for i, c in enumerate(r["candidates"], 1)]
    return r, lines + ([f"note: {r['note']}"] if r["note"] else [])


def _identify_video(args, home, method: str):
    from enroll.video import Sampling
    from enroll.video_identify import identify_video, video_lines

    if args.server:
        raise GalleryError("a video is answered from the local gallery only; drop --server")
    sampling = Sampling(getattr(args, "every_n_frames", None), getattr(args, "fps", None))
    with _gallery(home) as gallery:
        r = identify_video(gallery, home, args.image, sampling, args.top_k, method)
    return r, video_lines(r)


def _check_url(server: str) -> None:
    """An http(s) --server must parse as a URL with a host (requests would raise InvalidURL)."""
    from urllib.parse import urlsplit

    if server.startswith(("http://", "https://")):
        try:
            parts = urlsplit(server)
            host, _ = parts.hostname, parts.port  # .port raises on a port out of range
        except ValueError as exc:
            raise GalleryError(f"--server {server!r} is not a valid URL: {exc}") from None
        if not host:
            raise GalleryError(f"--server {server!r} names no host")


def cmd_verify(args, home, notes):
    from enroll.service import verify

    with _gallery(home) as gallery:
        r = verify(gallery, home, args.image, args.name, getattr(args, "method", "distance"))
    if r.get("method") == "head":
        if r["head"]["trained_now"]:
            notes.append(f"note: trained the verification head of model version {r['model_version']} "
                         f"({r['head']['train_pairs']} training pairs), stored in {r['head']['file']}")
        return r, [f"match: {'yes' if r['match'] else 'no'} ({r['name']}, head probability {r['probability']:.4f}, "
                   f"threshold {r['probability_threshold']:.4f}; distance {r['distance']:.4f})"] + (
            [f"note: {r['note']}"] if r["note"] else [])
    return r, [f"match: {'yes' if r['match'] else 'no'} ({r['name']}, distance {r['distance']:.4f}, "
               f"τ {r['threshold']:.4f})"] + ([f"note: {r['note']}"] if r["note"] else [])


def cmd_remove_person(args, home, notes):
    from enroll.operations import remove

    with _gallery(home) as gallery:
        report = remove(home, gallery, args.name)
    copies, retrain = report["copies_deleted"], report["retrain"]
    text = [f"removed {report['removed']!r}: {_n(report['faces'], 'face')}, their crops and embeddings deleted; "
            f"copies deleted: {_n(copies['retraining_exports'], 'retraining export')}, "
            f"{_n(copies['aligned_shards'], 'aligned shard')}, {_n(copies['served_versions_deleted'], 'served version')} "
            f"(replaced by {_n(copies['served_versions_exported'], 'new version')})"]
    return report, text + ([retrain["message"]] if retrain else [])


def cmd_retrain(args, home, notes):
    from enroll.operations import cancel, submit
    from enroll.retrain import wait_for

    if args.cancel is not None:
        with _gallery(home) as gallery:
            job = cancel(home, gallery, args.cancel)
        return job, [f"job {job['job']}: {job['state']} ({job['detail']})"
                     + ("; the production model is unchanged" if job["state"] == "cancelled" else "")]
    with _gallery(home) as gallery:
        retrain = submit(home, gallery)
    text = [retrain["message"]]
    if args.wait:
        job = wait_for(home, retrain["job"], timeout=args.timeout)
        retrain.update(state=job.state, detail=job.detail)
        text.append(f"job {job.id}: {job.state}" + (f" ({job.detail})" if job.detail else ""))
        if job.state != "succeeded":
            raise GalleryError(f"retraining job {job.id} ended {job.state}: {job.detail or 'see enroll status'}")
    return retrain, text


def cmd_list(args, home, notes):
    with _gallery(home) as gallery:
        people = gallery.list_people()
    rows = [{"name": n, "faces": k} for n, k in people]
    return {"people": rows}, [f"{n}  ({_n(k, 'face')})" for n, k in people] + [
        f"{_n(len(people), 'person', 'people')}, {_n(sum(k for _, k in people), 'face')}"]


def cmd_status(args, home, notes):
    from enroll.status import status_report

    with _gallery(home) as gallery:
        return status_report(home, gallery)


def _n(count: int, one: str, many: str = "") -> str:
    return f"{count} {one if count == 1 else many or one + 's'}"


COMMANDS = {"init": cmd_init, "add-person": cmd_add_person, "identify": cmd_identify, "verify": cmd_verify,
            "remove-person": cmd_remove_person, "list": cmd_list, "status": cmd_status, "retrain": cmd_retrain,
            "export-serving": cmd_export_serving, "serve": cmd_serve, "token": cmd_token, "db": cmd_db, "cluster": cmd_cluster}
