"""The gRPC half of the TF-Serving stand-in (``serving.testing.emulator``): PredictionService + ModelService.

Implements ``Predict``, ``GetModelMetadata`` and ``GetModelStatus`` with TF-Serving's messages and
status codes over a ``Repository``; ``Fault`` / ``Drop`` from the hook become the matching gRPC
status (``Drop`` is UNAVAILABLE, what a client sees when a server goes away mid-call).
"""
from __future__ import annotations

from concurrent import futures

import grpc
import tensorflow as tf
from tensorflow_serving.apis import model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc

from serving.testing.emulator import GRPC_CODES, Drop, Fault, Repository


def _version(spec) -> int | None:
    return spec.version.value if spec.HasField("version") else None


class _Guard:
    """Runs the hook and turns Fault / Drop into an aborted call."""

    def __init__(self, hook):
        self.hook = hook

    def run(self, kind: str, context, work):
        try:
            if self.hook:
                self.hook(kind)
            return work()
        except Drop:
            context.abort(grpc.StatusCode.UNAVAILABLE, "connection dropped")
        except Fault as fault:
            context.abort(GRPC_CODES.get(fault.status, grpc.StatusCode.UNKNOWN), str(fault))


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, repository: Repository, hook=None):
        self.repository, self.guard = repository, _Guard(hook)

    def Predict(self, request, context):
        def work():
            spec = request.model_spec

            def inputs_of(dtypes):
                for name, proto in request.inputs.items():
                    sent = tf.as_dtype(proto.dtype)
                    if name in dtypes and sent.as_numpy_dtype != dtypes[name]:
                        raise ValueError(f"input {name}: expects {tf.as_dtype(dtypes[name]).name}, got {sent.name}")
                return {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}

            number, outputs = self.repository.predict(spec.name, _version(spec), spec.signature_name, inputs_of)
            response = predict_pb2.PredictResponse()
            response.model_spec.name, response.model_spec.version.value = spec.name, number
            response.model_spec.signature_name = spec.signature_name or "serving_default"
            for name, value in outputs.items():
                response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
            return response

        return self.guard.run("predict", context, work)

    def GetModelMetadata(self, request, context):
        def work():
            if list(request.metadata_field) != ["signature_def"]:
                raise Fault(400, "Metadata field must be signature_def")
            return self.repository.metadata_response(request.model_spec.name, _version(request.model_spec))

        return self.guard.run("metadata", context, work)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, repository: Repository, hook=None):
        self.repository, self.guard = repository, _Guard(hook)

    def GetModelStatus(self, request, context):
        return self.guard.run("status", context, lambda: self.repository.status(
            request.model_spec.name, _version(request.model_spec)))


def serve_grpc(repository: Repository, port: int = 0, host: str = "127.0.0.1", hook=None,
               workers: int = 4) -> tuple[grpc.Server, int]:
    """Start PredictionService + ModelService; returns (server, bound port). ``server.stop(0)`` ends it."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers),
                         options=[("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionServicer(repository, hook), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(repository, hook), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if not bound:
        raise OSError(f"cannot bind gRPC to {host}:{port}")
    server.start()
    return server, bound
