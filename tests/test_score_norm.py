"""experiments/score_norm.py on synthetic embeddings (tests/test_closed_set.py's clusters): the
normalisations' arithmetic, the one-shot open-set protocol, and its bad input."""
import numpy as np
import pytest

from enroll.index import normalise
from experiments import score_norm
from tests.test_closed_set import clusters


def test_plain_is_cosine_and_znorm_uses_each_enrolled_faces_cohort():
    rng = np.random.default_rng(1)
    gallery, probes, cohort = (normalise(rng.normal(size=(n, 16))) for n in (3, 5, 40))
    plain = score_norm.normalised_scores(gallery, probes, cohort, "plain", 10)
    np.testing.assert_allclose(plain, probes @ gallery.T)
    mean, std = score_norm.cohort_stats(gallery, cohort, 10)
    z = score_norm.normalised_scores(gallery, probes, cohort, "z-norm", 10)
    np.testing.assert_allclose(z, (plain - mean[None]) / std[None])
    t = score_norm.normalised_scores(gallery, probes, cohort, "t-norm", 10)
    np.testing.assert_allclose(score_norm.normalised_scores(gallery, probes, cohort, "as-norm", 10), (z + t) / 2)
    # top-k statistics come from the closest cohort faces: their mean is at least the whole cohort's
    assert np.all(mean >= score_norm.cohort_stats(gallery, cohort, 0)[0])


@pytest.mark.parametrize("method", score_norm.METHODS)
def test_separated_people_are_named_and_strangers_fall_below_the_threshold(method):
    emb, ids, sources = clusters(20, 8, seed=2)
    cohort, _, _ = clusters(30, 3, seed=3)
    case = score_norm.one_shot(emb.astype(np.float64), ids, sources, cohort, method, 20)
    assert case["people"] == 10 and case["known"].sum() == 10 * 3 and (~case["known"]).sum() == 10 * 8
    assert case["right"][case["known"]].all()  # well-separated clusters: every enrolled photo's nearest is right
    dir_, far = score_norm.at_far(case, score_norm.threshold_for(case, 0.05))
    assert far <= 0.05 and dir_ == 1.0


def test_bad_arguments_are_one_line_and_exit_2(capsys, tmp_path):
    assert score_norm.main(["runs/none", "--fars", "1.5"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    out = tmp_path / "score_norm.json"
    assert score_norm.main([str(tmp_path / "no-run"), "--out", str(out)]) == 2
    assert "error:" in capsys.readouterr().err and not out.exists()  # nothing written
