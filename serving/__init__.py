"""TF-Serving export (versioned SavedModels with embed / identify signatures) and clients.

A library: it is handed a Keras model and a gallery (names, vectors) and knows nothing of where
they came from; enroll reads its home and calls it (layering: trainer <- serving <- enroll).

module.py          the exported tf.Module and its signatures
export.py          export() / ``python -m serving.export --run`` (a training run, empty gallery)
tflite.py          edge export: TFLite float32 / float16 / int8 (``serving.export --tflite``)
tflite_embedder.py run a .tflite model on batches (LiteRT interpreter)
onnx_export.py     ONNX export (tf2onnx, ``serving.export --onnx``) and an ONNX Runtime embedder
versions.py        <base>/<name>/<version>/ layout, atomic publication
models_config.py   TF-Serving's --model_config_file
protocol.py        what all clients share (ServingError, retries, Identification)
client.py          InProcessClient, connect(); rest_client.py, grpc_client.py
rest_json.py       TF-Serving's JSON tensor mapping
testing/           test infrastructure: a TF-Serving emulator (REST and gRPC) over an export
"""
import trainer  # noqa: F401  (the TensorFlow environment's one owner: tf-keras, oneDNN; before TensorFlow loads)
