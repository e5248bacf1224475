"""Benchmarks in LFW's pairs.txt format: a tiny trained run scored end to end through
``python -m trainer.evaluate RUN_DIR --pairs ... --images ...``, the photo numbering, and the refusals."""
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.synthetic import identity_pattern, photo
from tests.test_train import run, smoke_config
from trainer import evaluate
from trainer.evaluation import benchmark
from trainer.evaluation.lfw_protocol import Pair, read_pairs, write_pairs
from trainer.evaluation.pairs import identity_folders, make_pairs

REPO = Path(__file__).resolve().parents[1]
# The tiny run's own test split has too few people for disjoint folds; not what is tested here.
pytestmark = pytest.mark.filterwarnings("ignore:.*cannot fill .* disjoint folds")


def lfw_named_folder(root: Path, people: int = 6, photos: int = 4, size: int = 48) -> Path:
    """``root/<Name>/<Name>_0001.png`` ... in LFW's naming; synthetic, so MTCNN finds no face."""
    rng = np.random.default_rng(1)
    for i in range(people):
        name = f"Person_{chr(65 + i)}"
        (root / name).mkdir(parents=True)
        pattern = identity_pattern(100 + i, size)
        for j in range(1, photos + 1):
            Image.fromarray(photo(pattern, rng)).save(root / name / f"{name}_{j:04d}.png")
    return root


def write_benchmark_pairs(images: Path, path: Path, folds: int = 2, per_fold: int = 6) -> Path:
    pairs = make_pairs(identity_folders(images), folds=folds, pairs_per_fold=per_fold, seed=0)
    write_pairs(path, pairs, folds, len(pairs) // (2 * folds))
    return path


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory, local_ray):
    """A tiny model trained for one short epoch on synthetic identities, tracked in a sqlite MLflow."""
    from tests.synthetic import make_identity_folders

    tmp = tmp_path_factory.mktemp("bench")
    root = make_identity_folders(tmp / "train", identities=8, images=4)
    plan, _ = run(smoke_config(root, tmp, epochs=1, steps_per_epoch=2, run_name="bench"))
    return plan


def test_cli_scores_an_lfw_named_benchmark_and_logs_to_mlflow(tracked_run, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    images = lfw_named_folder(tmp_path / "lfwsynth" / "images")
    pairs_file = write_benchmark_pairs(images, tmp_path / "lfwsynth" / "pairs.txt")
    run_dir = Path(tracked_run.run_dir)
    assert evaluate.main([str(run_dir), "--pairs", str(pairs_file), "--images", str(images)]) == 0
    out = run_dir / "eval-lfwsynth"  # the name defaults to the pairs file's folder
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["accuracy"] <= 1.0 and 0.0 <= metrics["auc"] <= 1.0
    assert metrics["pairs"] == len(read_pairs(pairs_file)) == 24
    used = {(p.left_name, p.left_index) for p in read_pairs(pairs_file)} | \
           {(p.right_name, p.right_index) for p in read_pairs(pairs_file)}
    assert metrics["photos"] == len(used)
    # Colour blobs hold no face: every photo is embedded from its centre crop, and counted.
    assert metrics["fallback_photos"] == metrics["photos"]
    assert len((out / "fallback_photos.txt").read_text().split()) == len(used)
    assert (out / "roc.png").stat().st_size and (out / "distances.png").stat().st_size
    assert metrics["folds"] == 2 and "accuracy (2-fold)" in capsys.readouterr().out

    client = MlflowClient(tracking_uri=tracked_run.tracking_uri)
    logged = client.get_run(tracked_run.mlflow_run_id).data.metrics
    assert logged["bench_lfwsynth_accuracy"] == pytest.approx(metrics["accuracy"])
    assert logged["bench_lfwsynth_fallback_photos"] == metrics["fallback_photos"]
    artifacts = {a.path for a in client.list_artifacts(tracked_run.mlflow_run_id, "bench-lfwsynth")}
    assert {"bench-lfwsynth/metrics.json", "bench-lfwsynth/roc.png"} <= artifacts

    # The split evaluation is unchanged beside the new mode.
    assert evaluate.main([str(run_dir), "--split", "test"]) == 0
    assert (run_dir / "eval-test" / "metrics.json").exists()


def test_evaluate_benchmark_on_sorted_numbering(tracked_run, tmp_path):
    """Folders not named the LFW way: index k is the k-th file in sorted order (pairs.py's numbering)."""
    from tests.synthetic import make_identity_folders
    from trainer import checkpoints

    images = make_identity_folders(tmp_path / "plain", identities=4, images=3, seed=3)
    pairs_file = write_benchmark_pairs(images, tmp_path / "plain.pairs.txt", per_fold=3)
    model, cfg, plan = checkpoints.load_run(tracked_run.run_dir)
    metrics = benchmark.evaluate_benchmark(model, pairs_file, images, cfg.data.cache_dir, plan.image_size)
    assert metrics["pairs"] == 12 and 0.0 <= metrics["accuracy"] <= 1.0
    assert benchmark.benchmark_name(pairs_file) == "plain"


def test_photo_numbering(tmp_path):
    for name in ("b.jpg", "a.png", "c.jpg"):
        (tmp_path / "imgs" / "x").mkdir(parents=True, exist_ok=True)
        (tmp_path / "imgs" / "x" / name).touch()
    for n in (1, 2, 3, 5, 7, 8, 9):  # LFW-named with a gap: number 7 is the 5th file, the 7th is 9
        (tmp_path / "imgs" / "Jo_Do").mkdir(exist_ok=True)
        (tmp_path / "imgs" / "Jo_Do" / f"Jo_Do_{n:04d}.jpg").touch()
    pairs_file = tmp_path / "pairs.txt"
    pairs = [Pair("x", 1, "x", 3, True, 0), Pair("x", 2, "Jo_Do", 2, False, 0),
             Pair("Jo_Do", 1, "Jo_Do", 7, True, 1), Pair("x", 1, "Jo_Do", 3, False, 1)]
    write_pairs(pairs_file, pairs, 2, 1)
    names = lambda photos: [(Path(a).name, Path(b).name) for a, b in photos]  # noqa: E731
    first = [("a.png", "c.jpg"), ("b.jpg", "Jo_Do_0002.jpg")]
    assert names(benchmark.resolve_photos(pairs_file, tmp_path / "imgs", "lfw")[1][:3]) == \
        first + [("Jo_Do_0001.jpg", "Jo_Do_0007.jpg")]
    assert names(benchmark.resolve_photos(pairs_file, tmp_path / "imgs", "sorted")[1][:3]) == \
        first + [("Jo_Do_0001.jpg", "Jo_Do_0009.jpg")]
    with pytest.raises(ValueError, match=r"pairs.txt:4: Jo_Do 7 is ambiguous"):
        benchmark.resolve_photos(pairs_file, tmp_path / "imgs")


@pytest.mark.parametrize("pairs_text, images, message", [
    ("2 1\nPerson_A 1 x\nPerson_A 1 Person_B 1\nPerson_C 1 2\nPerson_C 1 Person_D 1\n", "images",
     r"pairs\.txt:2: image indices must be integers"),
    ("2 1\nPerson_A 1 2\nPerson_A 1 Person_B 1\nPerson_C 1 9\nPerson_C 1 Person_D 1\n", "images",
     r"pairs\.txt:4: missing photo .*Person_C_0009"),
    ("2 1\nPerson_A 1 2\nPerson_A 1 Nobody 1\nPerson_C 1 2\nPerson_C 1 Person_D 1\n", "images",
     r"pairs\.txt:3: no photo folder .*Nobody"),
    ("2 1\nPerson_A 1 2\nPerson_A 1 Person_B 1\nPerson_C 1 2\nPerson_C 1 Person_D 1\n", "no_such_dir",
     r"images folder not found"),
    (None, "images", r"pairs file not found"),
])
def test_bad_input_is_one_error_line_and_exit_2(tracked_run, tmp_path, capsys, pairs_text, images, message):
    lfw_named_folder(tmp_path / "images", people=4, photos=2)
    pairs_file = tmp_path / "pairs.txt"
    if pairs_text is not None:
        pairs_file.write_text(pairs_text)
    code = evaluate.main([tracked_run.run_dir, "--pairs", str(pairs_file), "--images", str(tmp_path / images)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert re.search(message, err), err
    assert not (Path(tracked_run.run_dir) / f"eval-{benchmark.benchmark_name(pairs_file)}").exists()


def test_cli_process_refuses_a_non_run_and_bad_arguments(tmp_path):
    pairs_file = tmp_path / "pairs.txt"
    pairs_file.write_text("2 1\n")
    for args, message in (([str(tmp_path), "--pairs", str(pairs_file), "--images", str(tmp_path)], "not a run"),
                          ([str(tmp_path), "--pairs", str(pairs_file)], "--pairs and --images go together")):
        result = subprocess.run([sys.executable, "-m", "trainer.evaluate", *args], cwd=REPO, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 2, result.stderr
        # TensorFlow's start-up chatter may precede it; the refusal itself is the one last line.
        lines = result.stderr.strip().splitlines()
        assert lines[-1].startswith("error: ") and message in lines[-1], result.stderr[-2000:]
        assert sum(line.startswith("error:") for line in lines) == 1


def test_mirror_average_experiment_scores_both_ways(tracked_run, tmp_path, capsys):
    from experiments import mirror_average

    out = tmp_path / "mirror.json"
    assert mirror_average.main([tracked_run.run_dir, "--out", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert set(row["plain"]) == set(row["mirror_average"]) >= {"val_accuracy", "val_oneshot_rank1"}
    assert all(0.0 <= v <= 1.0 for v in row["plain"].values() if v == v)
    assert "→" in capsys.readouterr().out
    assert mirror_average.main([str(tmp_path / "no-run")]) == 2
