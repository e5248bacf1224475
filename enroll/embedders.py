"""Where the production model's embeddings come from: this process (the default) or TF-Serving.

``service`` asks an embedder for ``current(home)``: the production version, its meta.json and a
function from aligned uint8 crops (n, s, s, 3) to L2-normalised embeddings (n, d). Gallery vectors,
queries and τ must all come from that one version, so the served embedder checks that the export
TF-Serving answers with carries the production ``model_version`` and pins its calls to that export.

    LocalEmbedder()                     the Keras SavedModel of ``models/<production>/``, loaded once
    ServedEmbedder("tf-serving:8500")   TF-Serving's gRPC API (``serving.grpc_client``), for an API
                                        replica that should not hold the network itself
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from enroll.gallery import Unavailable


class EmbedderUnavailable(Unavailable):
    """The embedding model cannot answer now (server down, or it serves another model version)."""


@dataclass(frozen=True)
class EmbeddingModel:
    version: int  # the production model version the vectors belong to
    meta: dict  # its meta.json (image_size, threshold, ...)
    embed: Callable[[np.ndarray], np.ndarray]  # uint8 crops (n, s, s, 3) -> float32 (n, d), L2-normalised


class Embedder(Protocol):
    def current(self, home) -> EmbeddingModel: ...


class LocalEmbedder:
    """The production model in this process (``model_versions.production``: loaded once per version)."""

    def current(self, home) -> EmbeddingModel:
        from enroll import model_versions

        version, meta, model = model_versions.production(home)
        return EmbeddingModel(version, meta, lambda pixels: model_versions.embed_pixels(model, pixels))

    def __repr__(self) -> str:
        return "LocalEmbedder()"


class ServedEmbedder:
    """Embeddings from TF-Serving's gRPC API at ``target`` (``host:port``), through ``serving``'s client.

    Each call reads the served export's metadata (one small RPC) and refuses, as unavailable, an
    export of another model version than production (after a promotion, until TF-Serving has loaded
    the new export); the embedding call is pinned to that export's version, so a newer export
    loaded in between cannot answer it.
    """

    def __init__(self, target: str, model: str = "facenet", timeout: float = 10.0, retries: int = 2):
        from serving.grpc_client import CHANNEL_OPTIONS, GrpcClient

        import grpc

        self.target, self.model, self.timeout, self.retries = target.removeprefix("grpc://"), model, timeout, retries
        self._channel = grpc.insecure_channel(self.target, options=CHANNEL_OPTIONS)
        self._latest = GrpcClient(self.target, model, timeout, retries, channel=self._channel)
        self._client = GrpcClient

    def current(self, home) -> EmbeddingModel:
        from enroll.model_versions import production_meta
        from serving.protocol import ServingError

        version, meta = production_meta(home)
        try:
            served = self._latest.metadata()
        except ServingError as exc:
            raise EmbedderUnavailable(f"embedding server {self.target}: {exc}") from None
        if served.get("model_version") != version:
            raise EmbedderUnavailable(
                f"embedding server {self.target} serves model version {served.get('model_version')}, production is "
                f"{version}: export it (`enroll export-serving`) and retry once TF-Serving has loaded it")
        pinned = self._client(self.target, self.model, self.timeout, self.retries, version=int(served["version"]),
                              channel=self._channel)
        return EmbeddingModel(version, meta, lambda pixels: self._embed(pinned, pixels))

    def _embed(self, client, pixels) -> np.ndarray:
        from serving.protocol import ServingError

        try:
            return client.embed(np.asarray(pixels, np.uint8))
        except ServingError as exc:
            raise EmbedderUnavailable(f"embedding server {self.target}: {exc}") from None

    def close(self) -> None:
        self._channel.close()

    def __repr__(self) -> str:
        return f"ServedEmbedder({self.target!r})"


def embedder_for(server: str | None) -> Embedder:
    """``--embed-server HOST:PORT`` -> a ServedEmbedder; none -> the in-process model."""
    return ServedEmbedder(server) if server else LocalEmbedder()
