"""Test infrastructure: a TF-Serving emulator that runs an export's SavedModel behind TF-Serving's
REST and gRPC APIs, so the clients are tested over real sockets where ``tensorflow_model_server``
cannot be installed. Not part of the serving library (nothing in serving/ imports it).

emulator.py        Repository (the export's versions, loaded on first use), Fault / Drop, the REST server
emulator_grpc.py   the gRPC PredictionService + ModelService over the same Repository
__main__.py        ``python -m serving.testing --base-path exports``: both servers from a shell
"""
