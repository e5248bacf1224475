"""Client of TF-Serving's gRPC API (PredictionService / ModelService, default port 8500).

    client = GrpcClient("localhost:8500")
    client.embed(faces_uint8)      # uint8 pixels go to ``embed_uint8``: a quarter of the bytes of float32

Tensors travel as TensorProtos (``tensor_content``: raw bytes, no JSON), which is why gRPC is the
transport for batches. gRPC's 4 MB default message limit would refuse a batch of 128 float faces
at 96 px, so the channel lifts it (TF-Serving's own limit is 2 GB). UNAVAILABLE (server down or
restarting) and DEADLINE_EXCEEDED (the per-call ``timeout``) are retried with backoff; any other
status raises ``ServingError`` with the server's message.
"""
from __future__ import annotations

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc)

from serving.protocol import ServingError, SignatureClient, TransientError, with_retries

RETRY_CODES = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
CHANNEL_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]


class GrpcClient(SignatureClient):
    """``target`` like ``host:8500``; ``version`` pins a model version (default: the latest)."""

    def __init__(self, target: str, model: str = "facenet", timeout: float = 5.0, retries: int = 3,
                 version: int | None = None, backoff: float = 0.1, channel: grpc.Channel | None = None):
        self.target, self.model, self.timeout, self.retries = target, model, timeout, retries
        self.version, self.backoff = version, backoff
        self._channel = channel or grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
        self._predictions = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

    def __repr__(self) -> str:
        return f"GrpcClient({self.target!r}, model={self.model!r})"

    def _spec(self, spec, signature: str = "") -> None:
        spec.name = self.model
        if signature:
            spec.signature_name = signature
        if self.version is not None:
            spec.version.value = int(self.version)

    def _call(self, method, request, what: str):
        def call():
            try:
                return method(request, timeout=self.timeout)
            except grpc.RpcError as exc:
                code, details = exc.code(), " ".join(str(exc.details() or "").split())
                if code in RETRY_CODES:
                    raise TransientError(f"{code.name}: {details or 'no details'}") from None
                raise ServingError(f"{what}: {code.name}: {details}") from None

        return with_retries(call, what, self.retries, self.backoff)

    def _predict(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec, signature)
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        response = self._call(self._predictions.Predict, request,
                              f"gRPC predict {self.model}:{signature} at {self.target}")
        return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}

    def status(self) -> dict:
        """GetModelStatusResponse as a dict (``model_version_status``: version, state)."""
        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec)
        response = self._call(self._models.GetModelStatus, request, f"gRPC status of {self.model} at {self.target}")
        return json_format.MessageToDict(response, preserving_proto_field_name=True)

    def model_metadata(self) -> dict:
        """GetModelMetadataResponse as a dict (the signature definitions)."""
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request.model_spec)
        response = self._call(self._predictions.GetModelMetadata, request,
                              f"gRPC metadata of {self.model} at {self.target}")
        return json_format.MessageToDict(response, preserving_proto_field_name=True)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
