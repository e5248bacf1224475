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

    from trainer.distill import teacher_cosine
    from trainer.losses import active_triplet_fraction

    weights = term_weights(tcfg, head)
    centre_scale = tcfg.centre_distill_scale if tcfg else 0.0
    variables = model.trainable_variables + (list(head.trainable_variables) if "head" in weights else [])

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
            terms = loss_terms(weights, loss_fn, head, centre_scale, all_embeddings, all_labels, gathered)
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



def metric_loss(t):
    """The metric (triplet) loss a run with TrainConfig ``t`` trains with (``train.loss``)."""
    from trainer.losses import TripletHardLoss, TripletSemiHardLoss

    return (TripletSemiHardLoss if t.loss == "semihard" else TripletHardLoss)(margin=t.margin,
                                                                            distance_metric=t.distance_metric)


def term_weights(tcfg, head=None) -> dict[str, float]:
    """{term: weight} of every term a run trains with, in the order they are summed: the triplet
    loss, the teacher's terms (with ``tcfg.teacher``), the margin head's (with ``head``, a
    trainer.margin_softmax.MarginHead). ``tcfg`` None: the triplet loss alone, at weight 1."""
    if tcfg is None:
        return {"triplet": 1.0}
    teacher = bool(tcfg.teacher)
    head_weight = tcfg.margin_softmax_weight if head is not None else 0.0
    weights = {"triplet": tcfg.metric_weight,
               "embedding": tcfg.distill_weight if teacher else 0.0,
               "relational": tcfg.distill_relational_weight if teacher else 0.0,
               # Soft targets over the head's (fixed, teacher) centres; the config check ensures both exist.
               "centre": tcfg.centre_distill_weight if head_weight and teacher else 0.0,
               "head": head_weight}
    return {name: weight for name, weight in weights.items() if weight}


def loss_terms(weights: dict[str, float], loss_fn, head, centre_scale: float, embeddings, labels,
               teacher=()) -> dict:
    """{term: (weight, unweighted value)} for every term of ``weights`` (``term_weights``);
    ``teacher`` is (targets, mask) when a teacher's term is among them."""
    from trainer.distill import centre_matching, embedding_matching, relational_matching

    targets, mask = teacher if teacher else (None, None)
    compute = {"triplet": lambda: loss_fn(labels, embeddings),
               "embedding": lambda: embedding_matching(embeddings, targets, mask),
               "relational": lambda: relational_matching(embeddings, targets, mask),
               "centre": lambda: centre_matching(embeddings, targets, mask, head.class_weights, centre_scale),
               "head": lambda: head.loss(embeddings, labels)}
    return {name: (weight, compute[name]()) for name, weight in weights.items()}
