"""LFW-style pair generation: fold independence, balance, determinism, tiny data, file round trip, CLI."""
import subprocess
import sys
import warnings
from collections import Counter

import numpy as np
import pytest

from trainer.evaluation.lfw_protocol import read_pairs, write_pairs
from trainer.evaluation.pairs import identity_folders, main, make_pairs, resolve_pair_paths


def synthetic(n_ids=60, seed=0):
    """Identities with 1-12 images, like LFW's long tail (many people have a single photo)."""
    rng = np.random.default_rng(seed)
    return {f"id{k:03d}": [f"/d/id{k:03d}/{i}.jpg" for i in range(int(rng.choice([1, 1, 2, 3, 12])))]
            for k in range(n_ids)}


def key(p):
    return (p.left_name, p.left_index, p.right_name, p.right_index)


def test_folds_are_identity_disjoint_and_balanced():
    data = synthetic()
    pairs = make_pairs(data, folds=5, pairs_per_fold=20, seed=0)
    assert Counter((p.fold, p.same) for p in pairs) == {(f, s): 20 for f in range(5) for s in (True, False)}
    owner = {}
    for p in pairs:
        for name in (p.left_name, p.right_name):
            assert owner.setdefault(name, p.fold) == p.fold, f"{name} appears in two folds"


def test_pairs_are_valid_and_distinct():
    data = synthetic()
    pairs = make_pairs(data, folds=5, pairs_per_fold=20, seed=1)
    assert len({key(p) for p in pairs}) == len(pairs)
    for p in pairs:
        assert (p.left_name == p.right_name) == p.same
        assert 1 <= p.left_index <= len(data[p.left_name]) and 1 <= p.right_index <= len(data[p.right_name])
        if p.same:
            assert p.left_index < p.right_index
        else:
            assert p.left_name < p.right_name  # canonical order, so (a, b) and (b, a) cannot both occur


def test_matched_pairs_spread_over_identities():
    """One identity with 40 images (780 possible pairs) must not take all matched slots."""
    data = {"big": [f"b{i}.jpg" for i in range(40)], **{f"s{k}": ["x.jpg", "y.jpg"] for k in range(5)}}
    matched = [p for p in make_pairs(data, folds=1, pairs_per_fold=10) if p.same]
    counts = Counter(p.left_name for p in matched)
    assert counts["big"] == 5 and all(counts[f"s{k}"] == 1 for k in range(5))


def test_deterministic_with_seed():
    data = synthetic()
    assert make_pairs(data, 5, 20, seed=3) == make_pairs(dict(reversed(data.items())), 5, 20, seed=3)
    assert make_pairs(data, 5, 20, seed=3) != make_pairs(data, 5, 20, seed=4)


def test_shrinks_to_what_the_poorest_fold_supplies():
    """2 folds; fold identities get 2-image people (1 matched pair each): at most a few per fold."""
    data = {f"p{k}": ["a.jpg", "b.jpg"] for k in range(4)}
    pairs = make_pairs(data, folds=2, pairs_per_fold=300)
    # Each fold: 2 identities -> 2 matched pairs, 2 x 2 = 4 mismatched -> n = 2.
    assert Counter((p.fold, p.same) for p in pairs) == {(f, s): 2 for f in (0, 1) for s in (True, False)}


@pytest.mark.parametrize("data", [{}, {"a": []}, {"a": ["1.jpg"]}, {"a": ["1.jpg", "2.jpg"]}])
def test_tiny_data_gives_no_pairs_without_crashing(data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert make_pairs(data, folds=10) == []


def test_too_few_identities_for_disjoint_folds_warns_and_shares():
    data = {"a": ["1", "2", "3"], "b": ["1", "2"], "c": ["1"]}
    with pytest.warns(UserWarning, match="share identities"):
        pairs = make_pairs(data, folds=2, pairs_per_fold=300)
    # 3 + 1 = 4 matched pairs, 3*2 + 3*1 + 2*1 = 11 mismatched; dealt to 2 folds -> n = 2.
    assert len(pairs) == 8 and len({key(p) for p in pairs}) == 8


def test_write_read_and_resolve_paths(tmp_path):
    data = synthetic()
    pairs = make_pairs(data, folds=5, pairs_per_fold=20)
    write_pairs(tmp_path / "pairs.txt", pairs, folds=5, n=20)
    assert read_pairs(tmp_path / "pairs.txt") == pairs
    shuffled = {name: list(reversed(paths)) for name, paths in data.items()}  # order must not matter
    for p, (left, right) in zip(pairs, resolve_pair_paths(pairs, shuffled)):
        assert left == sorted(data[p.left_name])[p.left_index - 1]
        assert right == sorted(data[p.right_name])[p.right_index - 1]


def make_root(tmp_path, sizes):
    for k, size in enumerate(sizes):
        folder = tmp_path / "root" / f"person_{k}"
        folder.mkdir(parents=True)
        for i in range(size):
            (folder / f"img_{i:04d}.{['jpg', 'PNG', 'pgm', 'jpeg'][i % 4]}").touch()
        (folder / "notes.txt").touch()
    return tmp_path / "root"


def test_cli_writes_parseable_pairs(tmp_path, capsys):
    root = make_root(tmp_path, [3, 1, 4, 3, 1, 3])  # any two multi-image people give >= 3 matched
    assert len(identity_folders(root)["person_2"]) == 4  # suffixes matched case-insensitively, .txt skipped
    out = tmp_path / "pairs.txt"
    assert main([str(root), "--out", str(out), "--folds", "2", "--pairs-per-fold", "3"]) == 0
    pairs = read_pairs(out)
    assert len(pairs) == 12 and "wrote 12 pairs" in capsys.readouterr().out
    assert all(paths[0] != paths[1] for paths in resolve_pair_paths(pairs, identity_folders(root)))


def test_cli_missing_root_is_one_line_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "trainer.evaluation.pairs", str(tmp_path / "nope"),
                           "--out", str(tmp_path / "p.txt")], capture_output=True, text=True)
    assert proc.returncode != 0
    assert proc.stderr.strip().count("\n") == 0 and "is not a directory" in proc.stderr
    assert not (tmp_path / "p.txt").exists()


def test_large_fold_sampling_stays_distinct_and_fast():
    """Over 100k candidate mismatched pairs: drawn with rejection of repeats instead of listed."""
    data = {"big": [f"{i}.jpg" for i in range(500)], **{f"s{k:03d}": ["x.jpg"] for k in range(400)}}
    pairs = make_pairs(data, folds=1, pairs_per_fold=300, seed=5)
    assert Counter(p.same for p in pairs) == {True: 300, False: 300}
    assert len({key(p) for p in pairs}) == 600
