"""Identity splits: disjoint, deterministic, and nothing dropped without a count."""
from trainer.splits import split_identities


def counts(n, images=5):
    return {f"id{i:03d}": images for i in range(n)}


def test_splits_are_disjoint_and_cover_usable_identities():
    aligned = counts(50) | {"single": 1, "none": 0}
    split = split_identities(aligned, 0.1, 0.2, seed=3)
    parts = [set(split.train), set(split.val), set(split.test)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert set().union(*parts) == set(counts(50))
    assert split.excluded_too_few_images == ["none", "single"]
    assert (len(split.val), len(split.test)) == (5, 10)


def test_splits_are_deterministic_per_seed():
    a = split_identities(counts(40), 0.1, 0.2, seed=0)
    b = split_identities(dict(reversed(list(counts(40).items()))), 0.1, 0.2, seed=0)
    c = split_identities(counts(40), 0.1, 0.2, seed=1)
    assert a == b
    assert a.test != c.test


def test_small_datasets_keep_at_least_two_per_nonempty_split():
    split = split_identities(counts(8), 0.05, 0.05)
    assert len(split.val) == 2 and len(split.test) == 2 and len(split.train) == 4
    assert split_identities(counts(8), 0.0, 0.0).train == sorted(counts(8))
