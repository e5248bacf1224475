"""Search: the exact index against brute force, FAISS (HNSW and IVF-Flat) recall against exact."""
import numpy as np
import pytest

from enroll.index import ExactIndex, FaissIndex, normalise, recall_at_1, top_people


def unit(n, dim=128, seed=0):
    return normalise(np.random.default_rng(seed).normal(size=(n, dim)))


def probes(gallery, n, noise=0.06, seed=1):
    """Noisy copies of enrolled vectors (~0.6 away), as a new photo of an enrolled person."""
    rng = np.random.default_rng(seed)
    return normalise(gallery[rng.integers(0, len(gallery), n)] + rng.normal(scale=noise, size=(n, gallery.shape[1])))


def test_exact_index_matches_brute_force():
    gallery, queries = unit(500, 16), unit(20, 16, seed=3)
    dist, rows = ExactIndex().build(gallery).search(queries, 5)
    brute = np.linalg.norm(queries[:, None] - gallery[None], axis=2)
    np.testing.assert_array_equal(rows, np.argsort(brute, axis=1)[:, :5])
    np.testing.assert_allclose(dist, np.sort(brute, axis=1)[:, :5], atol=1e-5)


def test_exact_index_with_fewer_vectors_than_k_and_empty():
    dist, rows = ExactIndex().build(unit(2, 8)).search(unit(1, 8, seed=5), 4)
    assert list(rows[0, 2:]) == [-1, -1] and np.isinf(dist[0, 2:]).all() and (rows[0, :2] >= 0).all()
    dist, rows = ExactIndex().build(np.zeros((0, 8))).search(unit(1, 8), 3)
    assert (rows == -1).all() and np.isinf(dist).all()


@pytest.mark.parametrize("method", ["hnsw", "ivf"])
def test_faiss_recall_against_exact(method):
    pytest.importorskip("faiss")
    gallery = unit(20_000)
    exact, approx = ExactIndex().build(gallery), FaissIndex(method).build(gallery)
    queries = probes(gallery, 300)
    assert recall_at_1(approx, exact, queries) >= 0.95
    assert recall_at_1(exact, exact, queries) == 1.0
    dist, rows = approx.search(queries[:10], 3)
    np.testing.assert_allclose(dist[:, 0], np.linalg.norm(gallery[rows[:, 0]] - queries[:10], axis=1), atol=1e-4)


def test_top_people_takes_each_persons_closest_face():
    gallery = unit(60, 8)
    names = [f"person{i // 10}" for i in range(60)]  # ten faces each: hits crowd the first ranks
    index = ExactIndex().build(gallery, names)
    query = gallery[0:1]
    people = top_people(index, query, 4)
    assert [n for n, _ in people][0] == "person0" and people[0][1] == pytest.approx(0, abs=1e-3)
    assert len({n for n, _ in people}) == 4
    brute = np.linalg.norm(gallery - query, axis=1)
    for name, d in people:
        assert d == pytest.approx(min(brute[i] for i, n in enumerate(names) if n == name), abs=1e-5)
    assert len(top_people(index, query, 100)) == 6


def test_tune_effort_reaches_the_recall_target():
    pytest.importorskip("faiss")
    from enroll.index import tune_effort

    gallery = unit(20_000, seed=4)
    exact, approx = ExactIndex().build(gallery), FaissIndex("hnsw", ef_search=4).build(gallery)
    effort, recall = tune_effort(approx, exact, probes(gallery, 200, seed=5), target=0.99)
    assert recall >= 0.99 and effort == approx.effort > 4


def test_an_extended_index_answers_as_one_built_whole_and_leaves_the_older_one_alone():
    first, more, queries = unit(300, 16), unit(40, 16, seed=7), unit(20, 16, seed=3)
    names = [f"p{i}" for i in range(300)] + [f"q{i}" for i in range(40)]
    base = ExactIndex().build(first, names[:300])
    grown, steps = base, []
    for start in range(0, 40, 10):  # four enrolments of ten faces
        grown = grown.extended(more[start:start + 10], names[300 + start:310 + start])
        steps.append(grown)
    whole = ExactIndex().build(np.vstack([first, more]), names)
    for index in (grown, whole):
        assert list(index.names) == names
    np.testing.assert_array_equal(grown.search(queries, 5)[1], whole.search(queries, 5)[1])
    np.testing.assert_allclose(grown.search(queries, 5)[0], whole.search(queries, 5)[0], atol=1e-6)
    assert len(base) == 300 and base.search(queries, 5)[1].max() < 300  # searches in flight keep theirs
    assert all(np.shares_memory(a.matrix, b.matrix) for a, b in zip(steps, steps[1:]))  # copied once, then filled
    fork = base.extended(unit(5, 16, seed=9), ["r"] * 5)  # an older index extended: its own copy
    assert list(fork.names[300:]) == ["r"] * 5 and list(grown.names) == names
    np.testing.assert_allclose(grown.matrix, whole.matrix)
    assert base.extended(np.zeros((0, 16)), []) is base
    with pytest.raises(ValueError, match="dimensions"):
        base.extended(unit(1, 8), ["x"])
