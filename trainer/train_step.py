"""One optimizer step of the distributed training loop (trainer/worker.py).

Triplets are mined over the *global* batch: each replica embeds its share of the P×K batch, the
embeddings and labels are all-gathered, and every replica computes the same loss over all of them,
as FaceNet mines within its ~1,800-face batches. With a teacher (``tcfg.teacher``), the
distillation term (trainer/distill.py) is added on the same gathered batch.
"""
from __future__ import annotations


def make_train_step(strategy, model, optimizer, loss_fn, margin: float, distance_metric: str, tcfg=None, head=None):
    """One optimizer step on a distributed P×K batch; returns (loss, active triplet fraction, terms).

    ``terms`` holds each term of the loss unweighted (``loss/<term>``) and, with a teacher,
    ``teacher_cosine``, the batch's mean cosine between student and teacher embeddings: the loss is
    their weighted sum, so the epoch log shows which term dominates and how close the student is.

    The optimizer sums the replicas' gradients, so each replica back-propagates loss / replicas;
    the gradient of all_gather carries every replica's share back to where it was computed.
    ``tcfg`` (a TrainConfig) adds the distillation term when it names a teacher; ``head`` (a
    trainer.margin_softmax.MarginHead) adds ``tcfg.margin_softmax_weight`` × its loss, and trains with the model.
    """
    import tensorflow as tf

    from trainer.distill import centre_matching, embedding_matching, relational_matching
    from trainer.losses import active_triplet_fraction

    metric_weight = tcfg.metric_weight if tcfg else 1.0
    distill = (tcfg.distill_weight, tcfg.distill_relational_weight) if tcfg and tcfg.teacher else (0.0, 0.0)
    head_weight = tcfg.margin_softmax_weight if tcfg and head is not None else 0.0
    # Soft targets over the head's (fixed, teacher) centres; the config check ensures both exist.
    centre_weight = tcfg.centre_distill_weight if head_weight and tcfg.teacher else 0.0
    variables = model.trainable_variables + (list(head.trainable_variables) if head_weight else [])

    def loss_terms(all_embeddings, all_labels, teacher):
        """{term: (weight, unweighted value)} of every term this run trains with."""
        terms = {}
        if metric_weight:
            terms["triplet"] = (metric_weight, loss_fn(all_labels, all_embeddings))
        if any(distill) or centre_weight:
            targets, mask = teacher
        if distill[0]:
            terms["embedding"] = (distill[0], embedding_matching(all_embeddings, targets, mask))
        if distill[1]:
            terms["relational"] = (distill[1], relational_matching(all_embeddings, targets, mask))
        if centre_weight:
            terms["centre"] = (centre_weight, centre_matching(all_embeddings, targets, mask, head.class_weights,
                                                              tcfg.centre_distill_scale))
        if head_weight:
            terms["head"] = (head_weight, head.loss(all_embeddings, all_labels))
        return terms

    def replica_step(images, labels, *teacher):
        context = tf.distribute.get_replica_context()
        with tf.GradientTape() as tape:
            embeddings = model(images, training=True)
            # MultiWorkerMirroredStrategy's all_gather needs placed tensors; graph inputs may not be.
            with tf.device(embeddings.device):
                labels = tf.identity(labels)
                teacher = [tf.identity(t) for t in teacher]
            all_embeddings = context.all_gather(embeddings, axis=0)
            all_labels = context.all_gather(labels, axis=0)
            gathered = [context.all_gather(t, axis=0) for t in teacher]
            terms = loss_terms(all_embeddings, all_labels, gathered)
            loss = tf.add_n([weight * value for weight, value in terms.values()]) if terms else tf.zeros([])
            scaled_loss = loss / tf.cast(context.num_replicas_in_sync, loss.dtype)
        gradients = tape.gradient(scaled_loss, variables)
        optimizer.apply_gradients(zip(gradients, variables))
        report = {f"loss/{name}": value for name, (_, value) in terms.items()}
        if gathered:
            report["teacher_cosine"] = teacher_cosine(all_embeddings, *gathered)
        return loss, active_triplet_fraction(all_labels, all_embeddings, margin, distance_metric), report

    @tf.function
    def train_step(images, labels, *teacher):
        loss, active, report = strategy.run(replica_step, args=(images, labels, *teacher))
        mean = lambda value: strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)  # noqa: E731
        return mean(loss), mean(active), {name: mean(value) for name, value in report.items()}

    return train_step


def teacher_cosine(student, teacher, mask):
    """Mean cosine between each student embedding and its teacher target, over the photos the teacher
    embedded (both are unit vectors, so it is 1 - embedding_matching / 2)."""
    import tensorflow as tf

    mask = tf.cast(mask, student.dtype)
    cosines = tf.reduce_sum(student * tf.cast(teacher, student.dtype), axis=1)
    return tf.reduce_sum(cosines * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)
