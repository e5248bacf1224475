"""prepare: Ray-parallel alignment into per-identity shards, counts for every bad input, caching."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.prepare import DatasetError, list_identity_folder, prepare, prune
from tests.synthetic import make_identity_folders


@pytest.fixture()
def messy_root(tmp_path):
    """4 good identities of 3 photos, plus: a corrupt JPEG, a text file, a fake .jpg,
    an empty identity folder and an identity with a single photo."""
    root = make_identity_folders(tmp_path / "faces", identities=4, images=3)
    good = (root / "person_00" / "00.jpg").read_bytes()
    (root / "person_00" / "broken.jpg").write_bytes(good[: len(good) // 3])
    (root / "person_01" / "notes.txt").write_text("not a photo")
    (root / "person_02" / "fake.jpg").write_text("<html>not a jpeg</html>")
    (root / "empty_person").mkdir()
    (root / "loner").mkdir()
    shutil.copy(root / "person_03" / "00.jpg", root / "loner" / "only.jpg")
    return root


def test_counts_every_kind_of_bad_input(messy_root, tmp_path, local_ray):
    manifest = prepare(str(messy_root), tmp_path / "cache", size=32, align=False, progress=False)
    counts = manifest["counts"]
    assert counts["identities"] == 5  # 4 + loner; the empty folder is counted, not kept
    assert counts["empty_identities"] == 1 and counts["non_image_files"] == 1
    assert counts["images_read"] == 4 * 3 + 2 + 1
    assert counts["unreadable"] == 2 and counts["faces_aligned"] == 13
    reasons = {r["source"].rsplit("/", 1)[-1]: r["reason"] for r in manifest["rejected"]}
    assert reasons["broken.jpg"].startswith("corrupt image")
    assert reasons["fake.jpg"].startswith("not an image")
    assert manifest["identities"]["loner"]["aligned"] == 1
    on_disk = json.loads(Path(manifest["path"]).read_text())
    assert on_disk["counts"] == counts


def test_rerun_reuses_the_cache_and_redoes_only_changed_identities(tmp_path, local_ray):
    root = make_identity_folders(tmp_path / "faces", identities=3, images=2)
    first = prepare(str(root), tmp_path / "cache", size=32, align=False, progress=False)
    assert first["counts"]["identities_reused"] == 0
    again = prepare(str(root), tmp_path / "cache", size=32, align=False, progress=False)
    assert again["counts"]["identities_reused"] == 3 and again["fingerprint"] == first["fingerprint"]
    shutil.copy(root / "person_00" / "00.jpg", root / "person_00" / "02.jpg")
    changed = prepare(str(root), tmp_path / "cache", size=32, align=False, progress=False)
    assert changed["counts"]["identities_reused"] == 2
    assert changed["identities"]["person_00"]["aligned"] == 3
    assert changed["fingerprint"] != first["fingerprint"]
    assert len(list(Path(changed["dir"]).glob("*.tfrecord"))) == 4
    assert prune(tmp_path / "cache") == 1, "only the stale shard of the changed identity is unused"
    assert len(list(Path(changed["dir"]).glob("*.tfrecord"))) == 3


def test_roots_sharing_photos_share_shards(tmp_path, local_ray):
    """A second root made of symlinks to the same photos (how experiments build changed datasets)
    reuses every shard, while keeping its own manifest."""
    root = make_identity_folders(tmp_path / "faces", identities=3, images=2)
    first = prepare(str(root), tmp_path / "cache", size=32, align=False, progress=False)
    (tmp_path / "copy").mkdir()
    for folder in root.iterdir():
        (tmp_path / "copy" / folder.name).symlink_to(folder)
    second = prepare(str(tmp_path / "copy"), tmp_path / "cache", size=32, align=False, progress=False)
    assert second["counts"]["identities_reused"] == 3 and second["path"] != first["path"]
    assert prune(tmp_path / "cache") == 0


def test_real_photos_are_detected_and_aligned(shared_data, tmp_path, local_ray):
    root = tmp_path / "lfw"
    for name in ("Colin_Powell", "Hugo_Chavez"):
        (root / name).mkdir(parents=True)
        for photo in sorted((shared_data / "lfw_mini" / name).glob("*.jpg"))[:3]:
            shutil.copy(photo, root / name / photo.name)
    manifest = prepare(str(root), tmp_path / "cache", size=96, progress=False)
    assert manifest["counts"]["images_read"] == 6
    assert manifest["counts"]["faces_aligned"] + manifest["counts"]["no_face"] == 6
    assert manifest["counts"]["faces_aligned"] >= 5


def test_missing_or_empty_dataset_fails_with_one_line(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        list_identity_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no identity folders"):
        list_identity_folder(tmp_path / "empty")
    result = subprocess.run([sys.executable, "-m", "trainer.prepare", "--source", str(tmp_path / "nope")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: dataset path not found")
    bare = subprocess.run([sys.executable, "-m", "trainer.prepare"], capture_output=True, text=True, timeout=120)
    assert bare.returncode == 2 and bare.stderr.strip().splitlines() == [
        "error: no dataset given: pass --source DIR (an identity-folder root) or set data.source"], bare.stderr


def test_a_tfds_dataset_by_name(tmp_path, monkeypatch, local_ray):
    """``tfds:<name>`` goes through TensorFlow Datasets' own builder API: a builder defined here
    (no download) is prepared, exported once to an identity folder, then aligned like any other."""
    import numpy as np
    import tensorflow_datasets as tfds

    from tests.synthetic import identity_pattern, photo

    names = ["ada", "grace", "linus"]

    class SyntheticFacesForTest(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(48, 48, 3)), "label": tfds.features.ClassLabel(names=names)}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            rng = np.random.default_rng(0)
            for i, name in enumerate(names):
                for j in range(3):
                    yield f"{name}-{j}", {"image": photo(identity_pattern(i, 48), rng), "label": name}

    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    manifest = prepare("tfds:synthetic_faces_for_test", tmp_path / "cache", size=32, align=False, progress=False)
    assert sorted(manifest["identities"]) == names
    assert manifest["counts"]["faces_aligned"] == 9 and manifest["source"] == "tfds:synthetic_faces_for_test"
    again = prepare("tfds:synthetic_faces_for_test", tmp_path / "cache", size=32, align=False, progress=False)
    assert again["counts"]["identities_reused"] == 3


def test_photos_copied_afresh_keep_their_cache(tmp_path, local_ray):
    """The cache is keyed by the photos' contents: a fresh copy (new mtimes) reuses every shard,
    while a photo whose bytes changed is redone."""
    import os
    root = make_identity_folders(tmp_path / "faces", identities=2, images=2)
    prepare(str(root), tmp_path / "cache", size=32, align=False, progress=False)
    for photo in root.glob("*/*.jpg"):
        os.utime(photo, (1, 1))
    again = prepare(str(root), tmp_path / "cache", size=32, align=False, progress=False)
    assert again["counts"]["identities_reused"] == 2
    photo = root / "person_01" / "00.jpg"
    photo.write_bytes(photo.read_bytes() + b"\0")
    changed = prepare(str(root), tmp_path / "cache", size=32, align=False, progress=False)
    assert changed["counts"]["identities_reused"] == 1
