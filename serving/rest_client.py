"""Client of TF-Serving's REST API (``/v1/models/<name>[/versions/<v>]``, default port 8501).

    client = RestClient("http://localhost:8501")
    client.embed(faces)            # [N, D] embeddings of aligned faces, pixels [0, 255], any size
    client.identify_jpeg([open("face.jpg", "rb").read()]).best

Requests use the columnar (``"inputs"``) form, whose answers keep every output's full shape (the
row form cannot carry an [N, 0] ``names`` of an empty gallery next to an [N] ``unknown``).
Connection refused/reset, timeouts and HTTP 429/502/503/504 are retried with backoff (a replica
restarting, a load balancer without a ready backend); any other failure raises ``ServingError``
at once with TF-Serving's own one-line message.
"""
from __future__ import annotations

import json

import numpy as np
import requests

from serving import rest_json
from serving.protocol import ServingError, SignatureClient, TransientError, with_retries

RETRY_STATUS = {429, 502, 503, 504}
OUTPUTS = {"serving_default": ("embeddings",), "embed_uint8": ("embeddings",), "embed_jpeg": ("embeddings",),
           "identify": ("distances", "names", "unknown"), "identify_jpeg": ("distances", "names", "unknown"),
           "metadata": ("values",)}


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."


class RestClient(SignatureClient):
    """``url`` like ``http://host:8501``; ``version`` pins a model version (default: the latest)."""

    def __init__(self, url: str, model: str = "facenet", timeout: float = 5.0, retries: int = 3,
                 version: int | None = None, backoff: float = 0.1):
        self.url, self.model, self.timeout, self.retries = url.rstrip("/"), model, timeout, retries
        self.version, self.backoff = version, backoff
        self._session = requests.Session()

    def __repr__(self) -> str:
        return f"RestClient({self.url!r}, model={self.model!r})"

    @property
    def model_url(self) -> str:
        pinned = f"/versions/{self.version}" if self.version is not None else ""
        return f"{self.url}/v1/models/{self.model}{pinned}"

    def _request(self, method: str, url: str, what: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()

        def call() -> dict:
            try:
                response = self._session.request(method, url, data=data, timeout=self.timeout,
                                                 headers={"Content-Type": "application/json"} if data else None)
            except requests.Timeout:  # before ConnectionError: ConnectTimeout is both
                raise TransientError(f"timed out after {self.timeout:g} s") from None
            except requests.ConnectionError as exc:
                raise TransientError(f"connection failed ({_one_line(_root_cause(exc), 160)})") from None
            if response.status_code == 200:
                try:
                    return response.json()
                except ValueError:
                    raise ServingError(f"{what}: answer is not JSON: {_one_line(response.text, 120)}") from None
            try:
                message = response.json().get("error", response.text)
            except ValueError:
                message = response.text or response.reason
            failure = f"HTTP {response.status_code}: {_one_line(message)}"
            if response.status_code in RETRY_STATUS:
                raise TransientError(failure)
            raise ServingError(f"{what}: {failure}")

        return with_retries(call, what, self.retries, self.backoff)

    def _predict(self, signature: str, inputs: dict[str, np.ndarray]) -> dict:
        what = f"REST predict {self.model}:{signature} at {self.url}"
        body = self._request("POST", f"{self.model_url}:predict", what, rest_json.predict_request(signature, inputs))
        try:
            return rest_json.parse_predict_response(body, OUTPUTS.get(signature, ("output",)))
        except ValueError as exc:
            raise ServingError(f"{what}: {exc}") from None

    def status(self) -> dict:
        """TF-Serving's GetModelStatusResponse as JSON (``model_version_status``: version, state)."""
        return self._request("GET", self.model_url, f"REST status of {self.model} at {self.url}")

    def model_metadata(self) -> dict:
        """TF-Serving's GetModelMetadataResponse as JSON (the signature definitions)."""
        return self._request("GET", f"{self.model_url}/metadata", f"REST metadata of {self.model} at {self.url}")

    def close(self) -> None:
        self._session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _root_cause(exc: BaseException) -> str:
    """The innermost reason (e.g. "[Errno 111] Connection refused") of requests' nested errors."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__
    reason = getattr(exc, "reason", None)
    return str(reason or exc)
