"""Serve an export with TF-Serving's REST and gRPC APIs, for development without TF-Serving:

    python -m serving.testing --base-path exports --rest-port 8501 --grpc-port 8500

(here, not in ``emulator``, so that the REST and gRPC halves import each other in one direction only)
"""
from __future__ import annotations

import argparse
import sys
import threading

from serving.testing.emulator import Repository, serve_rest
from serving.testing.emulator_grpc import serve_grpc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.testing",
                                     description="Serve an export with TF-Serving's REST and gRPC APIs (for development).")
    parser.add_argument("--base-path", required=True, help="export base path (holds <name>/<version>/)")
    parser.add_argument("--name", default="facenet")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--rest-port", type=int, default=8501)
    parser.add_argument("--grpc-port", type=int, default=8500)
    args = parser.parse_args(argv)
    repository = Repository(args.base_path, args.name)
    rest = serve_rest(repository, args.rest_port, args.host)
    grpc_server, grpc_port = serve_grpc(repository, args.grpc_port, args.host)
    print(f"serving {args.name} from {args.base_path}: REST http://{args.host}:{rest.server_address[1]}, "
          f"gRPC {args.host}:{grpc_port} (Ctrl-C stops)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    rest.shutdown()
    grpc_server.stop(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
