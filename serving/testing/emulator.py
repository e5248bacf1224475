"""A stand-in for ``tensorflow_model_server``: its REST predict API over an export, in-process (the
gRPC half is ``emulator_grpc``; both from a shell: ``python -m serving.testing``).

For tests and for machines without TF-Serving (no Docker, no binary): it serves
``<base>/<name>/<version>/`` with TF-Serving's URLs, request/response JSON (``serving.rest_json``),
gRPC services, status codes and error bodies, so the clients are exercised over real sockets.
It is not a production server: one model, versions loaded on first use, no batching, no version
policy. ``hook(kind)`` runs before each request (kind: ``predict``, ``status``, ``metadata``) and
may sleep or raise ``Fault`` (answer with an HTTP status / gRPC code) or ``Drop`` (close the
connection unanswered), to test the clients' timeouts and retries.
"""
from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.python.tools import saved_model_utils
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

from serving import rest_json, versions
from serving.protocol import one_line_error


class Fault(Exception):
    """Answer with this HTTP status (mapped to the matching gRPC code) and message."""

    def __init__(self, status: int, message: str = "injected fault"):
        super().__init__(message)
        self.status = status


class Drop(Exception):
    """Close the connection without answering (REST) / abort as UNAVAILABLE (gRPC)."""


GRPC_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND,
              429: grpc.StatusCode.RESOURCE_EXHAUSTED, 503: grpc.StatusCode.UNAVAILABLE,
              504: grpc.StatusCode.DEADLINE_EXCEEDED, 500: grpc.StatusCode.INTERNAL}


class Repository:
    """The versions of one model under ``<base>/<name>/``; the latest unless a version is named."""

    def __init__(self, base_path, model_name: str = "facenet"):
        self.base_path, self.model_name = base_path, model_name
        self._loaded: dict[int, object] = {}
        self._lock = threading.Lock()

    def _version(self, name: str, version: int | None) -> int:
        if name != self.model_name:
            raise Fault(404, f"Servable not found for request: Latest({name})")
        try:
            return int(versions.version_dir(self.base_path, name, version).name)
        except FileNotFoundError:
            raise Fault(404, f"Servable not found for request: {'Latest' if version is None else 'Specific'}"
                             f"({name}{'' if version is None else f', {version}'})") from None

    def load(self, name: str, version: int | None = None):
        number = self._version(name, version)
        with self._lock:
            if number not in self._loaded:
                path = versions.version_dir(self.base_path, name, number)
                self._loaded[number] = tf.saved_model.load(str(path))
            return number, self._loaded[number]

    def predict(self, name: str, version: int | None, signature: str, inputs_of) -> tuple[int, dict]:
        """``inputs_of(dtypes)`` builds the input arrays once the signature's dtypes are known."""
        number, loaded = self.load(name, version)
        fn = loaded.signatures.get(signature or "serving_default")
        if fn is None:
            raise Fault(400, f"Serving signature name: \"{signature}\" not found in signature def")
        specs = fn.structured_input_signature[1]
        try:
            inputs = inputs_of({k: np.dtype(object) if s.dtype == tf.string else s.dtype.as_numpy_dtype
                                for k, s in specs.items()})
            if set(inputs) != set(specs):
                raise ValueError(f"input keys {sorted(inputs)} do not match the signature's {sorted(specs)}")
            out = fn(**{k: tf.constant(v, dtype=specs[k].dtype) for k, v in inputs.items()})
        except (ValueError, TypeError, tf.errors.InvalidArgumentError) as exc:
            raise Fault(400, one_line_error(exc)) from None
        return number, {k: v.numpy() for k, v in out.items()}

    def signature_defs(self, name: str, version: int | None) -> tuple[int, get_model_metadata_pb2.SignatureDefMap]:
        number = self._version(name, version)
        meta_graph = saved_model_utils.get_meta_graph_def(
            str(versions.version_dir(self.base_path, name, number)), "serve")
        result = get_model_metadata_pb2.SignatureDefMap()
        for key, value in meta_graph.signature_def.items():
            if not key.startswith("__"):
                result.signature_def[key].CopyFrom(value)
        return number, result

    def status(self, name: str, version: int | None) -> get_model_status_pb2.GetModelStatusResponse:
        numbers = [self._version(name, version)] if version is not None else \
            versions.list_versions(self.base_path, name) or [self._version(name, None)]
        response = get_model_status_pb2.GetModelStatusResponse()
        for number in numbers:
            response.model_version_status.add(version=number, state=get_model_status_pb2.ModelVersionStatus.AVAILABLE)
        return response

    def metadata_response(self, name: str, version: int | None) -> get_model_metadata_pb2.GetModelMetadataResponse:
        number, defs = self.signature_defs(name, version)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name, response.model_spec.version.value = name, number
        response.metadata["signature_def"].Pack(defs)
        return response


# ------------------------------------------------------------------------------- REST
_URL = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+))?(?P<rest>/metadata|:predict)?$")


def _rest_handler(repository: Repository, hook: Callable[[str], None] | None):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep test output clean
            pass

        def _answer(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout): fine
                self.close_connection = True

        def _serve(self, method: str) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            match = _URL.match(self.path)
            kind = {None: "status", "/metadata": "metadata", ":predict": "predict"}[match["rest"]] if match else ""
            try:
                if not match or (method == "POST") != (kind == "predict"):
                    raise Fault(404, f"Malformed request: {method} {self.path}")
                if hook:
                    hook(kind)
                name, version = match["name"], int(match["version"]) if match["version"] else None
                if kind == "status":
                    self._answer(200, json_format.MessageToDict(repository.status(name, version),
                                                                preserving_proto_field_name=True))
                elif kind == "metadata":
                    self._answer(200, json_format.MessageToDict(repository.metadata_response(name, version),
                                                                preserving_proto_field_name=True))
                else:
                    self._predict(name, version, body)
            except Drop:
                self.close_connection = True
            except Fault as fault:
                self._answer(fault.status, {"error": str(fault)})
            except Exception as exc:  # noqa: BLE001  a server answers 500, it does not hang up
                self._answer(500, {"error": one_line_error(exc)})

        def _predict(self, name: str, version: int | None, raw: bytes) -> None:
            try:
                request = json.loads(raw or b"null")
                if not isinstance(request, dict):
                    raise ValueError("Is not object")
            except ValueError as exc:
                raise Fault(400, f"JSON Parse error: {exc}") from None
            forms: list[str] = []

            def inputs_of(dtypes):
                inputs, form = rest_json.parse_predict_request(request, dtypes)
                forms.append(form)
                return inputs

            _, outputs = repository.predict(name, version, request.get("signature_name", ""), inputs_of)
            try:
                self._answer(200, rest_json.predict_response(outputs, forms[0]))
            except ValueError as exc:
                raise Fault(400, str(exc)) from None

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

    return Handler


def serve_rest(repository: Repository, port: int = 0, host: str = "127.0.0.1", hook=None) -> ThreadingHTTPServer:
    """Start the REST API in a daemon thread; ``server.server_address[1]`` is the port."""
    server = ThreadingHTTPServer((host, port), _rest_handler(repository, hook))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="rest-emulator", daemon=True).start()
    return server
