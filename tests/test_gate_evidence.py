"""The gate's evidence rule (enroll/gate_evidence.py): McNemar's exact one-sided test on paired
per-photo outcomes, the one-shot outcomes it is fed, and the reason it gives."""
from math import comb

import numpy as np
import pytest

from enroll.gate_evidence import Evidence, mcnemar_gain, one_shot_answers, verdict
from trainer.evaluation.identification import evaluate_identification


def binomial_tail(k: int, n: int) -> float:
    """P(X >= k), X ~ Binomial(n, 1/2), by counting."""
    return sum(comb(n, i) for i in range(k, n + 1)) / 2 ** n


@pytest.mark.parametrize("gained, lost, same", [(8, 1, 40), (3, 3, 10), (0, 4, 0), (12, 2, 100), (1, 0, 5)])
def test_mcnemar_counts_only_the_disagreements(gained, lost, same):
    rng = np.random.default_rng(gained * 7 + lost)
    both_right, both_wrong = same // 2, same - same // 2
    production = np.array([False] * gained + [True] * lost + [True] * both_right + [False] * both_wrong)
    candidate = np.array([True] * gained + [False] * lost + [True] * both_right + [False] * both_wrong)
    order = rng.permutation(len(production))  # pairing is by position, whatever the order
    evidence = mcnemar_gain(production[order], candidate[order])
    assert (evidence.gained, evidence.lost, evidence.photos) == (gained, lost, gained + lost + same)
    assert evidence.p_value == pytest.approx(binomial_tail(gained, gained + lost))


def test_mcnemar_without_disagreement_shows_nothing_and_refuses_unpaired_outcomes():
    assert mcnemar_gain([True, False], [True, False]) == Evidence(0, 0, 2, 1.0)
    with pytest.raises(ValueError, match="different photos"):
        mcnemar_gain([True, False, True], [True, False])


def test_one_shot_answers_agree_with_the_open_set_and_rank1_figures():
    """Each identity's first photo is its gallery entry; per other photo, right-and-within-τ averages to
    the detection-and-identification rate, and right alone to the rank-1, that evaluate_identification
    reports for the same enrolment."""
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(6, 16))
    identities = [f"p{i % 6}" for i in range(60)]
    embeddings = centres[[i % 6 for i in range(60)]] + 0.6 * rng.normal(size=(60, 16))
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    threshold = 0.9
    right, distance = one_shot_answers(embeddings, identities)
    named = right & (distance <= threshold)
    gallery, probes = np.arange(6), np.arange(6, 60)
    labels = np.array(identities)
    expected = dict(evaluate_identification(embeddings[gallery], labels[gallery], embeddings[probes],
                                            labels[probes], threshold))
    assert named.shape == right.shape == (54,) and 0 < named.mean() < right.mean() <= 1
    assert named.mean() == pytest.approx(expected["open_set_dir"])
    assert right.mean() == pytest.approx(expected["rank1"])
    nobody = one_shot_answers(embeddings[:6], identities[:6])  # nobody left to ask
    assert nobody[0].shape == nobody[1].shape == (0,)


def test_verdict_names_the_counts_and_the_setting():
    weak = Evidence(gained=5, lost=3, photos=200, p_value=binomial_tail(5, 8))
    reason = verdict(weak, 0.05)
    assert reason.startswith("no evidence the candidate is better: on 200 held-out one-shot photos it named 5 ")
    assert "missed 3" in reason and "promotion_evidence_p=0.05" in reason
    assert verdict(Evidence(9, 0, 200, binomial_tail(9, 9)), 0.05) is None
    assert verdict(weak, 1.0) is None and verdict(None, 1.0) is None  # the rule is off
    assert verdict(None, 0.05) == "no held-out one-shot photos to show the candidate is better on"
