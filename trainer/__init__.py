"""FaceNet training core.

Importing this package forces tf-keras (Keras 2) before TensorFlow is first imported: Keras 3's
``fit`` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585), so every entry point and
every Ray worker must see ``TF_USE_LEGACY_KERAS=1``. Modules use ``import tf_keras as keras``.
"""
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
