"""Consistent teaching (train.teacher_views): one transform on the student's crop and the teacher's
chip alike, the teacher's embedding of each view cached beside the shard, and the pipeline drawing them.

The views tests run the real dlib ResNet descriptor on real lfw_mini photos (the [teacher] extra).
"""
import json
from pathlib import Path

import numpy as np
import pytest

from trainer.config import ConfigError, from_dict
from trainer.prepare import prepare
from trainer.teacher_views import ViewTransform, prepare_views, views_path

TEACHER = "dlib_resnet_v1"


def _dot_image(size: int, x: float, y: float) -> np.ndarray:
    image = np.zeros((size, size, 3), np.uint8)
    image[int(y * size) - 2:int(y * size) + 3, int(x * size) - 2:int(x * size) + 3] = 255
    return image


def _brightest(image: np.ndarray) -> np.ndarray:
    grey = image.astype(np.float32).sum(axis=2)
    ys, xs = np.nonzero(grey >= grey.max() * 0.8)
    return np.array([xs.mean(), ys.mean()]) / image.shape[0]


def test_one_view_moves_a_point_alike_on_a_crop_and_on_a_chip_of_another_size():
    rng = np.random.default_rng(3)
    for _ in range(10):
        view = ViewTransform.draw(rng)
        view = ViewTransform(**{**view.__dict__, "erase": None, "blur": 0.0, "grey": False, "brightness": 0.0,
                                "contrast": 1.0, "saturation": 1.0})
        crop, chip = view.apply(_dot_image(128, 0.3, 0.4)), view.apply(_dot_image(150, 0.3, 0.4))
        assert crop.shape == (128, 128, 3) and chip.shape == (150, 150, 3) and crop.dtype == np.uint8
        assert np.abs(_brightest(crop) - _brightest(chip)).max() < 0.02, "the same place of the face on both"
        assert np.abs(_brightest(crop) - [0.3, 0.4]).max() > 0.005, "the view did move it"


def test_views_need_a_teacher_and_a_count_of_zero_or_more():
    with pytest.raises(ConfigError, match="teacher_views"):
        from_dict({"data": {"source": "x"}, "train": {"teacher_views": 2}})
    with pytest.raises(ConfigError, match="teacher_views"):
        from_dict({"data": {"source": "x"}, "train": {"teacher": TEACHER, "distill_weight": 1.0, "teacher_views": -1}})


@pytest.fixture(scope="module")
def prepared_shards(teacher_installed, eight_people, tmp_path_factory, local_ray) -> list[str]:
    """The eight people's shards at 64 px with the teacher's embeddings (aligned once for this module)."""
    manifest = prepare(str(eight_people), _CACHE.setdefault("dir", tmp_path_factory.mktemp("cache")), size=64,
                       teacher=TEACHER, progress=False)
    return [str(Path(manifest["dir"]) / e["shard"]) for e in manifest["identities"].values()]


_CACHE: dict = {}


def test_views_are_made_once_taught_on_their_own_pixels_and_remade_when_stale(prepared_shards):
    shards = prepared_shards[:3]
    made = prepare_views(shards, TEACHER, 2, progress=False)
    assert made["views_made"] == 3 * 3 * 2 and made["views_teacher_failed"] == 0 and made["views_reused"] == 0
    images, vectors = _records(views_path(shards[0], 2)), _vectors(views_path(shards[0], 2))
    originals, clean = _records(shards[0]), _vectors(shards[0])
    assert len(images) == 6 and vectors.shape == (6, 2, 128)
    assert all(a.shape == originals[0].shape for a in images)
    assert not any(np.array_equal(images[i], originals[i // 2]) for i in range(6)), "each view is transformed"
    # a view's target is the teacher's embedding of that view: near the clean photo's, not equal to it
    gaps = [float(np.linalg.norm(vectors[i, 0] - clean[i // 2, 0])) for i in range(6)]
    assert all(0.0 < g < 0.6 for g in gaps)
    assert prepare_views(shards, TEACHER, 2, progress=False)["views_reused"] == 3
    meta = Path(f"{views_path(shards[1], 2)}.json")
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "version": -1}))  # views of another recipe
    again = prepare_views(shards, TEACHER, 2, progress=False)
    assert again["views_reused"] == 2 and again["views_made"] == 6


def test_the_pipeline_draws_photos_and_their_views_with_the_views_targets(prepared_shards):
    from trainer.pipeline import pk_batches

    shards = prepared_shards[3:5]
    prepare_views(shards, TEACHER, 2, progress=False)
    known = {_key(v) for s in shards for v in _vectors(views_path(s, 2))[:, 0]}
    clean = {_key(v) for s in shards for v in _vectors(s)[:, 0]}
    batches = pk_batches(shards, [0, 1], 2, 9, 64, training_augment=False, seed=0, teacher=TEACHER, views=2)
    _, _, targets, has = next(iter(batches))
    drawn = [_key(v) for v in targets.numpy()]
    assert float(np.min(has)) == 1.0
    assert set(drawn) == known | clean, "every photo and every view of a 3-photo person in 9 draws"


def test_prepare_with_a_config_makes_the_views_of_the_training_people_only(prepared_shards, eight_people):
    from trainer.plan import prepare_all
    from trainer.splits import split_identities

    cfg = from_dict({"data": {"source": str(eight_people), "cache_dir": str(_CACHE["dir"]), "val_fraction": 0.25,
                              "test_fraction": 0.25},
                     "model": {"name": "tiny"},
                     "train": {"teacher": TEACHER, "distill_weight": 1.0, "teacher_views": 1}})
    manifest = prepare_all(cfg, progress=False)[0]
    split = split_identities({n: e["aligned"] for n, e in manifest["identities"].items()}, 0.25, 0.25)
    with_views = {name for name, e in manifest["identities"].items()
                  if views_path(Path(manifest["dir"]) / e["shard"], 1).exists()}
    assert with_views == set(split.train) and split.val and split.test


def _key(vector) -> tuple:
    return tuple(np.round(np.asarray(vector, np.float64), 4))


def _records(path) -> list[np.ndarray]:
    import tensorflow as tf

    from trainer.pipeline import parse

    return [parse(r, 64)["image"].numpy() for r in tf.data.TFRecordDataset(str(path))]


def _vectors(shard) -> np.ndarray:
    from trainer.teacher_cache import read_teacher, teacher_path

    return read_teacher(teacher_path(shard, TEACHER))[0]
