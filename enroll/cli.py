"""``enroll``: one-shot enrolment, identify and verify against the production model.

    enroll init --run runs/<run> [--far-target F]    register a trained run as the production model (τ at FAR F)
    enroll add-person "Ada Lovelace" a.jpg b.jpg     enrol (--append adds photos to someone enrolled)
    enroll identify photo.jpg [--top-k 3] [--method nearest|knn|svm]   who is it? ("unknown" beyond τ)
    enroll identify clip.mp4 [--fps 5 | --every-n-frames N]   who is in the video? one answer per face track
    enroll verify photo.jpg --name "Ada Lovelace" [--method distance|head]   is it them?
    enroll remove-person "Ada Lovelace"              forget them: crops, embeddings, everywhere
    enroll cluster photos/ [--min-size 2] [--method chinese_whispers|agglomerative|dbscan] [--enroll-as PREFIX]
                                                     group a folder's faces by identity (enroll.cluster_command)
    enroll list | enroll status
    enroll export-serving [--model-version N]       a new TF-Serving version of the model and gallery
    enroll serve [--host 127.0.0.1] [--port 8000] [--embed-server HOST:PORT] [--workers N]   the REST API + web page
    enroll token create --scope identify,enrol [--name N] | token list | token revoke ID   the API's bearer tokens
    enroll db upgrade                                migrate the gallery's schema (SQLite, or $FACENET_GALLERY_URL)

``--json`` prints one JSON document on stdout instead of text; ``--home DIR`` overrides
$FACENET_HOME (default ./.facenet). A refusal is one ``error: ...`` line on stderr and a non-zero
exit (1; 2 for a malformed command line), never a traceback, and never leaves a partial change.

This module parses the command line and prints; the command handlers are in ``enroll.commands``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from enroll.cluster_command import add_parser as add_cluster_parser
from enroll.commands import COMMANDS, photo_lines
from enroll.db_command import add_parser as add_db_parser
from enroll.gallery import GalleryError
from enroll.home import resolve_home
from enroll.api.serve import add_parser as add_serve_parser
from enroll.serving_export import add_parser as add_export_serving_parser
from enroll.token_command import add_parser as add_token_parser
from trainer import cliargs

TF_COMMANDS = {"init", "add-person", "identify", "verify", "remove-person",  # remove-person re-exports served galleries
               "export-serving", "cluster"}


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
    p = sub.add_parser("identify", parents=[common], help="who is in this photo (or video)?")
    p.add_argument("image", metavar="PHOTO_OR_VIDEO", help="a photo, or a video (.mp4, .avi, .mov, .mkv, .webm, ...)")
    sampling = p.add_mutually_exclusive_group()
    sampling.add_argument("--fps", type=float, metavar="F", help="video: look at about F frames a second (default 5)")
    sampling.add_argument("--every-n-frames", type=int, metavar="N", help="video: look at every Nth frame")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--server", metavar="URL", help="ask TF-Serving (http://host:8501 REST or host:8500 gRPC) instead of the local gallery")
    p.add_argument("--method", choices=("nearest", "knn", "svm"), default="nearest",
                   help="nearest enrolled face (default), or a KNN / linear SVM fitted on the gallery; "
                        "all answer unknown beyond τ")
    p = sub.add_parser("verify", parents=[common], help="is this photo of NAME?")
    p.add_argument("image")
    p.add_argument("--name", required=True, type=_text)
    p.add_argument("--method", choices=("distance", "head"), default="distance",
                   help="distance to their closest face within τ (default), or the Siamese verification head "
                        "(trained at first use per model version)")
    p = sub.add_parser("remove-person", parents=[common], help="delete a person and all their data")
    p.add_argument("name", metavar="NAME", type=_text)
    sub.add_parser("list", parents=[common], help="enrolled people")
    p = sub.add_parser("retrain", parents=[common], help="submit a warm-start retraining (a Ray job) now")
    p.add_argument("--wait", action="store_true", help="wait for the job to finish (and promote)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds to wait at most")
    p.add_argument("--cancel", type=int, metavar="JOB", help="stop retraining job JOB on Ray instead")
    sub.add_parser("status", parents=[common], help="production model, gallery size, class changes, jobs")
    add_export_serving_parser(sub, common)
    add_serve_parser(sub, common)
    add_token_parser(sub, common)
    add_db_parser(sub, common)
    add_cluster_parser(sub, common)
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
        result, text, code = {"error": _line(exc), **_extra(exc)}, photo_lines(getattr(exc, "photos", [])), 1
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


if __name__ == "__main__":
    sys.exit(main())
