"""The classical baselines (experiments/baselines/): Eigenfaces, Fisherfaces and LBP histograms on
synthetic identities (tests/synthetic.py: a fixed colour pattern per person, photos shifted, with
brightness jitter and noise)."""
import numpy as np
import pytest

pytest.importorskip("skimage", reason="scikit-image is not installed (pip install -e '.[baselines]')")

from experiments import baselines  # noqa: E402
from experiments.baselines import cross_distances, pair_distances  # noqa: E402
from tests.synthetic import identity_pattern, photo  # noqa: E402

SIZE = 48


def people(count: int, per: int, seed: int = 0):
    """(crops float32 [count * per, SIZE, SIZE, 3], labels)."""
    rng = np.random.default_rng(seed)
    crops = [photo(identity_pattern(seed * 100 + p, SIZE), rng) for p in range(count) for _ in range(per)]
    return np.stack(crops).astype(np.float32), [f"p{p}" for p in range(count) for _ in range(per)]


@pytest.fixture(scope="module")
def train():
    return people(8, 6)


@pytest.mark.parametrize("name, dims", [("eigenfaces", 47), ("fisherfaces", 7), ("lbp", 7 * 7 * 59)])
def test_features_have_the_method_s_shape(train, name, dims):
    method = baselines.build(name).fit(*train)
    features = method.features(train[0][:5])
    assert features.shape == (5, dims) and features.dtype == np.float32 and np.isfinite(features).all()
    assert method.metric == ("chi2" if name == "lbp" else "l2")
    if name == "lbp":  # one normalised histogram per cell
        np.testing.assert_allclose(features.reshape(5, 49, 59).sum(axis=2), 1.0, rtol=1e-5)


def clearly_different(count: int, per: int, seed: int):
    """Photos of ``count`` new people that vary less than tests/synthetic.py's (a 1 px shift, 5 %
    brightness, noise 8): the training people's photos vary by up to 3 px and 20 %, which pixel
    methods are not built to undo (a learned network is)."""
    rng = np.random.default_rng(seed)
    crops = [np.roll(identity_pattern(seed * 100 + p, SIZE), rng.integers(-1, 2, 2), axis=(0, 1))
             * rng.uniform(0.95, 1.05) + rng.normal(0, 8, (SIZE, SIZE, 3)) for p in range(count) for _ in range(per)]
    return np.clip(np.stack(crops), 0, 255).astype(np.float32), [f"new{p}" for p in range(count) for _ in range(per)]


@pytest.mark.parametrize("name", list(baselines.BASELINES))
def test_two_clearly_different_people_are_told_apart(train, name):
    """Fitted on other people; photos of two unseen people: every same-person distance is smaller
    than every different-person one."""
    method = baselines.build(name).fit(*train)
    crops, labels = clearly_different(2, 5, seed=1)
    dist = cross_distances(method.features(crops), method.features(crops), method.metric)
    same = np.equal.outer(labels, labels)
    off_diagonal = ~np.eye(len(labels), dtype=bool)
    assert dist[same & off_diagonal].max() < dist[~same].min(), name


def test_pair_and_cross_distances_agree():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0, 1, (4, 6)), rng.uniform(0, 1, (4, 6))
    a[:, 0] = b[:, 0] = 0.0  # a bin empty in both histograms counts 0
    for metric in ("l2", "chi2"):
        np.testing.assert_allclose(pair_distances(a, b, metric), np.diag(cross_distances(a, b, metric)), rtol=1e-9)
    np.testing.assert_allclose(pair_distances(a, b, "chi2"), ((a - b) ** 2 / np.where(a + b > 0, a + b, 1)).sum(1))
    with pytest.raises(ValueError, match="unknown distance"):
        pair_distances(a, b, "cosine")


def test_bad_input_is_one_clear_error(train):
    crops, labels = train
    with pytest.raises(ValueError, match="at least 2 people"):
        baselines.build("fisherfaces").fit(crops[:6], labels[:6])
    with pytest.raises(ValueError, match="more training crops than people"):
        baselines.build("fisherfaces").fit(crops[::6], labels[::6])
    with pytest.raises(ValueError, match="aligned crops"):
        baselines.build("lbp").features(crops[0])
    with pytest.raises(ValueError, match="6 labels"):
        baselines.build("eigenfaces").fit(crops, labels[:6])
    with pytest.raises(ValueError, match="fit it"):
        baselines.build("eigenfaces").features(crops)
    with pytest.raises(ValueError, match="unknown baseline"):
        baselines.build("sift")
