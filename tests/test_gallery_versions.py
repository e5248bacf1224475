"""Gallery-only TF-Serving versions (serving/gallery_versions.py): after a process's first full export
of a model, each further version reuses the graph bytes and hard-links the network's weights; it must
load and answer like a full export, in TF2 (tf.saved_model.load) and through the TF1 session loader
TF-Serving uses (saved_model_cli run)."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import serving  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

from serving import versions
from serving.client import InProcessClient
from serving.export import export

SIZE = 32


@pytest.fixture(scope="module")
def world():
    import tf_keras as keras

    from trainer.models import build_model

    keras.utils.set_random_seed(3)
    model = build_model("tiny", input_size=SIZE)
    images = np.random.default_rng(3).uniform(0, 255, (5, SIZE, SIZE, 3)).astype(np.float32)
    return model, images, model(images, training=False).numpy()


def _shards(version_dir):
    return sorted((version_dir / "variables").glob("variables.data-*"))


def _network_shard(version_dir):
    return max(_shards(version_dir), key=lambda p: p.stat().st_size)


def test_gallery_only_versions_load_like_full_ones(world, tmp_path):
    from enroll.forget import served_people

    model, images, emb = world
    names = ["ann", "bob", "cy", "dee", "eve"]
    full = export(model, tmp_path, gallery_embeddings=emb[:2], gallery_names=names[:2], threshold=0.01,
                  gallery_only=False)
    second = export(model, tmp_path, gallery_embeddings=emb, gallery_names=names, threshold=0.01)
    third = export(model, tmp_path, gallery_embeddings=emb[:3], gallery_names=names[:3], threshold=0.01, top_k=2)
    assert len(_shards(full)) == 1 and len(_shards(second)) == len(_shards(third)) == 2
    # The third links the second's network shard: no network bytes written again.
    assert _network_shard(third).stat().st_ino == _network_shard(second).stat().st_ino
    assert _network_shard(third).stat().st_nlink == 2
    new_bytes = sum(p.stat().st_size for p in third.rglob("*") if p.is_file() and p != _network_shard(third))
    assert new_bytes < 0.5 * sum(p.stat().st_size for p in full.rglob("*") if p.is_file())

    reference, client = InProcessClient(full), InProcessClient(third)
    np.testing.assert_array_equal(reference.embed(images), client.embed(images))
    assert InProcessClient(second).identify(images).best == names
    result = client.identify(images)
    assert result.best == ["ann", "bob", "cy", None, None] and all(len(n) == 2 for n in result.names)
    meta = client.metadata()
    assert meta["version"] == 3 and meta["gallery_people"] == 3 and meta["top_k"] == 2
    assert served_people(third) == {"ann", "bob", "cy"}
    assert (third / "fingerprint.pb").is_file()
    assert (third / "assets.extra" / "tf_serving_warmup_requests").is_file()


def test_tf1_session_loader_runs_a_gallery_only_version(world, tmp_path):
    """saved_model_cli run: the MetaGraph's restore op reads both shards through the index, as
    tensorflow_model_server does."""
    model, images, emb = world
    export(model, tmp_path, gallery_embeddings=emb[:1], gallery_names=["ann"], threshold=0.01, gallery_only=False)
    path = export(model, tmp_path, gallery_embeddings=emb[1:3], gallery_names=["bob", "cy"], threshold=0.01)
    assert len(_shards(path)) == 2
    np.save(tmp_path / "images.npy", images[:3])
    proc = subprocess.run([sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "run", "--dir", str(path),
                           "--tag_set", "serve", "--signature_def", "identify", "--inputs",
                           f"images={tmp_path / 'images.npy'}", "--outdir", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    names = np.load(tmp_path / "out" / "names.npy", allow_pickle=True)
    unknown = np.load(tmp_path / "out" / "unknown.npy")
    assert [bool(u) for u in unknown] == [True, False, False]
    assert [n[0].decode() for n in names[1:]] == ["bob", "cy"]


def test_a_deleted_link_source_is_written_again(world, tmp_path):
    """remove-person deletes versions: the next one writes the network shard afresh, then links again."""
    model, images, emb = world
    export(model, tmp_path, gallery_embeddings=emb[:1], gallery_names=["ann"], gallery_only=False)
    second = export(model, tmp_path, gallery_embeddings=emb[:2], gallery_names=["ann", "bob"])
    shutil.rmtree(second)
    third = export(model, tmp_path, gallery_embeddings=emb[:2], gallery_names=["ann", "bob"])
    assert _network_shard(third).stat().st_nlink == 1
    fourth = export(model, tmp_path, gallery_embeddings=emb[:3], gallery_names=["ann", "bob", "cy"])
    assert _network_shard(fourth).stat().st_ino == _network_shard(third).stat().st_ino
    assert versions.list_versions(tmp_path, "facenet") == [1, 2, 3]  # (numbers follow the newest left)
    assert InProcessClient(fourth).identify(images[:3]).best == ["ann", "bob", "cy"]
