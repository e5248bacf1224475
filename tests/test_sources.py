"""Several data sources, pre-aligned crops and the distillation teacher, as a training run sees them.

The teacher tests run the real dlib ResNet descriptor (the [teacher] extra) on real photos from
../shared/data; they skip, saying why, when either is absent.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.synthetic import make_identity_folders
from trainer import config as config_lib, run_results
from trainer.config import ConfigError
from trainer.prepare import DatasetError, prepare, prune, teacher_path
from trainer.run_plan import RunPlan
from trainer.teacher_cache import read_teacher

REPO = Path(__file__).resolve().parents[1]


def test_sources_are_parsed_checked_and_named():
    cfg = config_lib.from_dict({"data": {"source": "a", "sources": [
        "x/glint6", {"path": "y/celeba", "align": "prealigned", "max_per_identity": 5, "weight": 0.5}]}})
    assert [config_lib.source_name(s) for s in cfg.data.sources] == ["glint6", "celeba"]
    assert cfg.data.sources[1].align == "prealigned" and cfg.data.sources[1].weight == 0.5
    assert cfg.flat()["data.sources"][0]["path"] == "x/glint6"
    for bad, message in [
        ({"sources": "x"}, "must be a list"),
        ({"sources": [{"path": "x", "alignn": "detect"}]}, "unknown config key 'data.sources[0].alignn'"),
        ({"sources": [{"path": "x", "align": "maybe"}]}, "data.sources[0].align' must be one of"),
        ({"sources": [{"name": "x"}]}, "data.sources[0].path' is missing"),
        ({"sources": [{"path": "x", "weight": 0}]}, "weight must be > 0"),
        ({"sources": ["a/x", "b/x"]}, "share the name 'x'"),
    ]:
        with pytest.raises(ConfigError, match=None) as info:
            config_lib.from_dict({"data": bad})
        assert message in str(info.value)
    with pytest.raises(ConfigError, match="need a teacher"):
        config_lib.from_dict({"train": {"distill_weight": 1.0}})
    bench = config_lib.from_dict({"eval": {"benchmarks": [{"pairs": "p.txt", "images": "d", "numbering": "sorted"}]}})
    assert bench.eval.benchmarks[0].numbering == "sorted"
    with pytest.raises(ConfigError, match="needs both pairs and images"):
        config_lib.from_dict({"eval": {"benchmarks": [{"pairs": "p.txt"}]}})
    with pytest.raises(ConfigError, match="needs distillation"):
        config_lib.from_dict({"data": {"sources": [{"path": "x", "labeled": False}]}})
    with pytest.raises(ConfigError, match="there is no loss"):
        config_lib.from_dict({"train": {"metric_weight": 0.0}})


def test_a_prealigned_source_must_be_square_and_nothing_is_written(tmp_path, local_ray):
    root = tmp_path / "crops"
    (root / "a").mkdir(parents=True)
    Image.new("RGB", (89, 109), "gray").save(root / "a" / "0.jpg")
    with pytest.raises(DatasetError, match=r"declared pre-aligned .* is 89x109, not square"):
        prepare(str(root), tmp_path / "cache", size=32, align="prealigned", progress=False)
    assert not list((tmp_path / "cache").rglob("*.tfrecord"))


def test_prealigned_photos_without_a_detectable_face_are_resized_and_counted(tmp_path, local_ray):
    root = make_identity_folders(tmp_path / "faces", identities=2, images=3)  # patterns: no face for MTCNN
    manifest = prepare(str(root), tmp_path / "cache", size=32, align="prealigned", progress=False)
    assert manifest["counts"]["resized_no_face"] == 6 and manifest["counts"]["faces_aligned"] == 6
    assert manifest["counts"]["no_face"] == 0
    detected = prepare(str(root), tmp_path / "cache", size=32, align=True, progress=False)
    assert detected["counts"]["no_face"] == 6 and detected["counts"]["faces_aligned"] == 0


def test_training_on_several_sources_namespaces_and_weights_them(tmp_path, local_ray, capsys):
    from trainer.prepare import main as prepare_main
    from trainer.train import plan_run

    make_identity_folders(tmp_path / "main", identities=10, images=4)
    make_identity_folders(tmp_path / "more", identities=4, images=5, seed=3)
    cfg = config_lib.from_dict({
        "data": {"source": str(tmp_path / "main"), "align": False, "cache_dir": str(tmp_path / "cache"),
                 "val_fraction": 0.2, "test_fraction": 0.2,
                 "sources": [{"path": str(tmp_path / "more"), "align": "resized", "weight": 3.0, "max_per_identity": 2}]},
        "model": {"name": "tiny"}, "train": {"identities_per_batch": 4, "out_dir": str(tmp_path / "runs")}})
    # `trainer.prepare --config` prepares every source a run of the config reads; the run then reuses them.
    (tmp_path / "two.yaml").write_text(json.dumps(cfg.to_dict()))
    assert prepare_main(["--config", str(tmp_path / "two.yaml")]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2  # "prepared <dir>: <counts>" per source
    shards = {p: p.stat().st_mtime_ns for p in (tmp_path / "cache").rglob("*.tfrecord")}
    plan = plan_run(cfg, None, progress=False)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "cache").rglob("*.tfrecord")} == shards
    extra = [n for n in plan.split.train if n.startswith("more/")]
    assert len(extra) == 4 and not any(n.startswith("more/") for n in plan.split.test)
    assert plan.train_weights.count(3.0) == 4 and len(plan.train_weights) == len(plan.shards.train)
    assert plan.source_counts["more"]["faces_aligned"] == 8  # the cap of 2 per identity
    assert plan.train_images == 6 * 4 + 8 == sum(plan.train_photos)
    assert plan.train_photos[-4:] == [2, 2, 2, 2]  # what train.sampling: photos draws people by
    cfg.train.run_name = "again"  # a warm start (or N_prim) reuses the base run's split, sources' names included
    again = plan_run(config_lib.from_dict(cfg.to_dict()), None, progress=False, split=plan.split)
    assert again.split == plan.split and again.shards.train == plan.shards.train
    missing = config_lib.from_dict({**cfg.to_dict(), "data": {**cfg.to_dict()["data"], "sources": [
        {"path": str(tmp_path / "nowhere")}]}})
    with pytest.raises(DatasetError, match="nowhere not found"):
        plan_run(missing, None, progress=False)


def test_unlabeled_photos_each_get_a_label_of_their_own(tmp_path, local_ray):
    import tensorflow as tf

    from trainer.pipeline import pk_batches
    from trainer.prepare import prepare as prep
    from trainer.splits import shard_paths

    root = make_identity_folders(tmp_path / "faces", identities=4, images=3)
    manifest = prep(str(root), tmp_path / "cache", size=32, align=False, progress=False)
    shards = shard_paths(manifest, sorted(manifest["identities"]))
    batch = next(iter(pk_batches(shards, [0, 1, -1, -1], 4, 2, 32, seed=0)))
    labels = batch[1].numpy().reshape(4, 2)
    labelled = [row for row in labels if row[0] >= 0]
    unlabelled = [row for row in labels if row[0] < 0]
    assert len(labelled) == 2 and all(row[0] == row[1] for row in labelled)
    assert len(unlabelled) == 2 and len({int(v) for row in unlabelled for v in row}) == 4


def test_weighted_identity_draws_follow_the_weights():
    from trainer.pipeline import _identity_stream

    shards = [f"s{i}" for i in range(6)]
    stream = _identity_stream(shards, list(range(6)), [1.0, 1.0, 1.0, 1.0, 4.0, 4.0], seed=0)
    drawn = [int(label) for _, label in stream.take(3000)]
    heavy = sum(label >= 4 for label in drawn) / len(drawn)
    assert heavy == pytest.approx(8 / 12, abs=0.04)


def test_the_teacher_embeds_every_photo_once_and_its_cache_is_checked(teacher_installed, eight_people, tmp_path, local_ray):
    cache = tmp_path / "cache"
    manifest = prepare(str(eight_people), cache, size=64, teacher="dlib_resnet_v1", progress=False)
    assert manifest["counts"]["faces_aligned"] == 24 and manifest["counts"]["teacher_failed"] == 0
    shard = Path(manifest["dir"]) / manifest["identities"][sorted(manifest["identities"])[0]]["shard"]
    vectors = _teacher_vectors(teacher_path(shard, "dlib_resnet_v1"))
    assert vectors.shape == (3, 2, 128)
    assert np.allclose(np.linalg.norm(vectors, axis=2), 1.0, atol=1e-4)
    same_person = float(np.linalg.norm(vectors[0, 0] - vectors[1, 0]))
    assert same_person < 0.6, "dlib's distances between photos of one person are small"
    assert float(np.linalg.norm(vectors[0, 0] - vectors[0, 1])) < 0.35, "the mirror image is the same face"
    again = prepare(str(eight_people), cache, size=64, teacher="dlib_resnet_v1", progress=False)
    assert again["counts"]["identities_reused"] == 8
    meta = Path(f"{teacher_path(shard, 'dlib_resnet_v1')}.json")
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "dim": 64}))  # a cache of another size
    redone = prepare(str(eight_people), cache, size=64, teacher="dlib_resnet_v1", progress=False)
    assert redone["counts"]["identities_reused"] == 7
    assert prune(cache) == 0 and teacher_path(shard, "dlib_resnet_v1").exists(), "prune keeps teacher files"


def _teacher_vectors(path):
    return read_teacher(path)[0]


def test_distillation_trains_end_to_end_and_keeps_the_best_epoch(teacher_installed, eight_people, tmp_path):
    from trainer.evaluation.pairs import main as write_pairs

    assert write_pairs([str(eight_people), "--out", str(tmp_path / "eight.pairs.txt"), "--folds", "2",
                        "--pairs-per-fold", "4"]) == 0
    config = tmp_path / "distill.yaml"
    config.write_text(json.dumps({
        "data": {"source": str(eight_people), "cache_dir": str(tmp_path / "cache"), "val_fraction": 0.25,
                 "test_fraction": 0.25},
        "model": {"name": "tiny"},
        "train": {"identities_per_batch": 2, "images_per_identity": 2, "epochs": 3, "steps_per_epoch": 2,
                  "sampling": "photos",
                  "optimizer": "adam", "teacher": "dlib_resnet_v1", "metric_weight": 0.5, "distill_weight": 1.0,
                  "distill_relational_weight": 1.0, "teacher_views": 1, "lr_schedule": "cosine", "warmup_epochs": 1,
                  "margin_softmax": "cosface", "margin_softmax_centres": "teacher", "margin_softmax_weight": 0.1,
                  "centre_distill_weight": 0.5,
                  "out_dir": str(tmp_path / "runs"), "run_name": "d"},
        "eval": {"folds": 2, "pairs_per_fold": 2, "benchmarks": [
            {"pairs": str(tmp_path / "eight.pairs.txt"), "images": str(eight_people), "numbering": "sorted"}]},
        "ray": {"num_workers": 0},
        "mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}}))
    done = subprocess.run([sys.executable, "-m", "trainer.train", "--config", str(config)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    states = [json.loads(p.read_text()) for p in sorted((tmp_path / "runs" / "d" / "checkpoints").glob("*/state.json"))]
    assert len(states) == 3
    best = max(range(3), key=lambda i: (states[i]["metrics"]["val_accuracy"], -i))
    from trainer import checkpoints

    assert checkpoints.resolve_checkpoint(tmp_path / "runs" / "d").name == f"epoch-{best:04d}"
    # Each term of the loss is reported unweighted, and the loss is their weighted sum.
    weights = {"triplet": 0.5, "embedding": 1.0, "relational": 1.0, "centre": 0.5, "head": 0.1}
    for state in states:
        metrics = state["metrics"]
        assert metrics["loss"] == pytest.approx(sum(w * metrics[f"loss/{t}"] for t, w in weights.items()), rel=1e-4)
        assert metrics["teacher_cosine"] == pytest.approx(1 - metrics["loss/embedding"] / 2, abs=1e-4)
    assert "loss/head=" in done.stdout and "teacher_cosine=" in done.stdout
    assert "benchmark eight: accuracy" in done.stdout
    views = RunPlan.load(tmp_path / "runs" / "d").source_counts["teacher_views"]
    assert views["views_made"] == 12 and views["views_shards"] == 4, "one view of each training photo"
    _the_head_is_the_teachers_centres(RunPlan.load(tmp_path / "runs" / "d"))
    # A quiet console: TensorFlow's start-up lines go to the run's train.log, whose path is printed.
    log = tmp_path / "runs" / "d" / "train.log"
    assert f"full log: {log}" in done.stdout and "benchmark eight: accuracy" in log.read_text()
    assert "oneDNN" in log.read_text() and "oneDNN" not in done.stdout + done.stderr
    bench = run_results.load(tmp_path / "runs" / "d")["benchmarks"]["eight"]
    assert bench["pairs"] == 16 and 0 <= bench["accuracy"] <= 1
    from mlflow.tracking import MlflowClient

    run_id = RunPlan.load(tmp_path / "runs" / "d").mlflow_run_id
    logged = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(run_id).data.metrics
    assert logged["bench_eight_accuracy"] == pytest.approx(bench["accuracy"])
    assert "teacher_cosine" in logged and "loss/triplet" in logged
    _how_far_from_the_teacher(tmp_path / "runs" / "d", weights, tmp_path / "fit.json")
    teacher = subprocess.run([sys.executable, "-m", "trainer.evaluate", str(tmp_path / "runs" / "d"), "--teacher",
                              "dlib_resnet_v1"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert teacher.returncode == 0, teacher.stderr[-2000:]
    metrics = json.loads((tmp_path / "runs" / "d" / "eval-test-dlib_resnet_v1" / "metrics.json").read_text())
    assert metrics["auc"] > 0.9, "the teacher tells these two test people apart"


def _how_far_from_the_teacher(run, weights, out):
    """experiments.teacher_fit on the run: cosines per split and each term's gradient, as JSON."""
    from experiments import teacher_fit

    assert teacher_fit.main([str(run), "--train-every", "1", "--batches", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["student_teacher_cosine"]) == {"train", "val", "test"}
    for row in [*result["student_teacher_cosine"].values(), result["teacher_mirror_agreement"]]:
        assert row["n"] > 0 and -1 <= row["p10"] <= row["median"] <= 1 and -1 <= row["mean"] <= 1
    assert result["teacher_mirror_agreement"]["mean"] > 0.9, "dlib's descriptor barely moves under a mirror"
    assert {name: row["weight"] for name, row in result["terms"].items()} == weights
    for row in result["terms"].values():
        assert row["grad_norm"] > 0 and row["weighted_grad_norm"] == pytest.approx(row["weight"] * row["grad_norm"])
    assert out.with_suffix(".md").read_text().startswith("`python -m experiments.teacher_fit")


def test_teacher_fit_refuses_a_missing_run_in_one_line(tmp_path, capsys):
    from experiments import teacher_fit

    assert teacher_fit.main([str(tmp_path / "no-run"), "--out", str(tmp_path / "fit.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and not (tmp_path / "fit.json").exists()


def _the_head_is_the_teachers_centres(plan):
    """train.margin_softmax_centres: teacher — a fixed class per training person at the normalised mean
    of the teacher's embeddings of their photos (the same files the run trained with)."""
    from trainer import config as config_lib
    from trainer.worker import _margin_head

    head = _margin_head(config_lib.from_dict(plan.config).train, plan.shards.train, 128)
    assert not head.trainable_variables, "the centres are fixed"
    for row, shard in zip(head.class_weights.numpy(), plan.shards.train):
        vectors, ok = read_teacher(teacher_path(shard, "dlib_resnet_v1"))
        mean = vectors[ok, 0].mean(axis=0)
        np.testing.assert_allclose(row, mean / np.linalg.norm(mean), atol=1e-5)


def test_asking_for_the_teacher_without_the_extra_is_one_line(tmp_path):
    make_identity_folders(tmp_path / "faces", identities=4, images=2)
    script = ("import sys; sys.modules['dlib'] = None\n"  # as if the [teacher] extra were not installed
              "from trainer.train import main\n"
              f"sys.exit(main(['--set', 'data.source={tmp_path / 'faces'}', '--set', 'train.teacher=dlib_resnet_v1',"
              f" '--set', 'data.cache_dir={tmp_path / 'cache'}', '--set', 'train.out_dir={tmp_path / 'runs'}']))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "needs the [teacher] extra" in errors[0] and "pip install -e '.[teacher]'" in errors[0]
    assert not (tmp_path / "cache").exists() and not (tmp_path / "runs").exists(), "nothing written"
