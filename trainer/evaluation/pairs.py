"""LFW-style verification pairs for any identity-folder split.

Pairs are written in LFW's ``pairs.txt`` layout (``lfw_protocol.write_pairs``). An image index is
the 1-based position of the image in its identity's *sorted* path list; for LFW itself, whose files
are ``<name>_<idx:04d>.jpg``, that position is LFW's own image number. ``resolve_pair_paths`` maps
indices back to paths.

Construction (deterministic for a given ``seed``):

* identities are shuffled and dealt round-robin to folds, those with two or more images first,
  so that every fold gets identities able to form matched pairs and no identity is in two folds;
  cross-validated thresholds are then chosen on people the held-out fold never shows;
* matched pairs are spread evenly over the fold's identities (each takes a turn until the quota is
  met or its distinct pairs run out); mismatched pairs join two identities of the same fold;
* every fold has the same number ``n`` of matched and of mismatched pairs, ``n = pairs_per_fold``
  unless some fold cannot supply that many distinct pairs, in which case ``n`` drops to what the
  poorest fold can supply (possibly 0: an empty list). No pair appears twice;
* with fewer than ``folds`` multi-image identities or ``2 * folds`` identities, disjoint folds are
  impossible: a warning is issued and pairs are drawn from all identities, then dealt to folds.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

from trainer.evaluation.lfw_protocol import Pair, write_pairs

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".pgm"}
# Up to this many candidate mismatched pairs a fold's candidates are listed and sampled outright;
# above it, random draws with rejection of repeats are cheaper.
_ENUMERATE_LIMIT = 100_000


def _unrank_pairs(ranks: np.ndarray, k: int) -> list[tuple[int, int]]:
    """Map linear indices in ``[0, k(k-1)/2)`` to index pairs ``i < j`` (row-major upper triangle)."""
    starts = np.concatenate([[0], np.cumsum(np.arange(k - 1, 0, -1))])
    rows = np.searchsorted(starts, ranks, side="right") - 1
    return [(int(i), int(i + 1 + r - starts[i])) for i, r in zip(rows, ranks)]


def _matched(rng, sizes: dict[str, int], names: list[str], n: int) -> list[tuple]:
    capacity = {name: sizes[name] * (sizes[name] - 1) // 2 for name in names}
    take = dict.fromkeys(names, 0)
    active, remaining = [name for name in names if capacity[name]], n
    while remaining and active:  # round-robin so one prolific identity cannot fill the quota
        still = []
        for name in active[:remaining]:
            take[name] += 1
            if take[name] < capacity[name]:
                still.append(name)
        remaining -= min(remaining, len(active))
        active = still
    out = []
    for name in names:
        if take[name]:
            ranks = rng.choice(capacity[name], size=take[name], replace=False)
            out += [(name, i, name, j) for i, j in _unrank_pairs(np.sort(ranks), sizes[name])]
    return [out[i] for i in rng.permutation(len(out))]


def _canonical(a: str, i: int, b: str, j: int) -> tuple:
    return (a, i, b, j) if a < b else (b, j, a, i)


def _mismatched(rng, sizes: dict[str, int], names: list[str], n: int) -> list[tuple]:
    counts = np.array([sizes[name] for name in names], dtype=np.int64)
    capacity = int((counts.sum() ** 2 - (counts**2).sum()) // 2)
    want = min(n, capacity)
    if capacity <= max(_ENUMERATE_LIMIT, 2 * want):
        candidates = [_canonical(a, i, b, j) for x, a in enumerate(names) for b in names[x + 1:]
                      for i in range(sizes[a]) for j in range(sizes[b])]
        return [candidates[c] for c in rng.choice(len(candidates), size=want, replace=False)]
    # Identity pairs are drawn uniformly (as LFW's mismatched pairs spread over people), then an
    # image of each; at most half the candidates are wanted, so repeats stay rare.
    seen, out, budget = set(), [], 50 * want + 1000
    while len(out) < want and budget > 0:
        a = rng.integers(len(names), size=1024)
        b = rng.integers(len(names) - 1, size=1024)
        b += b >= a
        u, v = rng.random(1024), rng.random(1024)
        for x, y, p, q in zip(a, b, u, v):
            pair = _canonical(names[x], int(p * counts[x]), names[y], int(q * counts[y]))
            if pair not in seen and len(out) < want:
                seen.add(pair)
                out.append(pair)
        budget -= 1024
    return out


def make_pairs(identity_to_images: dict[str, list[str]], folds: int = 10, pairs_per_fold: int = 300,
               seed: int = 0) -> list[Pair]:
    """Matched/mismatched pairs in LFW layout order (per fold: ``n`` matched, then ``n``
    mismatched); see the module docstring for the construction and its guarantees."""
    if folds < 1 or pairs_per_fold < 0:
        raise ValueError(f"need folds >= 1 and pairs_per_fold >= 0, got {folds} and {pairs_per_fold}")
    rng = np.random.default_rng(seed)
    sizes = {name: len(set(paths)) for name, paths in sorted(identity_to_images.items()) if paths}
    multi = [name for name in sizes if sizes[name] >= 2]
    single = [name for name in sizes if sizes[name] == 1]
    dealt = [multi[i] for i in rng.permutation(len(multi))]
    dealt += [single[i] for i in rng.permutation(len(single))]
    if len(multi) >= folds and len(dealt) >= 2 * folds:
        per_fold = [(_matched(rng, sizes, dealt[f::folds], pairs_per_fold),
                     _mismatched(rng, sizes, dealt[f::folds], pairs_per_fold)) for f in range(folds)]
    else:
        warnings.warn(f"{len(multi)} identities with 2+ images and {len(dealt)} in all cannot fill "
                      f"{folds} disjoint folds; folds will share identities", stacklevel=2)
        matched = _matched(rng, sizes, dealt, folds * pairs_per_fold)
        mismatched = _mismatched(rng, sizes, dealt, folds * pairs_per_fold)
        per_fold = [(matched[f::folds], mismatched[f::folds]) for f in range(folds)]
    n = min(min(len(m), len(d)) for m, d in per_fold)
    # Indices are 0-based while sampling; LFW numbers images from 1.
    return [Pair(a, i + 1, b, j + 1, same, f) for f, (m, d) in enumerate(per_fold)
            for same, group in ((True, m[:n]), (False, d[:n])) for a, i, b, j in group]


def resolve_pair_paths(pairs, identity_to_images: dict[str, list[str]]) -> list[tuple[str, str]]:
    """``(left_path, right_path)`` per pair: index ``k`` is the k-th (1-based) path of the
    identity's sorted, de-duplicated image list, the numbering ``make_pairs`` writes."""
    ordered = {name: sorted(set(paths)) for name, paths in identity_to_images.items()}
    try:
        return [(ordered[p.left_name][p.left_index - 1], ordered[p.right_name][p.right_index - 1])
                for p in pairs]
    except (KeyError, IndexError) as err:
        raise ValueError(f"pair refers to an unknown identity or image: {err}") from None


def identity_folders(root) -> dict[str, list[str]]:
    """``ROOT/<identity>/*.{jpg,jpeg,png,pgm}`` (suffix case ignored) as identity -> sorted paths."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"identity-folder root {str(root)!r} is not a directory")
    return {d.name: sorted(str(f) for f in d.iterdir()
                           if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            for d in sorted(root.iterdir()) if d.is_dir()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.evaluation.pairs",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("root", help="identity-folder root: ROOT/<identity>/*.jpg|jpeg|png|pgm")
    parser.add_argument("--out", required=True, help="pairs.txt to write")
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--pairs-per-fold", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        pairs = make_pairs(identity_folders(args.root), args.folds, args.pairs_per_fold, args.seed)
        if not pairs:
            raise ValueError(f"{args.root} has too few images for one matched and one mismatched "
                             f"pair per fold")
        n = len(pairs) // (2 * args.folds)
        write_pairs(args.out, pairs, args.folds, n)
    except (OSError, ValueError) as err:
        print(f"pairs: error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {len(pairs)} pairs ({args.folds} folds x {n} matched + {n} mismatched) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
