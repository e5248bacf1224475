"""The optimizer a run trains with (``train.optimizer``, ``learning_rate``, ``lr_schedule``, ``weight_decay``)."""
from __future__ import annotations


def make_optimizer(t, steps_per_epoch: int):
    """The configured optimizer, with its learning-rate schedule (constant, or linear warm-up then cosine
    decay to 0 over the run) and decoupled weight decay (AdamW) when asked. ``t`` is a TrainConfig."""
    import tf_keras as keras

    rate = t.learning_rate
    if t.lr_schedule == "cosine":
        total = max(1, t.epochs * steps_per_epoch)
        warmup = min(t.warmup_epochs * steps_per_epoch, total - 1)
        rate = keras.optimizers.schedules.CosineDecay(0.0 if warmup else t.learning_rate, total - warmup,
                                                      warmup_target=t.learning_rate if warmup else None,
                                                      warmup_steps=warmup)
    if t.optimizer == "adagrad":
        return keras.optimizers.Adagrad(rate)
    if t.optimizer == "sgd":
        # Steps in proportion to the gradient, for fine-tuning pretrained weights: Adam and AdaGrad move
        # every weight by about the learning rate whatever its size, and dlib's network has layers of
        # near-zero weights (median |w| 3e-9 in one). Measured on it: README, The teacher as the base.
        return keras.optimizers.SGD(rate, momentum=0.9, weight_decay=t.weight_decay or None)
    if t.weight_decay:
        return keras.optimizers.AdamW(rate, weight_decay=t.weight_decay)
    return keras.optimizers.Adam(rate)
