"""``enroll``: one-shot enrolment, identify and verify against the production model.

    enroll init --run runs/<run> [--far-target F]    register a trained run as the production model (τ at FAR F)
    enroll add-person "Ada Lovelace" a.jpg b.jpg     enrol (--append adds photos to someone enrolled)
    enroll identify photo.jpg [--top-k 3]            who is it? ("unknown" beyond τ)
    enroll verify photo.jpg --name "Ada Lovelace"    is it them?
    enroll remove-person "Ada Lovelace"              forget them: crops, embeddings, everywhere
    enroll list | enroll status

``--json`` prints one JSON document on stdout instead of text; ``--home DIR`` overrides
$FACENET_HOME (default ./.facenet). A refusal is one ``error: ...`` line on stderr and a non-zero
exit (1; 2 for a malformed command line), never a traceback, and never leaves a partial change.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from enroll.gallery import GalleryError
from enroll.memory import InMemoryGallery
from enroll.models import resolve_home
from trainer import cliargs

TF_COMMANDS = {"init", "add-person", "identify", "verify", "remove-person"}  # remove-person re-exports served galleries


_Parser = cliargs.ArgumentParser  # argparse would print the usage, then the error: one error line instead


def _text(value: str) -> str:
    """A NAME argument: text. Undecodable bytes on the command line reach Python as surrogate
    escapes, which no UTF-8 database, JSON document or folder name can hold."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError(f"not valid UTF-8 text: {value!r}") from None
    return value


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    common.add_argument("--home", metavar="DIR", default=argparse.SUPPRESS, help="data directory ($FACENET_HOME)")
    parser = _Parser(prog="enroll", parents=[common],
                     description="One-shot face enrolment, identify and verify against the production model.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    p = sub.add_parser("init", parents=[common], help="register a trained run as the production model")
    p.add_argument("--run", required=True, metavar="RUN_DIR")
    p.add_argument("--far-target", type=float, default=None,
                   help="FAR at which τ is calibrated, now and at every promotion; written to enroll.yaml "
                        "(default: enroll.yaml's far_target, else 1e-3)")
    p = sub.add_parser("add-person", parents=[common], help="enrol a person from one or more photos")
    p.add_argument("name", metavar="NAME", type=_text, help="the person's name (any unicode; no / \\ or control characters)")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="photos of the person, one face each")
    p.add_argument("--append", action="store_true", help="add photos to a person already enrolled")
    p.add_argument("--allow-several-faces", action="store_true", help="keep the largest face of group photos")
    p.add_argument("--retrain", action="store_true", help="also submit a warm-start retraining (a Ray job)")
    p = sub.add_parser("identify", parents=[common], help="who is in this photo?")
    p.add_argument("image")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--server", metavar="URL", help="ask TF-Serving (http://host:8501 REST or host:8500 gRPC) instead of the local gallery")
    p = sub.add_parser("verify", parents=[common], help="is this photo of NAME?")
    p.add_argument("image")
    p.add_argument("--name", required=True, type=_text)
    p = sub.add_parser("remove-person", parents=[common], help="delete a person and all their data")
    p.add_argument("name", metavar="NAME", type=_text)
    sub.add_parser("list", parents=[common], help="enrolled people")
    p = sub.add_parser("retrain", parents=[common], help="submit a warm-start retraining (a Ray job) now")
    p.add_argument("--wait", action="store_true", help="wait for the job to finish (and promote)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds to wait at most")
    p.add_argument("--cancel", type=int, metavar="JOB", help="stop retraining job JOB on Ray instead")
    sub.add_parser("status", parents=[common], help="production model, gallery size, class changes, jobs")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a malformed command line (one error line printed, exit 2)
        return exc.code if isinstance(exc.code, int) else 0
    as_json = getattr(args, "json", False)
    notes: list[str] = []
    try:
        home = _home(getattr(args, "home", None))
        with _quiet_native_logs(args.command in TF_COMMANDS):
            result, text = COMMANDS[args.command](args, home, notes)
        code = 0
    except GalleryError as exc:
        result, text, code = {"error": _line(exc), **_extra(exc)}, _photo_lines(getattr(exc, "photos", [])), 1
        notes.append(f"error: {_line(exc)}")
    except KeyboardInterrupt:
        result, text, code = {"error": "interrupted"}, [], 130
        notes.append("error: interrupted")
    except Exception as exc:  # a bug or an environment problem: still one line, never a traceback
        result, text, code = {"error": f"{type(exc).__name__}: {_line(exc)}"}, [], 1
        notes.append(f"error: unexpected {type(exc).__name__}: {_line(exc)}")
    try:
        if as_json:
            _write(json.dumps(result, ensure_ascii=False), sys.stdout, fallback=json.dumps(result))
        elif text:
            _write("\n".join(text), sys.stdout)
    except BrokenPipeError:  # `enroll list | head`: the reader left, which is not our error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    for note in notes:
        _write(note, sys.stderr)
    return code


def _write(text: str, stream, fallback: str | None = None) -> None:
    """print; a stream that cannot encode ``text`` (a file name of undecodable bytes, kept as
    surrogate escapes, under a strict UTF-8 locale) gets ``fallback``, else ``text`` with escapes."""
    try:
        print(text, file=stream, flush=True)
    except UnicodeEncodeError:
        encoding = getattr(stream, "encoding", None) or "utf-8"
        print(fallback if fallback is not None else text.encode(encoding, "backslashreplace").decode(encoding),
              file=stream, flush=True)


def _home(value: str | None) -> Path:
    """--home (else $FACENET_HOME, else ./.facenet), refused at once when it cannot be a data directory."""
    try:
        home = resolve_home(value)
        if home.exists() and not home.is_dir():
            raise GalleryError(f"home {home} is not a directory")
    except (OSError, RuntimeError) as exc:  # a name too long, a symlink loop, an unknown ~user
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise GalleryError(f"home {value or os.environ.get('FACENET_HOME', '')!r} is unusable: {reason}") from None
    return home


def _line(exc) -> str:
    return cliargs.one_line(exc)


def _extra(exc) -> dict:
    return {"photos": exc.photos} if hasattr(exc, "photos") else {}


def _photo_lines(photos: list[dict]) -> list[str]:
    return [f"{'accepted' if p['accepted'] else 'rejected'}  {p['source']}" + (f": {p['reason']}" if p["reason"] else "")
            for p in photos]


@contextmanager
def _quiet_native_logs(enabled: bool):
    """TensorFlow's C++ runtime writes INFO lines (oneDNN, CUDA probing) straight to file
    descriptor 2 on import whatever TF_CPP_MIN_LOG_LEVEL says; park fd 2 in a temp file while the
    model and detector load and run, so stderr carries only our own lines. ENROLL_DEBUG=1 keeps them."""
    if not enabled or os.environ.get("ENROLL_DEBUG"):
        yield
        return
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def _gallery(home: Path, create: bool = False):
    """The home's gallery; an empty stand-in for read-only commands on a home not created yet,
    so that `enroll list --home typo/` does not create directories."""
    from enroll.store import SqliteGallery

    if create or (home / "gallery.db").exists():
        return SqliteGallery(home)
    return InMemoryGallery()


# ------------------------------------------------------------------------------- commands
def cmd_init(args, home, notes):
    from enroll.models import production_meta
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
        f"at FAR {meta['far_target']:g} (far_target in {home / 'enroll.yaml'})",
        f"embedded {faces} enrolled faces with it"]


def _retrain_after(home, gallery, reason: str, requested: bool) -> dict | None:
    """Submit a warm-start retraining when asked, or when the enroll.yaml policy says so."""
    from enroll.retrain import maybe_retrain, submit_retrain

    submitted = submit_retrain(home, reason, gallery) if requested else maybe_retrain(home, gallery, reason)
    if submitted is None:
        return None
    job, ray_job, message = submitted
    return {"job": job, "ray_job": ray_job, "message": message}


def cmd_add_person(args, home, notes):
    from enroll.models import production_meta
    from enroll.service import add_person
    from enroll.settings import load_settings

    production_meta(home)  # "run enroll init" before touching anything else
    load_settings(home)  # a broken enroll.yaml refuses the enrolment, rather than failing after it
    with _gallery(home, create=True) as gallery:
        report = add_person(gallery, home, args.name, args.images, append=args.append,
                            allow_several=args.allow_several_faces)
        try:
            retrain = _retrain_after(home, gallery, "add-person", args.retrain)
        except GalleryError as exc:  # the enrolment is committed: exit 0, and say what did not happen
            retrain = None
            report["retrain"] = {"error": _line(exc)}
            notes.append(f"warning: {report['name']!r} is enrolled, but {_line(exc)}")
        if retrain:
            report["retrain"] = retrain
    text = _photo_lines(report["photos"]) + [
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

    if args.top_k < 1:  # (identify checks it too; the --server path would slice with it)
        raise GalleryError(f"--top-k must be at least 1, got {args.top_k}")
    if args.server:
        _check_url(args.server)
        r = identify_remote(args.server, args.image, args.top_k)
    else:
        with _gallery(home) as gallery:
            r = identify(gallery, home, args.image, args.top_k)
    head = f"{r['name']}" + (f" (distance {r['distance']:.4f}, τ {r['threshold']:.4f})" if r["distance"] is not None else "")
    lines = [head] + [f"  {i}. {c['name']}  {c['distance']:.4f}{'  within τ' if c['match'] else ''}"
                      for i, c in enumerate(r["candidates"], 1)]
    return r, lines + ([f"note: {r['note']}"] if r["note"] else [])


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
        r = verify(gallery, home, args.image, args.name)
    return r, [f"match: {'yes' if r['match'] else 'no'} ({r['name']}, distance {r['distance']:.4f}, "
               f"τ {r['threshold']:.4f})"] + ([f"note: {r['note']}"] if r["note"] else [])


def cmd_remove_person(args, home, notes):
    from enroll.forget import forget
    from enroll.settings import load_settings

    load_settings(home)  # a broken enroll.yaml refuses the removal, rather than failing after it
    with _gallery(home) as gallery:
        person = gallery.remove_person(args.name)
        copies = forget(home, person.name)
        retrain = _retrain_after(home, gallery, "remove-person", False)
    text = [f"removed {person.name!r}: {_n(len(person.faces), 'face')}, their crops and embeddings deleted; "
            f"copies deleted: {_n(copies['retraining_exports'], 'retraining export')}, "
            f"{_n(copies['aligned_shards'], 'aligned shard')}, {_n(copies['served_versions_deleted'], 'served version')} "
            f"(replaced by {_n(copies['served_versions_exported'], 'new version')})"]
    return {"removed": person.name, "faces": len(person.faces), "copies_deleted": copies, "retrain": retrain}, text + (
        [retrain["message"]] if retrain else [])


def cmd_retrain(args, home, notes):
    from enroll.models import production_meta
    from enroll.retrain import wait_for

    production_meta(home)
    if args.cancel is not None:
        from enroll.retrain import cancel_retrain

        with _gallery(home) as gallery:
            job = cancel_retrain(home, gallery, args.cancel)
        return {"job": job.id, "state": job.state, "detail": job.detail}, [
            f"job {job.id}: {job.state} ({job.detail}); the production model is unchanged"
            if job.state == "cancelled" else f"job {job.id}: {job.state} ({job.detail})"]
    with _gallery(home) as gallery:
        retrain = _retrain_after(home, gallery, "enroll retrain", True)
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
            "remove-person": cmd_remove_person, "list": cmd_list, "status": cmd_status, "retrain": cmd_retrain}

if __name__ == "__main__":
    sys.exit(main())
