"""The run plan (plan.json) and the run's results (results.json): one reader and writer each."""
import json

import pytest

from trainer import run_results
from trainer.run_plan import RunPlan, Shards
from trainer.splits import Split


def a_plan(run_dir) -> RunPlan:
    return RunPlan(run_dir=str(run_dir), config={"model": {"name": "tiny"}}, image_size=32, run_name="r",
                   split=Split(["a", "b"], ["c"], ["d"], ["e"], 3), shards=Shards(["a.tfr", "b.tfr"], ["c.tfr"], ["d.tfr"]),
                   train_weights=[1.0, 3.0], train_photos=[2, 5], train_images=7, eval_sets={"val": ["c.tfr"]})


def test_a_plan_round_trips_through_its_dict_and_its_file(tmp_path):
    plan = a_plan(tmp_path)
    assert RunPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan  # what crosses the Ray boundary
    path = plan.save()
    assert path == tmp_path / "plan.json" and RunPlan.load(tmp_path) == plan
    on_disk = json.loads(path.read_text())
    assert on_disk["shards"]["test"] == ["d.tfr"] and on_disk["split"]["seed"] == 3 and on_disk["image_size"] == 32
    plan.mlflow_run_id = "abc"
    plan.save()
    assert RunPlan.load(tmp_path).mlflow_run_id == "abc"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]  # written aside, then renamed into place


def test_plans_written_before_still_load(tmp_path):
    old = {k: v for k, v in a_plan(tmp_path).to_dict().items()
           if k not in ("tracking_uri", "mlflow_run_id", "parent_run_id", "gallery_version", "init_from")}
    old.update(retrain_job=7, in_ray=True, parent_run_id=None)  # keys this version no longer has, a null
    old["split"]["some_future_field"] = 1
    (tmp_path / "plan.json").write_text(json.dumps(old))
    plan = RunPlan.load(tmp_path)
    assert plan.shards.train == ["a.tfr", "b.tfr"] and plan.split.seed == 3
    assert (plan.init_from, plan.mlflow_run_id, plan.parent_run_id, plan.gallery_version) == ("", "", "", 0)
    minimal = tmp_path / "minimal"
    minimal.mkdir()
    (minimal / "plan.json").write_text(json.dumps({"config": {}, "image_size": 96}))
    plan = RunPlan.load(minimal)
    assert plan.run_dir == str(minimal.resolve()) and plan.shards == Shards() and plan.eval_sets == {}


@pytest.mark.parametrize("content, message", [
    (None, "no plan.json"),
    ("{not json", "is not JSON"),
    ("[]", "a JSON object"),
    ("{}", "no config"),
    ('{"config": {}}', "no image_size"),
    ('{"config": {}, "image_size": 32, "shards": []}', "shards is not a JSON object"),
    ('{"config": {}, "image_size": "big"}', "malformed"),
])
def test_a_missing_or_malformed_plan_is_one_line_naming_the_file(tmp_path, content, message):
    if content is not None:
        (tmp_path / "plan.json").write_text(content)
    with pytest.raises(FileNotFoundError if content is None else ValueError, match=message) as caught:
        RunPlan.load(tmp_path)
    assert str(tmp_path) in str(caught.value) and "\n" not in str(caught.value)


def test_results_have_one_reader_and_writer(tmp_path):
    assert not run_results.finished(tmp_path)
    with pytest.raises(FileNotFoundError, match="has not finished"):
        run_results.load(tmp_path)
    run_results.save(tmp_path, {"compute": {"steps": 3}})
    run_results.save(tmp_path, {**run_results.load(tmp_path), "benchmarks": {}})
    assert run_results.load(tmp_path) == {"compute": {"steps": 3}, "benchmarks": {}}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]
    (tmp_path / "results.json").write_text("[1]")
    with pytest.raises(ValueError, match="results.json holds no results"):
        run_results.load(tmp_path)


def test_dropping_a_removed_persons_shards_keeps_the_parallel_lists_in_step():
    from trainer.run_plan import RunPlan, Shards

    plan = RunPlan(run_dir="r", config={}, image_size=96,
                   shards=Shards(["a", "b", "c", "d"], ["v"], ["t"]), train_weights=[1.0, 2.0, 3.0, 4.0],
                   train_photos=[10, 20, 30, 40], train_unlabeled=[1, 3], eval_sets={"new": ["b", "v"]})
    assert not plan.drop_shards({"zz"})
    assert plan.drop_shards({"b", "v"})
    assert plan.shards == Shards(["a", "c", "d"], [], ["t"]) and plan.eval_sets == {"new": []}
    assert plan.train_weights == [1.0, 3.0, 4.0] and plan.train_photos == [10, 30, 40]
    assert plan.train_unlabeled == [2], "index 3 ('d') is now 2; 'b' (1) is gone"
