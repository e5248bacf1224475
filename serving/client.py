"""Serving clients: one interface over TF-Serving (REST or gRPC) and the embedded default.

    from serving.client import connect
    client = connect()                                  # in-process: latest export under $FACENET_HOME/serving
    client = connect("http://tf-serving:8501")          # RestClient
    client = connect("tf-serving:8500")                 # GrpcClient
    client.embed(images); client.embed_jpeg(blobs); client.identify(images).best; client.metadata()

Every client has ``embed``, ``embed_jpeg``, ``identify``, ``identify_jpeg`` and ``metadata``
(``serving.protocol``) and raises ``ServingError`` with a one-line message on failure.
``InProcessClient`` runs the exported SavedModel itself, the same graph TF-Serving would run, so
the embedded default and a deployment cannot disagree.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from serving import versions
from serving.protocol import Identification, ServingError, SignatureClient, TransientError, one_line_error

DEFAULT_HOME = ".facenet"


def resolve_saved_model(path: str | Path, model: str = "facenet", version: int | None = None) -> Path:
    """A SavedModel directory from a version dir, a model dir ``<base>/<name>`` or a base path."""
    path = Path(path)
    if (path / "saved_model.pb").exists():
        return path
    if versions.list_versions(path.parent, path.name):
        return versions.version_dir(path.parent, path.name, version)
    return versions.version_dir(path, model, version)


class InProcessClient(SignatureClient):
    """Runs the exported signatures in this process (no server); thread-safe."""

    def __init__(self, saved_model_dir: str | Path, model: str = "facenet", version: int | None = None):
        import tensorflow as tf

        try:
            self.path = resolve_saved_model(saved_model_dir, model, version)
            self._loaded = tf.saved_model.load(str(self.path))
        except (FileNotFoundError, OSError) as exc:
            raise ServingError(f"cannot load a SavedModel from {saved_model_dir}: {exc}") from None
        self.version = int(self.path.name) if self.path.name.isdigit() else None

    def __repr__(self) -> str:
        return f"InProcessClient({str(self.path)!r})"

    def _predict(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import tensorflow as tf

        fn = self._loaded.signatures.get(signature)
        if fn is None:
            raise ServingError(f"{self.path}: no signature {signature!r} (has {', '.join(self._loaded.signatures)})")
        specs = fn.structured_input_signature[1]
        try:
            out = fn(**{k: tf.constant(v, dtype=specs[k].dtype) for k, v in inputs.items()})
        except (tf.errors.InvalidArgumentError, TypeError, ValueError) as exc:
            raise ServingError(f"in-process {signature} of {self.path}: {one_line_error(exc)}") from None
        return {k: v.numpy() for k, v in out.items()}

    def close(self) -> None:
        self._loaded = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def connect(server: str | None = None, model: str = "facenet", base_path: str | Path | None = None,
            **options) -> SignatureClient:
    """A client for ``server``: ``http(s)://...`` -> REST, ``host:port`` or ``grpc://host:port``
    -> gRPC, None -> in-process on the latest export under ``base_path`` (default
    ``$FACENET_HOME/serving``). ``options`` go to the client (timeout, retries, version, ...)."""
    if server is None:
        base = base_path or Path(os.environ.get("FACENET_HOME", DEFAULT_HOME)) / "serving"
        return InProcessClient(base, model, options.get("version"))
    if server.startswith(("http://", "https://")):
        from serving.rest_client import RestClient

        return RestClient(server, model, **options)
    from serving.grpc_client import GrpcClient

    return GrpcClient(server.removeprefix("grpc://"), model, **options)


def __getattr__(name: str):
    # RestClient / GrpcClient load requests / grpc only when asked for.
    if name == "RestClient":
        from serving.rest_client import RestClient

        return RestClient
    if name == "GrpcClient":
        from serving.grpc_client import GrpcClient

        return GrpcClient
    raise AttributeError(name)


__all__ = ["GrpcClient", "Identification", "InProcessClient", "RestClient", "ServingError", "SignatureClient",
           "TransientError", "connect", "resolve_saved_model"]
