"""FaceNet training core.

Importing this package forces tf-keras (Keras 2) before TensorFlow is first imported: Keras 3's
``fit`` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585), so every entry point and
every Ray worker must see ``TF_USE_LEGACY_KERAS=1``. Modules use ``import tf_keras as keras``.

It also turns TensorFlow's oneDNN kernels on unless the user chose (``TF_ENABLE_ONEDNN_OPTS=0``):
TensorFlow does so itself only on CPUs with AVX-512 VNNI/BF16 or AMX, and on an AVX2-only CPU a
training step of nn4_small2 at 128 px was 1.66× faster with them (experiments/bench_onednn.py).
Ray workers inherit it from the driver's environment, or set it here when they import the package.
"""
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
