"""``enroll serve``: the API and the web page under uvicorn.

    enroll serve [--host 127.0.0.1] [--port 8000] [--embed-server HOST:PORT] [--workers N]
                 [--cors-origin URL ...] [--max-body-bytes B] [--max-photos N] [--max-photo-bytes B]

The home (its gallery and token store) is opened once here first, so a home or database that
cannot be used is one ``error:`` line and exit 1 rather than a server that never becomes ready.
Each uvicorn worker is a process of its own with its own model, index and connections (the
settings reach it in $FACENET_API_SETTINGS). This module imports no web framework until it runs.
"""
from __future__ import annotations

import argparse
import os
import sys

DEFAULTS = {"host": "127.0.0.1", "port": 8000, "workers": 1}
WORKER_HEALTHCHECK_S = 120


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be from 0 to 65535, got {value}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_parser(sub, common) -> None:
    from enroll.api.settings import ApiSettings

    defaults = ApiSettings(home="")
    p = sub.add_parser("serve", parents=[common], help="serve the REST API and the web page (uvicorn)")
    p.add_argument("--host", default=DEFAULTS["host"], help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=_port, default=DEFAULTS["port"])
    p.add_argument("--embed-server", metavar="HOST:PORT",
                   help="embed with TF-Serving's gRPC API there instead of loading the model in this process")
    p.add_argument("--workers", type=_positive, default=DEFAULTS["workers"], help="uvicorn worker processes")
    p.add_argument("--cors-origin", action="append", default=[], metavar="URL",
                   help="allow browser pages from this origin to call the API (repeatable; default: none)")
    p.add_argument("--max-body-bytes", type=_positive, default=defaults.max_body_bytes)
    p.add_argument("--max-photos", type=_positive, default=defaults.max_photos, help="photos per request")
    p.add_argument("--max-photo-bytes", type=_positive, default=defaults.max_photo_bytes)


def cmd_serve(args, home, notes):
    import uvicorn

    from enroll.api.settings import SETTINGS_ENV, ApiSettings
    from enroll.backends import open_gallery
    from enroll.tokens import open_token_store

    settings = ApiSettings(home=str(home), embed_server=args.embed_server, max_body_bytes=args.max_body_bytes,
                           max_photos=args.max_photos, max_photo_bytes=args.max_photo_bytes,
                           cors_origins=tuple(args.cors_origin))
    open_gallery(home, create=True).close()  # a broken home or database: one error line, now
    with open_token_store(home) as tokens:
        live = [t for t in tokens.tokens() if t.revoked is None]
    if not live:
        print("note: no API token yet: every /v1/ call will be refused until you create one with "
              "`enroll token create --scope identify,enrol`", file=sys.stderr, flush=True)
    os.environ[SETTINGS_ENV] = settings.to_json()
    # Importing TensorFlow and loading the models can hold a worker's GIL for seconds: uvicorn's
    # supervisor (--workers > 1) would take its silence for death and restart it, again and again.
    uvicorn.run("enroll.api.app:app_from_environment", factory=True, host=args.host, port=args.port,
                workers=args.workers, log_level="info", timeout_graceful_shutdown=10, server_header=False,
                timeout_worker_healthcheck=WORKER_HEALTHCHECK_S)
    return {"stopped": True, "host": args.host, "port": args.port}, []
