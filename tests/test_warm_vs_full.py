"""``warm_vs_full --rounds``: two continual rounds on synthetic faces with the tiny model, end to end.

People are added and removed each round; the removed must be gone from the round's data and from
both runs' training split, compute must add up round after round, and one MLflow parent run must hold
every round's children.
"""
import json
from pathlib import Path

import pytest

from experiments import warm_vs_full
from tests.synthetic import make_identity_folders
from tests.test_train import smoke_config
from trainer.run_plan import RunPlan
from trainer.splits import shard_paths

EXPERIMENT = "warm_vs_full_rounds_test"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """24 synthetic people: 4 validation, 4 test, 16 to train (12 base + 2 added in each of 2 rounds)."""
    work = tmp_path_factory.mktemp("rounds")
    root = make_identity_folders(work / "faces", identities=24, images=5)
    config = smoke_config(root, work, epochs=1, steps_per_epoch=2, identities_per_batch=3,
                          images_per_identity=2).to_dict()
    config["data"].update(val_fraction=0.15, test_fraction=0.15)
    config["eval"]["pairs_per_fold"] = 5
    config["mlflow"]["experiment"] = EXPERIMENT
    (work / "config.yaml").write_text(json.dumps(config))  # JSON is YAML
    # --work/--results in tmp: the committed experiments/results/ must not be overwritten.
    return work, ["--config", str(work / "config.yaml"), "--work", str(work / "work"),
                  "--results", str(work / "results")]


@pytest.fixture(scope="module")
def rounds_run(setup, local_ray):
    work, common = setup
    assert warm_vs_full.main([*common, "--rounds", "2", "--add", "2", "--remove", "2", "--max-warm-epochs", "2"]) == 0
    return work, json.loads((work / "results" / "warm_vs_full_rounds.json").read_text())


def test_each_round_trains_both_ways_on_the_changed_people(rounds_run):
    work, report = rounds_run
    people, rounds = report["people"], report["rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    gone = set()
    for r in rounds:
        gone |= set(r["removed"])
        assert len(r["added"]) == 2 and len(r["removed"]) == 2
        assert set(r["added"]) <= set(r["present"]) and not gone & set(r["present"])  # removed for good
        assert set(people["old_sample"]) <= set(r["present"])  # the forgetting sample never leaves
        assert not (set(people["val"]) | set(people["test"])) & set(r["present"])  # held out, never trained
        on_disk = {p.name for p in Path(r["data_root"]).iterdir()}
        assert not gone & on_disk and set(r["present"]) <= on_disk  # gone from the data, not only the split
        for side in ("adpt", "prim"):
            run = r[side]
            assert run["steps"] > 0 and run["train_flops"] > 0 and run["seconds"] > 0, run
            trained = RunPlan.load(run["run_dir"]).split.train
            assert sorted(trained) == r["present"]
            assert run["val_accuracy"] is not None and run["new_accuracy"] is not None and run["test_accuracy"] is not None
        assert 1 <= r["adpt"]["epochs"] <= 2  # the warm start's budget cap
        assert r["adpt_over_prim_flops"] == pytest.approx(r["adpt"]["train_flops"] / r["prim"]["train_flops"])
    first = report["N"]["train_flops"]
    for side in ("adpt", "prim"):
        cumulative = [first, *(r[f"cumulative_{side}_flops"] for r in rounds)]
        assert cumulative == sorted(set(cumulative)), cumulative  # strictly increasing
        assert cumulative[-1] == pytest.approx(first + sum(r[side]["train_flops"] for r in rounds))
    summary = report["summary"]
    assert isinstance(summary["forgetting_accumulates"], bool)
    assert summary["old_accuracy_gap_slope"] is not None and len(summary["adpt_over_prim_flops"]) == 2
    for suffix in (".md", ".png"):
        assert (work / "results" / f"warm_vs_full_rounds{suffix}").stat().st_size > 0


def test_one_mlflow_parent_holds_every_round(rounds_run):
    from mlflow.tracking import MlflowClient

    work, report = rounds_run
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(EXPERIMENT)
    parent = report["mlflow_parent_run_id"]
    children = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    tags = sorted((c.data.tags["round"], c.data.tags["strategy"]) for c in children)
    assert tags == [("0", "N"), ("1", "N_adpt"), ("1", "N_prim"), ("2", "N_adpt"), ("2", "N_prim")]
    by_id = {c.info.run_id: c for c in children}
    production = report["N"]["run_dir"]  # each round warm-starts from the previous round's N_adpt
    for r in report["rounds"]:
        assert by_id[r["adpt"]["mlflow_run_id"]].data.tags["init_from"].startswith(production + "/checkpoints/")
        assert not by_id[r["prim"]["mlflow_run_id"]].data.tags["init_from"]  # from scratch
        production = r["adpt"]["run_dir"]
    artifacts = {a.path for a in client.list_artifacts(parent)}
    assert {"warm_vs_full_rounds.json", "warm_vs_full_rounds.png", "warm_vs_full_rounds.md"} <= artifacts


def test_reuse_keeps_n_and_n_prim_and_the_warm_period_sets_the_grain(rounds_run, setup):
    """``--reuse`` takes N and every N_prim from the first report and trains only new warm starts, whose
    evaluation period (``--warm-steps-per-epoch``) is the grain of their cost."""
    work, first = rounds_run
    _, common = setup
    results = work / "reused"
    assert warm_vs_full.main([*common[:-1], str(results), "--rounds", "2", "--add", "2", "--remove", "2",
                              "--reuse", str(work / "results" / "warm_vs_full_rounds.json"),
                              "--warm-steps-per-epoch", "1", "--max-warm-epochs", "3", "--warm-oversample", "4"]) == 0
    report = json.loads((results / "warm_vs_full_rounds.json").read_text())
    assert report["N"] == first["N"] and report["warm_steps_per_epoch"] == 1 and report["warm_oversample"] == 4
    for old, new in zip(first["rounds"], report["rounds"]):
        assert new["prim"] == old["prim"] and new["target"] == old["target"]
        assert new["adpt"]["run_dir"] != old["adpt"]["run_dir"]
        assert new["adpt"]["steps"] == new["adpt"]["epochs"] <= 3  # one step an evaluation period
        plan = RunPlan.load(new["adpt"]["run_dir"])  # the added people are drawn 4 times as often
        added = set(shard_paths(json.loads(Path(plan.manifest).read_text()), new["added"]))
        assert len(added) == 2 and plan.train_weights == [4.0 if s in added else 1.0 for s in plan.shards.train]
    assert report["rounds"][1]["cumulative_prim_flops"] == pytest.approx(first["rounds"][1]["cumulative_prim_flops"])


def test_reuse_of_other_people_is_refused_in_one_line(rounds_run, setup, capsys):
    work, _ = rounds_run
    _, common = setup
    with pytest.raises(SystemExit) as exit_:
        warm_vs_full.main([*common, "--rounds", "2", "--add", "2", "--remove", "2", "--seed", "3",
                           "--reuse", str(work / "results" / "warm_vs_full_rounds.json")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "its people or changes differ from this run's" in err, err


@pytest.mark.parametrize("extra, message", [
    (["--add", "2", "--remove", "7"], "round 1: --remove 7 is more than the 6 people who may leave"),
    (["--add", "9"], "needs 18 future people"),
    (["--add", "1"], "--add must be >= 2"),
    (["--warm-steps-per-epoch", "-1"], "--warm-steps-per-epoch must be >= 0"),
    (["--warm-oversample", "0"], "--warm-oversample must be > 0"),
])
def test_impossible_rounds_are_one_line_errors(setup, capsys, extra, message):
    _, common = setup
    with pytest.raises(SystemExit) as exit_:
        warm_vs_full.main([*common, "--rounds", "2", *extra])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err


@pytest.mark.parametrize("flag", ["--warm-steps-per-epoch", "--warm-oversample"])
def test_warm_start_options_of_the_rounds_are_refused_without_them(setup, capsys, flag):
    _, common = setup
    with pytest.raises(SystemExit) as exit_:
        warm_vs_full.main([*common, flag, "4"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{flag} is for --rounds" in err, err


def test_without_rounds_the_single_change_is_unchanged(setup, local_ray):
    """The default (``--rounds 0``): N, N_prim and N_adpt once, as before the rounds existed."""
    work, common = setup
    results = work / "single"
    assert warm_vs_full.main([*common[:-1], str(results), "--new", "2"]) == 0
    report = json.loads((results / "warm_vs_full.json").read_text())
    assert [r["label"] for r in report["runs"]] == ["N", "N_prim", "N_adpt"]
    assert set(report["runs"][2]["history"][0]) == {"epoch", "compute/total_train_flops", "compute/total_steps",
                                                    "val_accuracy", "old_accuracy", "new_accuracy"}
    assert report["n_adpt_over_n_prim"] > 0 and not (results / "warm_vs_full_rounds.json").exists()
