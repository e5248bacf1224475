"""The exported tf.Module: embedding and gallery-identification signatures around a Keras model.

Signatures (every batch dimension is dynamic; D is the embedding size, k the export's top_k):

=================  ====================================  ===========================================
name               inputs                                outputs
=================  ====================================  ===========================================
serving_default    images   float32 [N, H, W, 3]          embeddings float32 [N, D]
embed_uint8        images   uint8   [N, H, W, 3]          embeddings float32 [N, D]
embed_jpeg         image_bytes string [N] (JPEG/PNG/...)  embeddings float32 [N, D]
identify           images   float32 [N, H, W, 3]          names string [N, k'], distances float32
                                                          [N, k'], unknown bool [N]
identify_jpeg      image_bytes string [N]                 (as identify)
metadata           keys     string [M]                    values string [M] (JSON-encoded; "" if unknown)
=================  ====================================  ===========================================

Images are aligned faces, RGB pixels in [0, 255] at any size: they are resized in the graph to the
model's input size with the training pipeline's resize (bilinear), so every client sends the same
thing whatever the model. ``serving_default`` takes float32 because TF-Serving's REST API accepts
JSON integers and decimals for float inputs but only integers for uint8; gRPC clients that hold
uint8 pixels use ``embed_uint8`` and send a quarter of the bytes. ``image_bytes`` ends in
``_bytes`` so TF-Serving's REST API treats the values as binary (``{"b64": ...}``).

Identification ranks *people*, not photos: distances are L2 between embeddings, a person's distance
is that of their closest enrolled face, and ``names`` holds the k' = min(k, people) closest people,
nearest first. ``unknown`` is true when the nearest person is farther than the threshold (a match
is ``distance <= threshold``, the convention of ``trainer.evaluation``) or the gallery is empty.

The gallery, threshold and metadata are variables with a dynamic first dimension, so a gallery
change re-assigns them and saves again without re-tracing the network (see ``serving.export``).
"""
from __future__ import annotations

import json

import numpy as np
import tensorflow as tf

IMAGES = tf.TensorSpec([None, None, None, 3], tf.float32, name="images")
IMAGES_UINT8 = tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")
IMAGE_BYTES = tf.TensorSpec([None], tf.string, name="image_bytes")
KEYS = tf.TensorSpec([None], tf.string, name="keys")

SIGNATURES = ("serving_default", "embed_uint8", "embed_jpeg", "identify", "identify_jpeg", "metadata")

# The variables a gallery change assigns (``set_gallery``, ``set_metadata``): everything but the
# network's. A gallery-only version rewrites exactly these (serving/gallery_versions.py).
GALLERY_ATTRIBUTES = ("top_k", "gallery", "gallery_person", "people", "threshold", "meta_keys", "meta_values")


def checkpoint_key(attribute: str) -> str:
    """tf.train's key, in an export's variables checkpoint, of the variable ``FaceNetServing.<attribute>``."""
    return f"{attribute}/.ATTRIBUTES/VARIABLE_VALUE"


# Where an export's variables checkpoint holds the served people. Readers (enroll's remove-person)
# list who a version names with it without loading the SavedModel; renaming the attribute
# ``FaceNetServing.people`` changes this key, and it follows.
PEOPLE_CHECKPOINT_KEY = checkpoint_key("people")


def gallery_arrays(embeddings, names, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(face embeddings [G, D], person index per face [G], distinct names [P]) from parallel lists."""
    emb = np.zeros((0, dim), np.float32) if embeddings is None else np.asarray(embeddings, np.float32)
    names = [] if names is None else [str(n) for n in names]
    if emb.ndim != 2 or emb.shape[1] != dim or len(emb) != len(names):
        raise ValueError(f"gallery: expected {len(names)} embeddings of size {dim} for {len(names)} names, "
                         f"got an array of shape {emb.shape}")
    people = sorted(set(names))
    index = {name: i for i, name in enumerate(people)}
    return emb, np.array([index[n] for n in names], np.int32), np.array(people, dtype=object)


class FaceNetServing(tf.Module):
    """Serving signatures around ``model`` (pixels in [0, 255] -> L2-normalised embeddings)."""

    def __init__(self, model, image_size: int | None = None):
        super().__init__(name="facenet_serving")
        self.image_size = int(image_size or model.input_shape[1])
        self.embedding_dim = int(model.output_shape[-1])
        # Only the network's variables are tracked, not the Keras model: a tracked Keras model
        # also gets tf_keras's SavedModel extras (per-layer metadata and call traces) written at
        # every export, which nothing here or in TF-Serving reads.
        self.network_variables = list(model.variables)
        self._model = lambda x: model(x, training=False)
        self.top_k = tf.Variable(5, trainable=False, name="top_k")
        self.gallery = tf.Variable(tf.zeros([0, self.embedding_dim]), trainable=False,
                                   shape=[None, self.embedding_dim], name="gallery_embeddings")
        self.gallery_person = tf.Variable(tf.zeros([0], tf.int32), trainable=False, shape=[None],
                                          name="gallery_person")
        # (PEOPLE_CHECKPOINT_KEY names this attribute.)
        self.people = tf.Variable(tf.zeros([0], tf.string), trainable=False, shape=[None], name="people")
        self.threshold = tf.Variable(0.0, trainable=False, name="threshold")
        self.meta_keys = tf.Variable(tf.zeros([0], tf.string), trainable=False, shape=[None], name="meta_keys")
        self.meta_values = tf.Variable(tf.zeros([0], tf.string), trainable=False, shape=[None],
                                       name="meta_values")
        # Traced once, here, as concrete functions: handed tf.functions, tf.saved_model.save
        # would trace every signature again at every save. The traces hold the network's
        # variables, not the Keras model, which is let go so that a cache of modules keyed by
        # (weak references to) models can release them.
        self.traced = self._trace()
        self._model = None

    def set_gallery(self, embeddings, names, threshold: float, top_k: int = 5) -> tuple[int, int]:
        """Replace the gallery; returns (faces, people)."""
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        emb, person, people = gallery_arrays(embeddings, names, self.embedding_dim)
        self.top_k.assign(int(top_k))
        self.gallery.assign(emb)
        self.gallery_person.assign(person)
        self.people.assign(tf.constant(people.tolist() if len(people) else [], tf.string))
        self.threshold.assign(float(threshold))
        return len(emb), len(people)

    def set_metadata(self, metadata: dict) -> None:
        """Everything under key ``all`` as one JSON object, and each key on its own."""
        items = {"all": metadata, **metadata}
        self.meta_keys.assign(tf.constant(list(items), tf.string))
        self.meta_values.assign(tf.constant([json.dumps(v, sort_keys=True) for v in items.values()], tf.string))

    # ---------------------------------------------------------------- graph pieces
    def _prepare(self, images):
        size = self.image_size
        same = tf.logical_and(tf.shape(images)[1] == size, tf.shape(images)[2] == size)
        images = tf.cond(same, lambda: images, lambda: tf.image.resize(images, (size, size)))
        return tf.ensure_shape(images, [None, size, size, 3])

    def _decode(self, image_bytes):
        size = self.image_size

        def one(data):
            image = tf.io.decode_image(data, channels=3, expand_animations=False)
            return self._prepare(tf.cast(image, tf.float32)[tf.newaxis])[0]

        return tf.map_fn(one, image_bytes, fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))

    def _embed(self, images):
        return {"embeddings": tf.cast(self._model(self._prepare(images)), tf.float32)}

    def _identify(self, images):
        query = self._embed(images)["embeddings"]
        # Squared distances by expansion: one [N, G] matmul instead of an [N, G, D] difference.
        sq = (tf.reduce_sum(tf.square(query), 1, keepdims=True) - 2.0 * tf.matmul(query, self.gallery, transpose_b=True)
              + tf.reduce_sum(tf.square(self.gallery), 1)[tf.newaxis])
        people = tf.shape(self.people)[0]
        per_person = tf.transpose(tf.math.unsorted_segment_min(
            tf.transpose(tf.maximum(sq, 0.0)), self.gallery_person, people))  # [N, P]
        neg, index = tf.math.top_k(-per_person, k=tf.minimum(self.top_k, people))
        distances = tf.sqrt(-neg)
        nearest = tf.concat([distances, tf.fill([tf.shape(query)[0], 1], np.inf)], axis=1)[:, 0]
        # An empty gallery knows nobody, even without a threshold (threshold inf = closed set).
        unknown = tf.logical_or(tf.equal(people, 0), tf.logical_not(nearest <= self.threshold))
        return {"names": tf.gather(self.people, index), "distances": distances, "unknown": unknown}

    # ---------------------------------------------------------------- signatures
    def _embed_uint8(self, images):
        return self._embed(tf.cast(images, tf.float32))

    def _embed_jpeg(self, image_bytes):
        return self._embed(self._decode(image_bytes))

    def _identify_jpeg(self, image_bytes):
        return self._identify(self._decode(image_bytes))

    def _metadata(self, keys):
        match = tf.equal(keys[:, tf.newaxis], self.meta_keys[tf.newaxis])
        found = tf.reduce_any(match, axis=1)
        index = tf.where(found, tf.argmax(tf.cast(match, tf.int32), axis=1, output_type=tf.int32),
                         tf.shape(self.meta_keys)[0])
        return {"values": tf.gather(tf.concat([self.meta_values, [""]], 0), index)}

    def _trace(self) -> dict:
        functions = {"serving_default": (self._embed, IMAGES), "embed_uint8": (self._embed_uint8, IMAGES_UINT8),
                     "embed_jpeg": (self._embed_jpeg, IMAGE_BYTES), "identify": (self._identify, IMAGES),
                     "identify_jpeg": (self._identify_jpeg, IMAGE_BYTES), "metadata": (self._metadata, KEYS)}
        return {name: tf.function(fn, input_signature=[spec]).get_concrete_function()
                for name, (fn, spec) in functions.items()}

    def signatures(self) -> dict:
        """The concrete signature functions, for ``tf.saved_model.save(..., signatures=...)``."""
        return dict(self.traced)
