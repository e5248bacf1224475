"""Evidence that a candidate is better, not merely no worse: a paired test on the same real photos.

Tolerances alone (enroll/gate.py) let through candidates whose figures moved within noise: at
lifecycle run 10 (zero tolerance) a warm start passed on held-out one-shot named 0.502 -> 0.509 and
was then 1-2 photos worse on the enrolled people's real photos. A model swap is not free (the
gallery is re-embedded, τ recalibrated) and a user gains nothing from one that is not measurably
better, so by default the gate also asks for evidence of a gain.

The evidence is McNemar's exact test on the held-out identities enrolled one-shot: every other
photo of theirs is answered by both models (each at its own τ for the home's FAR), right meaning
named as the right person within τ. Only the photos the two models disagree on count: ``gained``
(the candidate alone is right) against ``lost`` (production alone is right). Under "no better", a
disagreement is a fair coin, so the one-sided p-value is P(X >= gained) for X ~ Binomial(gained +
lost, 1/2). The candidate shows evidence when p <= ``promotion_evidence_p`` (enroll/settings.py);
1 turns the requirement off.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Evidence:
    gained: int      # photos the candidate answers right and production wrong
    lost: int        # ... and the other way round
    photos: int      # photos both models answered
    p_value: float   # one-sided exact McNemar: the chance of >= gained by luck if the candidate is no better

    def as_dict(self) -> dict:
        return asdict(self)


def mcnemar_gain(production_right, candidate_right) -> Evidence:
    """Paired per-photo outcomes of the two models on the same photos, in the same order."""
    from scipy.stats import binomtest

    before, after = np.asarray(production_right, bool), np.asarray(candidate_right, bool)
    if before.shape != after.shape:
        raise ValueError(f"the two models answered different photos ({before.shape} against {after.shape})")
    gained, lost = int(np.sum(after & ~before)), int(np.sum(before & ~after))
    p_value = binomtest(gained, gained + lost, 0.5, alternative="greater").pvalue if gained + lost else 1.0
    return Evidence(gained, lost, int(before.size), float(p_value))


def one_shot_answers(embeddings, identities) -> tuple[np.ndarray, np.ndarray]:
    """Enrolled one-shot (trainer.evaluate.one_shot_split), per other photo: is its nearest enrolled
    person the right one, and at what distance. Named within τ is ``right & (distance <= τ)``."""
    from trainer.evaluate import one_shot_split
    from trainer.evaluation.identification import nearest_neighbours

    gallery, probes = one_shot_split(identities)
    if not probes:
        return np.zeros(0, bool), np.zeros(0)
    labels, vectors = np.asarray(identities, dtype=object), np.asarray(embeddings)
    index, distance = nearest_neighbours(vectors[gallery], vectors[probes])
    return labels[gallery][index] == labels[probes], distance


def verdict(evidence: Evidence | None, required_p: float) -> str | None:
    """The reason to reject for want of evidence, or None (shown, or not required)."""
    if required_p >= 1:
        return None
    if evidence is None:
        return "no held-out one-shot photos to show the candidate is better on"
    if evidence.p_value > required_p:
        return (f"no evidence the candidate is better: on {evidence.photos} held-out one-shot photos it named "
                f"{evidence.gained} that production missed and missed {evidence.lost} that production named "
                f"(one-sided McNemar p {evidence.p_value:.3f} > promotion_evidence_p={required_p:g})")
    return None
