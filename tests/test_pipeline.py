"""P×K batches: P distinct identities × exactly K images each, in parallel tf.data."""
import numpy as np
import pytest

from trainer import pipeline
from trainer.prepare import prepare
from trainer.splits import shard_paths


@pytest.fixture(scope="module")
def prepared(synthetic_root, tmp_path_factory, local_ray):
    return prepare(str(synthetic_root), tmp_path_factory.mktemp("cache"), size=32, align=False, progress=False)


def test_pk_batches_hold_p_identities_with_k_images_each(prepared):
    names = sorted(prepared["identities"])
    shards = shard_paths(prepared, names)
    ds = pipeline.pk_batches(shards, list(range(len(names))), 4, 3, 32, training_augment=True, seed=1)
    for images, labels in ds.take(20):
        assert images.shape == (12, 32, 32, 3) and images.dtype.name == "float32"
        assert 0.0 <= float(np.min(images)) and float(np.max(images)) <= 255.0
        values, counts = np.unique(labels.numpy(), return_counts=True)
        assert len(values) == 4 and set(counts) == {3}
        # blocks of K are contiguous: the layout the loss and the replica split rely on
        assert all(len(set(block)) == 1 for block in labels.numpy().reshape(4, 3))


def test_identities_with_fewer_than_k_images_repeat_theirs(prepared):
    names = sorted(prepared["identities"])
    ds = pipeline.pk_batches(shard_paths(prepared, names), list(range(len(names))), 2, 8, 32, False, seed=0)
    _, labels = next(iter(ds))
    assert sorted(np.unique(labels.numpy(), return_counts=True)[1]) == [8, 8]


def test_too_few_identities_for_p_is_an_error(prepared):
    names = sorted(prepared["identities"])[:3]
    with pytest.raises(ValueError, match="at least P=4 identities"):
        pipeline.pk_batches(shard_paths(prepared, names), [0, 1, 2], 4, 2, 32)


def test_ordered_images_yields_every_record_once_unaugmented(prepared):
    names = sorted(prepared["identities"])[:3]
    batches = list(pipeline.ordered_images(shard_paths(prepared, names), 32, batch_size=5))
    identities = [s.decode() for b in batches for s in b["identity"].numpy()]
    sources = [s.decode() for b in batches for s in b["source"].numpy()]
    assert identities == sorted(identities) and len(sources) == len(set(sources)) == 18
    again = list(pipeline.ordered_images(shard_paths(prepared, names), 32, batch_size=5))
    np.testing.assert_array_equal(batches[0]["image"], again[0]["image"])


def test_a_person_with_many_photos_is_drawn_from_all_of_them(tmp_path, local_ray):
    from tests.synthetic import make_identity_folders
    from trainer.pipeline import pk_batches
    from trainer.prepare import prepare
    from trainer.splits import shard_paths

    root = make_identity_folders(tmp_path / "faces", identities=2, images=150, size=32)
    manifest = prepare(str(root), tmp_path / "cache", size=32, align=False, progress=False)
    shards = shard_paths(manifest, sorted(manifest["identities"]))
    seen = set()
    for images, _ in pk_batches(shards, [0, 1], 2, 4, 32, training_augment=False, seed=0).take(100):
        seen.update(hash(image.tobytes()) for image in images.numpy())
    assert len(seen) > 200, f"only {len(seen)} of 300 photos were ever drawn"
