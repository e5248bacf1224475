"""experiments/comparison.py end to end on a tiny run: a tiny network's checkpoint and TFRecord shards
of synthetic identities (tests/synthetic.py) for its training, validation and test splits, as
tests/test_tflite_export.py makes them. The network is untrained; what is checked is that every
method runs on the same crops and pairs, with the trainer's own evaluator, and lands in one table."""
import json

import numpy as np
import pytest

pytest.importorskip("skimage", reason="scikit-image is not installed (pip install -e '.[baselines]')")

import serving  # noqa: E402,F401  (tf-keras before TensorFlow)
from experiments import comparison  # noqa: E402
from tests.synthetic import identity_pattern, photo, write_shard  # noqa: E402

SIZE = 32
METHODS = ["triplet network (nearest)", "triplet network + KNN", "triplet network + SVM",
           "Siamese head (logistic regression)", "TFLite int8 (nearest)",
           "Eigenfaces (PCA)", "Fisherfaces (LDA)", "LBP histograms (χ²)"]


def make_run(root, test_people: int = 6):
    """A run directory: 8 training identities x 5 photos, 10 validation x 4, ``test_people`` test x 7."""
    import tf_keras as keras

    from trainer import checkpoints, config as config_lib
    from trainer.models import build_model

    keras.utils.set_random_seed(0)
    cfg = config_lib.from_dict({"model": {"name": "tiny", "input_size": SIZE},
                                "eval": {"folds": 2, "pairs_per_fold": 20}})
    run = root / "run"
    (run / "checkpoints").mkdir(parents=True)
    rng = np.random.default_rng(0)
    shards = {}
    for split, (first, count, photos) in {"train": (0, 8, 5), "val": (8, 10, 4), "test": (18, test_people, 7)}.items():
        shards[split] = [write_shard(run / f"id{i:02d}.tfrecord", f"id{i:02d}",
                                     np.stack([photo(identity_pattern(i, SIZE), rng) for _ in range(photos)]))
                         for i in range(first, first + count)]
    (run / "plan.json").write_text(json.dumps({"config": cfg.to_dict(), "image_size": SIZE, "shards": shards}))
    checkpoints.save(checkpoints.checkpoint_dir(run, 0), build_model("tiny", input_size=SIZE),
                     keras.optimizers.Adam(), {"epoch": 0, "metrics": {}}, cfg.to_dict())
    return run


def test_every_method_in_one_table(tmp_path):
    from trainer.checkpoints import load_run
    from trainer.evaluate import embed_shards, verification

    run = make_run(tmp_path)
    out = tmp_path / "comparison.json"
    # int8 only: float16 is the same code path with another argument, and each conversion takes ~15 s here.
    assert comparison.main([str(run), "--far-targets", "0.05", "--latency-queries", "3", "--tflite", "int8",
                            "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = {r["method"]: r for r in result["rows"]}
    assert list(rows) == METHODS and result["command"].startswith("python -m experiments.comparison ")
    assert (result["test_crops"], result["train_identities"], result["probes"]) == (42, 8, 3 * 2 + 3 * 7)
    for r in result["rows"]:
        for photos in ("1", "5"):
            figures = r["identification"][photos]
            assert figures["people"] == 3 and 0 <= figures["rank1"] <= 1
            assert set(figures["open_set"]["0.05"]) == {"accuracy", "dir", "far"}
        assert r["query_ms"] >= r["query_ms_fastest"] > 0
        assert (r["verification"] is None) == (r["method"].endswith(("KNN", "SVM")))
    # The network's row is the trainer's own evaluation of the same embeddings on the same pairs.
    model, cfg, plan = load_run(run)
    metrics, _, _ = verification(*embed_shards(model, plan.shards.test, SIZE), cfg.eval.folds, cfg.eval.pairs_per_fold)
    network = rows["triplet network (nearest)"]
    assert network["verification"]["accuracy"] == pytest.approx(metrics["accuracy"])
    assert network["verification"]["pairs"] == metrics["pairs"] == 2 * 2 * 20
    int8 = rows["TFLite int8 (nearest)"]["verification"]
    assert int8["auc"] == pytest.approx(network["verification"]["auc"], abs=0.1)
    assert rows["LBP histograms (χ²)"]["features"] == 7 * 7 * 59 and rows["Fisherfaces (LDA)"]["features"] == 7
    assert rows["LBP histograms (χ²)"]["verification"]["auc"] > 0.8  # texture tells these patterns apart untrained
    table = out.with_suffix(".md").read_text()
    assert all(f"| {m} |" in table for m in METHODS) and "rank-1, 5 photos" in table


def test_too_few_people_for_the_classifiers_is_one_line_and_writes_nothing(tmp_path, capsys):
    run = make_run(tmp_path, test_people=2)  # one enrolled person (sorted names alternate), one stranger
    out = tmp_path / "comparison.json"
    assert comparison.main([str(run), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "at least 2 people" in err[0] and not out.exists()
    assert comparison.main([str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1 and not out.exists()
    assert comparison.main([str(run), "--far-targets", "1.5", "--out", str(out)]) == 2 and not out.exists()
