"""Triplet losses with tensorflow-addons 0.23 semantics (tfa no longer imports on TF >= 2.16).

The numbers match ``tfa.losses.TripletSemiHardLoss`` / ``TripletHardLoss`` (pinned by
``tests/fixtures/tfa_triplet_golden.json``). One deliberate difference in *how*, not *what*: tfa
mines semi-hard negatives through a tiled ``[B*B, B]`` matrix, i.e. O(B^3) memory (23 GB at the
FaceNet paper's B=1800); here the same negative is found by sorting each anchor's negatives and
binary-searching, O(B^2 log B). Ties, fallbacks and the division by the number of positive pairs
are tfa's.
"""
import tensorflow as tf
import tf_keras as keras

DISTANCE_METRICS = ("L2", "squared-L2", "angular")


def pairwise_distance(embeddings, squared=False):
    """``out[i, j] = ||e_i - e_j||_2`` (squared if asked), tfa's numerically safe version.

    Uses the |a|^2 + |b|^2 - 2ab expansion; tiny negative round-off is clamped to 0, and zero
    entries get +1e-16 before the sqrt so its gradient stays finite. The diagonal is exactly 0.
    """
    embeddings = tf.convert_to_tensor(embeddings)
    dtype = embeddings.dtype
    squared_norms = tf.reduce_sum(tf.square(embeddings), axis=1, keepdims=True)
    distances_squared = squared_norms + tf.transpose(squared_norms) - 2.0 * tf.matmul(
        embeddings, embeddings, transpose_b=True
    )
    distances_squared = tf.maximum(distances_squared, 0.0)
    is_zero = tf.less_equal(distances_squared, 0.0)
    if squared:
        distances = distances_squared
    else:
        distances = tf.sqrt(distances_squared + tf.cast(is_zero, dtype) * 1e-16)
    distances *= tf.cast(tf.logical_not(is_zero), dtype)
    off_diagonal = 1.0 - tf.eye(tf.shape(embeddings)[0], dtype=dtype)
    return distances * off_diagonal


def angular_distance(embeddings):
    """``out[i, j] = 1 - cos(e_i, e_j)``, floored at 1e-16 (tfa: the diagonal is ~1e-16, not 0)."""
    normalized = tf.math.l2_normalize(embeddings, axis=1)
    return tf.maximum(1.0 - tf.matmul(normalized, normalized, transpose_b=True), 1e-16)


def _resolve_distance(distance_metric):
    if callable(distance_metric):
        return distance_metric
    if distance_metric == "L2":
        return lambda embeddings: pairwise_distance(embeddings, squared=False)
    if distance_metric == "squared-L2":
        return lambda embeddings: pairwise_distance(embeddings, squared=True)
    if distance_metric == "angular":
        return angular_distance
    # A custom callable survives get_config/from_config by its registered Keras name.
    registered = keras.utils.get_registered_object(distance_metric)
    if callable(registered):
        return registered
    raise ValueError(
        f"distance_metric must be one of {DISTANCE_METRICS}, a callable, or the registered Keras "
        f"name of one; got {distance_metric!r}"
    )


def _prepare(labels, embeddings, distance_metric):
    """float32 distance matrix [B, B] and the same-label matrix; half precision is too coarse."""
    embeddings = tf.convert_to_tensor(embeddings)
    precise = tf.cast(embeddings, tf.float32)
    distances = tf.cast(_resolve_distance(distance_metric)(precise), tf.float32)
    labels = tf.reshape(labels, [-1, 1])
    same_label = tf.equal(labels, tf.transpose(labels))
    return distances, same_label


def _masked_maximum(data, mask):
    """Row-wise max over ``mask``; an all-False row yields the row's minimum (tfa's quirk)."""
    row_min = tf.reduce_min(data, axis=1, keepdims=True)
    return tf.reduce_max((data - row_min) * mask, axis=1, keepdims=True) + row_min


def _masked_minimum(data, mask):
    """Row-wise min over ``mask``; an all-False row yields the row's maximum (tfa's quirk)."""
    row_max = tf.reduce_max(data, axis=1, keepdims=True)
    return tf.reduce_min((data - row_max) * mask, axis=1, keepdims=True) + row_max


def _positive_pairs(same_label):
    """1.0 where (anchor, positive) is a distinct same-label pair, as float32 [B, B]."""
    return tf.cast(same_label, tf.float32) - tf.eye(tf.shape(same_label)[0])


def _semihard_margin_violations(labels, embeddings, margin, distance_metric):
    """``margin + d(a, p) - d(a, n*)`` for every (a, p) in [B, B] float32, plus the positive mask.

    ``n*`` is the closest negative strictly farther from ``a`` than ``p``; if there is none, tfa
    falls back to the *farthest* negative of ``a`` (the easiest one, so the triplet is active with
    loss >= margin), and if ``a`` has no negatives at all, to the smallest entry of its row.
    """
    distances, same_label = _prepare(labels, embeddings, distance_metric)
    is_negative = tf.logical_not(same_label)
    batch_size = tf.shape(distances)[0]

    negative_distances = tf.where(is_negative, distances, float("inf"))
    order = tf.argsort(negative_distances, axis=1, stable=True)
    sorted_negatives = tf.gather(negative_distances, order, batch_dims=1)
    # Row a, column p: how many of a's negatives are <= d(a, p); the next one is strictly farther.
    first_farther = tf.searchsorted(sorted_negatives, distances, side="right")
    negatives_per_anchor = tf.reduce_sum(tf.cast(is_negative, tf.int32), axis=1, keepdims=True)
    has_farther_negative = first_farther < negatives_per_anchor
    # Gather from ``distances`` itself so the gradient reaches the chosen negative directly.
    farther_column = tf.gather(order, tf.minimum(first_farther, batch_size - 1), batch_dims=1)
    closest_farther_negative = tf.gather(distances, farther_column, batch_dims=1)
    farthest_negative = _masked_maximum(distances, tf.cast(is_negative, tf.float32))

    semihard_negative = tf.where(has_farther_negative, closest_farther_negative, farthest_negative)
    violations = tf.cast(margin, tf.float32) + distances - semihard_negative
    return violations, _positive_pairs(same_label)


@keras.utils.register_keras_serializable(package="facenet")
def triplet_semihard_loss(labels, embeddings, margin=1.0, distance_metric="L2"):
    """FaceNet's semi-hard triplet loss, averaged over all distinct same-label (a, p) pairs.

    As in tfa, a batch without any positive pair gives 0/0 = NaN: P-K sampling must guarantee K>=2.
    Returns a scalar in the embeddings' dtype (computed in float32).
    """
    violations, positive_pairs = _semihard_margin_violations(labels, embeddings, margin, distance_metric)
    hinge_sum = tf.reduce_sum(tf.maximum(violations * positive_pairs, 0.0))
    loss = tf.math.truediv(hinge_sum, tf.reduce_sum(positive_pairs))
    return tf.cast(loss, tf.convert_to_tensor(embeddings).dtype)


@keras.utils.register_keras_serializable(package="facenet")
def triplet_hard_loss(labels, embeddings, margin=1.0, soft=False, distance_metric="L2"):
    """Batch-hard triplet loss (Hermans et al.): per anchor, farthest positive vs closest negative.

    Averaged over *all* anchors, as tfa does: an anchor without positives counts with
    ``max(margin - d(a, closest negative), 0)``, and one without negatives with ``margin``.
    ``soft`` replaces the hinge by softplus(d_ap - d_an) and ignores ``margin``.
    """
    distances, same_label = _prepare(labels, embeddings, distance_metric)
    hardest_negative = _masked_minimum(distances, tf.cast(tf.logical_not(same_label), tf.float32))
    hardest_positive = _masked_maximum(distances, _positive_pairs(same_label))
    gap = hardest_positive - hardest_negative
    if soft:
        # tfa wrote log1p(exp(x)); softplus is the same function without overflow for large x.
        per_anchor = tf.math.softplus(gap)
    else:
        per_anchor = tf.maximum(gap + tf.cast(margin, tf.float32), 0.0)
    return tf.cast(tf.reduce_mean(per_anchor), tf.convert_to_tensor(embeddings).dtype)


def active_triplet_fraction(labels, embeddings, margin=1.0, distance_metric="L2"):
    """Share of semi-hard-mined triplets that still contribute to ``triplet_semihard_loss``.

    Exactly: over all ordered pairs (a, p) with a != p and labels[a] == labels[p], the fraction
    with ``margin + d(a, p) - d(a, n*) > 0``, where ``n*`` is the negative that
    ``triplet_semihard_loss`` mines for (a, p). Equivalently, the share of non-zero terms in that
    loss's numerator. Pairs whose mining fell back to the farthest negative always count as active
    (for margin > 0). Returns a float32 scalar in [0, 1]; 0.0 (not NaN) when there are no pairs.
    """
    violations, positive_pairs = _semihard_margin_violations(labels, embeddings, margin, distance_metric)
    active = tf.cast(violations > 0.0, tf.float32) * positive_pairs
    return tf.math.divide_no_nan(tf.reduce_sum(active), tf.reduce_sum(positive_pairs))


def _config_value(value):
    if callable(value):
        return keras.utils.get_registered_name(value)
    if tf.is_tensor(value) or isinstance(value, tf.Variable):
        return keras.backend.eval(value).item()
    return value


class _TripletLoss(keras.losses.Loss):
    """Keras adapter: ``call`` already reduces the batch to a scalar, hence reduction NONE.

    Same as tfa's LossFunctionWrapper(reduction=NONE). Caveat kept from tfa: under a
    tf.distribute strategy Keras does not divide a NONE-reduced loss by the replica count, so the
    summed gradients are num_replicas times the per-replica mean.
    """

    _loss_fn = None

    def __init__(self, loss_kwargs, name=None, **keras_kwargs):
        # Saved configs (ours and tfa's) carry "reduction"; it is ignored: the loss is a scalar.
        keras_kwargs.pop("reduction", None)
        super().__init__(reduction=keras.losses.Reduction.NONE, name=name, **keras_kwargs)
        self._loss_kwargs = loss_kwargs

    def call(self, y_true, y_pred):
        return type(self)._loss_fn(y_true, y_pred, **self._loss_kwargs)

    def get_config(self):
        config = super().get_config()
        config.update({key: _config_value(value) for key, value in self._loss_kwargs.items()})
        return config


@keras.utils.register_keras_serializable(package="facenet")
class TripletSemiHardLoss(_TripletLoss):
    """Semi-hard triplet loss (Schroff et al. 2015); see :func:`triplet_semihard_loss`."""

    _loss_fn = staticmethod(triplet_semihard_loss)

    def __init__(self, margin=1.0, distance_metric="L2", name=None, **kwargs):
        _resolve_distance(distance_metric)  # fail at construction, not at the first batch
        super().__init__(dict(margin=margin, distance_metric=distance_metric), name=name, **kwargs)


@keras.utils.register_keras_serializable(package="facenet")
class TripletHardLoss(_TripletLoss):
    """Batch-hard triplet loss (Hermans et al. 2017); see :func:`triplet_hard_loss`."""

    _loss_fn = staticmethod(triplet_hard_loss)

    def __init__(self, margin=1.0, soft=False, distance_metric="L2", name=None, **kwargs):
        _resolve_distance(distance_metric)
        loss_kwargs = dict(margin=margin, soft=soft, distance_metric=distance_metric)
        super().__init__(loss_kwargs, name=name, **kwargs)
