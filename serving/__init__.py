"""TF-Serving export (versioned SavedModels with embed / identify signatures) and clients.

module.py          the exported tf.Module and its signatures
export.py          export() / load_gallery() / ``python -m serving.export``
versions.py        <base>/<name>/<version>/ layout, atomic publication
models_config.py   TF-Serving's --model_config_file
protocol.py        what all clients share (ServingError, retries, Identification)
client.py          InProcessClient, connect(); rest_client.py, grpc_client.py
rest_json.py       TF-Serving's JSON tensor mapping
emulator.py        a TF-Serving stand-in (REST; emulator_grpc.py: gRPC) for tests and development
"""
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
