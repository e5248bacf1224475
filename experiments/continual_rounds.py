"""Continual rounds (issue 11 §4): successive class changes, each answered by a warm start from the
production model (N_adpt), against full retraining from scratch (N_prim) on the same data.

    python -m experiments.warm_vs_full --config experiments/warm_vs_full.yaml --rounds 10 --add 5 --remove 5

Identities are split once: held-out validation and test people, a base set (N trains on it in round 0)
and a pool of future people. Each round adds ``--add`` people from the pool and removes ``--remove``
present people, for good; the fixed "old" sample of base people never leaves, so its accuracy is
comparable from round to round. A round's data is a folder of symlinks to only its people, so a removed
person is gone from the data, not just from the split. N_prim(r) trains from scratch on it; N_adpt(r)
warm-starts from the production model (N_adpt(r-1), or N) until it reaches N_prim(r)'s accuracy on the
validation and added people, or ``--max-warm-epochs`` run out (recorded as not reached). The rule is
checked once every ``--warm-steps-per-epoch`` steps, so that period is the grain of a warm start's cost;
``--warm-oversample F`` draws the round's added people F times as often into its batches.
``--reuse`` takes N and every N_prim from an earlier report of the same people and changes, so a new
warm-start policy is measured against the same full retrainings without training them again.
The report (plot, table) is experiments/continual_report.py.
"""
from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from experiments.warm_vs_full import TOLERANCE, run_child
from trainer.warm_start import stop_at, warm_start_config
from trainer import checkpoints, config as config_lib, tracking
from trainer.prepare import DatasetError, list_identity_folder
from trainer.splits import Split, split_identities

COMPUTE_TARGET = 0.05  # the goal: a warm start costs at most 5% of a full retraining
STEM = "warm_vs_full_rounds"


@dataclass
class People:
    """The split made once for every round."""
    val: list[str]
    test: list[str]
    base: list[str]
    future: list[str]  # additions are drawn from here, in order
    old_sample: list[str]  # base people who never leave: their accuracy is what forgetting would lower


@dataclass
class Change:
    round: int
    added: list[str]
    removed: list[str]
    present: list[str]  # who trains this round


@dataclass
class Figures:
    """One child run's compute and final accuracies (new_accuracy is None for N: nobody was added yet)."""
    label: str
    run_dir: str
    mlflow_run_id: str
    epochs: int
    steps: int
    images: int
    train_flops: float
    seconds: float
    val_accuracy: float
    old_accuracy: float
    new_accuracy: float | None
    test_accuracy: float | None

    @classmethod
    def of(cls, run: dict) -> "Figures":
        c, f = run["compute"], run["final"]
        return cls(run["label"], run["run_dir"], run["mlflow_run_id"], f["epoch"] + 1, c["steps"], c["images"],
                   c["train_flops"], c["wall_seconds"], f["val_accuracy"], f["old_accuracy"], f.get("new_accuracy"),
                   run["test"].get("accuracy"))


@dataclass
class Round(Change):
    data_root: str  # the folder of symlinks the round trained on
    target: dict[str, float]  # N_prim's accuracies that N_adpt had to reach (within TOLERANCE)
    reached_target: bool
    prim: Figures
    adpt: Figures
    adpt_over_prim_flops: float
    cumulative_adpt_flops: float  # N + N_adpt(1..r): the warm-start policy's compute so far
    cumulative_prim_flops: float  # N + N_prim(1..r): retraining from scratch at every change


def split_people(identities: dict, cfg, rounds: int, add: int, seed: int) -> People:
    held = split_identities({n: len(f) for n, f in identities.items()}, cfg.data.val_fraction,
                            cfg.data.test_fraction, cfg.data.split_seed, cfg.data.min_images_per_identity)
    pool = [held.train[i] for i in np.random.default_rng(seed).permutation(len(held.train))]
    if len(pool) - rounds * add < 4:  # two old people to measure, two who may leave
        raise DatasetError(f"--rounds {rounds} × --add {add} needs {rounds * add} future people, but the "
                           f"{len(pool)} training people must also leave at least 4 base people")
    base = sorted(pool[rounds * add:])
    old = sorted(base[i] for i in np.random.default_rng(seed + 1).permutation(len(base))[:min(40, len(base) // 2)])
    return People(held.val, held.test, base, pool[:rounds * add], old)


def plan_changes(people: People, rounds: int, add: int, remove: int, seed: int) -> list[Change]:
    rng, present, changes = np.random.default_rng(seed + 2), set(people.base), []
    for r in range(1, rounds + 1):
        removable = sorted(present - set(people.old_sample))
        if remove > len(removable):
            raise DatasetError(f"round {r}: --remove {remove} is more than the {len(removable)} people who may leave")
        removed = sorted(rng.choice(removable, remove, replace=False).tolist()) if remove else []
        added = sorted(people.future[(r - 1) * add:r * add])
        present = (present - set(removed)) | set(added)
        changes.append(Change(r, added, removed, sorted(present)))
    return changes


def link_round(identities: dict, folder: Path, names: list[str]) -> Path:
    """``folder`` holds exactly ``names`` (symlinked photos): a stale copy could keep a removed person."""
    shutil.rmtree(folder, ignore_errors=True)  # symlinks only: the photos themselves are untouched
    for name in names:
        (folder / name).mkdir(parents=True)
        for photo in identities[name]:
            (folder / name / photo.name).symlink_to(photo.resolve())
    return folder


def warm_budget(cfg, args) -> tuple[int, int | None]:
    """A warm start's (epoch cap, steps per epoch). ``--warm-steps-per-epoch`` is its evaluation period:
    the stopping rule is checked once a period, so the period is the grain of its cost. The default cap
    is a full retraining's steps (``train.epochs`` × ``train.steps_per_epoch``) in periods."""
    period = args.warm_steps_per_epoch or cfg.train.steps_per_epoch or None
    if args.max_warm_epochs:
        return args.max_warm_epochs, period
    full = cfg.train.epochs * cfg.train.steps_per_epoch
    return (math.ceil(full / period) if full and period else cfg.train.epochs), period


@dataclass
class Reused:
    """N and every round's N_prim from an earlier results file whose people and changes are this run's."""
    source: str
    n: Figures
    prims: list[tuple[Figures, dict[str, float]]]  # per round: N_prim and the target it set


def reuse(path: Path, people: People, changes: list[Change], target_mode: str) -> Reused:
    """Read ``path`` (a ``warm_vs_full_rounds.json``); refuse it when its split, changes or target mode
    differ from this run's, or its N has no checkpoint left to warm-start from."""
    try:
        report = json.loads(path.read_text())
        old_rounds, n = report["rounds"], Figures(**report["N"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"--reuse {path}: not a rounds results file ({exc})") from None
    same_changes = [(r["added"], r["removed"]) for r in old_rounds[:len(changes)]] == \
        [(c.added, c.removed) for c in changes]
    if report.get("people") != asdict(people) or not same_changes:
        raise DatasetError(f"--reuse {path}: its people or changes differ from this run's "
                           "(another config, --seed, --rounds, --add or --remove)")
    if report.get("target_mode", "final") != target_mode:
        raise DatasetError(f"--reuse {path}: its N_prim targets are --target {report.get('target_mode', 'final')}")
    if checkpoints.latest_checkpoint(n.run_dir) is None:
        raise DatasetError(f"--reuse {path}: its N run {n.run_dir} has no checkpoint left to warm-start from")
    return Reused(str(path), n, [(Figures(**r["prim"]), r["target"]) for r in old_rounds[:len(changes)]])


def full_retraining(child, args, change: Change, root: Path, split: Split, evals: dict, parent_id: str):
    """N_prim(r) from scratch on the round's people: its figures and the accuracies N_adpt must reach."""
    prim = run_child(child, f"r{change.round:02d}-N_prim", root, split, evals, parent_id,
                     tags={"round": change.round, "strategy": "N_prim"})
    final = max(prim["history"], key=lambda h: h["val_accuracy"]) if args.target == "best" else prim["final"]
    return Figures.of(prim), {k: final[k] for k in ("val_accuracy", "new_accuracy")}


def run_rounds(cfg, args, identities: dict, people: People, changes: list[Change], parent_id: str,
               budget: tuple[int, int | None], reused: Reused | None = None):
    work, held = args.work.resolve() / "rounds", people.val + people.test
    child = config_lib.from_dict(cfg.to_dict())
    child.data.max_identities = 0  # each folder holds exactly its round's people
    if reused:
        n = reused.n
    else:
        start = link_round(identities, work / "round-00", people.base + held)
        n = Figures.of(run_child(child, "r00-N", start, Split(people.base, people.val, people.test),
                                 {"old": people.old_sample}, parent_id, tags={"round": 0, "strategy": "N"}))
    production, rounds = n.run_dir, []
    total_adpt = total_prim = n.train_flops
    epochs, period = budget  # warm_budget's
    for change in changes:
        root = link_round(identities, work / f"round-{change.round:02d}", change.present + held)
        split, evals = Split(change.present, people.val, people.test), {"old": people.old_sample, "new": change.added}
        prim_f, target = (reused.prims[change.round - 1] if reused
                          else full_retraining(child, args, change, root, split, evals, parent_id))
        # The cap: a miss is recorded, not chased.
        warm = warm_start_config(child, epochs=epochs, steps_per_epoch=period, stop_when=stop_at(target, TOLERANCE))
        adpt = run_child(warm, f"r{change.round:02d}-N_adpt", root, split, evals, parent_id,
                         str(checkpoints.latest_checkpoint(production)), {"round": change.round, "strategy": "N_adpt"},
                         oversample=(change.added, args.warm_oversample))
        production, adpt_f = adpt["run_dir"], Figures.of(adpt)
        total_adpt, total_prim = total_adpt + adpt_f.train_flops, total_prim + prim_f.train_flops
        reached = all(adpt["final"][k] >= v - TOLERANCE for k, v in target.items())
        rounds.append(Round(**asdict(change), data_root=str(root), target=target, reached_target=reached, prim=prim_f,
                            adpt=adpt_f, adpt_over_prim_flops=adpt_f.train_flops / prim_f.train_flops,
                            cumulative_adpt_flops=total_adpt, cumulative_prim_flops=total_prim))
    return n, rounds


def trends(rounds: list[Round]) -> dict:
    """Does forgetting accumulate? The least-squares slope over rounds of N_adpt's accuracy gap to N_prim."""
    x = [r.round for r in rounds]

    def slope(values):
        return float(np.polyfit(x, values, 1)[0]) if len(x) > 1 else None

    gaps = {k: [getattr(r.adpt, k) - getattr(r.prim, k) for r in rounds] for k in ("old_accuracy", "val_accuracy")}
    slopes = {f"{k}_gap_slope": slope(v) for k, v in gaps.items()}
    ratios = [r.adpt_over_prim_flops for r in rounds]
    return {**{f"{k}_gap": v for k, v in gaps.items()}, **slopes,
            "adpt_old_accuracy_slope": slope([r.adpt.old_accuracy for r in rounds]),
            # the rule: the gap widens by more than TOLERANCE (half a point) per round
            "forgetting_accumulates": any(s is not None and s < -TOLERANCE for s in slopes.values()),
            "adpt_over_prim_flops": ratios, "max_adpt_over_prim_flops": max(ratios),
            "rounds_reached_target": sum(r.reached_target for r in rounds),
            "meets_compute_target": all(r.reached_target and q <= COMPUTE_TARGET for r, q in zip(rounds, ratios))}


def main(args, cfg, parser, cmd: str) -> int:
    """``warm_vs_full --rounds``: ``args`` are its checked arguments; a refusal is ``parser.error``'s one line."""
    import mlflow

    from experiments.continual_report import plot, table  # it imports this module's dataclasses

    try:
        identities, _ = list_identity_folder(Path(config_lib.resolve_path(cfg.data.source)))
        if cfg.data.max_identities:  # the people prepare() would keep
            identities = dict(list(identities.items())[:cfg.data.max_identities])
        people = split_people(identities, cfg, args.rounds, args.add, args.seed)
        changes = plan_changes(people, args.rounds, args.add, args.remove, args.seed)
        reused = reuse(args.reuse, people, changes, args.target) if args.reuse else None
    except (DatasetError, OSError) as exc:
        parser.error(str(exc))
    budget, uri = warm_budget(cfg, args), tracking.resolve_tracking_uri(cfg.mlflow.tracking_uri)
    parent_id = tracking.parent_run(uri, cfg.mlflow.experiment, STEM, {
        "rounds": args.rounds, "add": args.add, "remove": args.remove, "base_identities": len(people.base),
        "max_warm_epochs": budget[0], "warm_steps_per_epoch": budget[1] or 0,
        "warm_oversample": args.warm_oversample,
        "reused": reused.source if reused else "", **cfg.flat()})
    n, rounds = run_rounds(cfg, args, identities, people, changes, parent_id, budget, reused)
    summary, out = trends(rounds), args.results / STEM
    out.parent.mkdir(parents=True, exist_ok=True)
    plot(n, rounds, out.with_suffix(".png"))
    out.with_suffix(".md").write_text(table(n, rounds, summary))
    out.with_suffix(".json").write_text(json.dumps(
        {"summary": summary, "N": asdict(n), "rounds": [asdict(r) for r in rounds], "people": asdict(people),
         "mlflow_parent_run_id": parent_id, "target_mode": args.target,
         "warm_steps_per_epoch": budget[1], "warm_oversample": args.warm_oversample,
         "reused": reused.source if reused else None,
         "command": cmd}, indent=1))
    tracking.start(uri, cfg.mlflow.experiment, "", run_id=parent_id)
    for r in rounds:  # one step per round: MLflow's charts of the parent show the trends
        mlflow.log_metrics({k: getattr(r, k) for k in ("adpt_over_prim_flops", "cumulative_adpt_flops",
                                                        "cumulative_prim_flops")}, step=r.round)
    for suffix in (".png", ".json", ".md"):
        mlflow.log_artifact(str(out.with_suffix(suffix)))
    mlflow.end_run()
    print(table(n, rounds, summary))
    return 0
