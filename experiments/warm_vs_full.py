"""Full retraining (N, N_prim) versus warm-start adaptive retraining (N_adpt) when the people change.

    python -m experiments.warm_vs_full --config experiments/warm_vs_full.yaml
    python -m experiments.warm_vs_full --config experiments/smoke.yaml --new 4      # a quick look
    python -m experiments.warm_vs_full --config experiments/warm_vs_full.yaml --rounds 10   # continual rounds

The seed documents' experiment, on real faces:
  (1) train from scratch on a base set of identities                       -> {w}_orig, N
  (2) change the classes: add ``--new`` identities and replace one base identity's photos with
      other photos of that person; train from scratch on the changed set   -> {w}_prim, N_prim
  (3) warm-start from {w}_orig on the changed set until it reaches {w}_prim's accuracy on the
      validation identities and on the changed identities (each within 0.5 points) -> N_adpt

Identities are split once: held-out validation and test identities (never trained), base, and
new. The three datasets are folders of symlinks, so faces are aligned once. Every epoch evaluates
"val" (held-out people), "old" (a fixed sample of base people, to see forgetting) and "new" (the
added people and the replaced identity). One MLflow parent run holds the three child runs; the
table (steps, images, FLOPs, seconds, accuracies) and a plot of accuracy against training FLOPs
are logged to it and written to ``experiments/results/``.

``--rounds R`` runs R successive changes instead (people added and removed each round, each answered
by a warm start from the previous round's model): see experiments/continual_rounds.py.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from experiments import results_file
import trainer  # noqa: F401  (tf-keras before TensorFlow)
from trainer import checkpoints, cliargs, config as config_lib, train, tracking
from trainer.plan import open_tracking
from trainer.prepare import list_identity_folder
from trainer.splits import Split, shard_paths, split_identities
from trainer.warm_start import stop_at, warm_start_config

RESULTS = Path(__file__).resolve().parent / "results"
TOLERANCE = 0.005  # "equal accuracy": within half a point


def build_roots(root: Path, work: Path, cfg, new_count: int, seed: int):
    """Symlinked base/changed identity folders and the fixed split shared by the three runs."""
    identities, _ = list_identity_folder(root)
    held = split_identities({n: len(f) for n, f in identities.items()}, cfg.data.val_fraction,
                            cfg.data.test_fraction, cfg.data.split_seed, cfg.data.min_images_per_identity)
    pool = [held.train[i] for i in np.random.default_rng(seed).permutation(len(held.train))]
    new, base = sorted(pool[:new_count]), sorted(pool[new_count:])
    replaced = max(base, key=lambda n: len(identities[n]))  # enough photos to split in two
    photos = identities[replaced]
    before, after = photos[: len(photos) // 2], photos[len(photos) // 2:]
    # Both folders hold every person (the split decides who trains), so N is also measured on the
    # people it never saw; they differ in the replaced identity's photos.
    for name in ("base", "changed"):
        out = work / name
        out.mkdir(parents=True, exist_ok=True)
        for person in base + new + held.val + held.test:
            folder = out / person
            folder.mkdir(exist_ok=True)
            files = (before if name == "base" else after) if person == replaced else identities[person]
            for photo in files:
                link = folder / photo.name
                if not link.exists():
                    link.symlink_to(photo.resolve())
    old_sample = [base[i] for i in np.random.default_rng(seed + 1).permutation(len(base))[:40] if base[i] != replaced]
    return {"base": base, "new": new, "replaced": replaced, "val": held.val, "test": held.test, "old_sample": old_sample}


def run_child(cfg, label: str, source: Path, split: Split, eval_people: dict[str, list[str]], parent_run_id: str,
              init_from: str = "", tags: dict | None = None, oversample: tuple[list[str], float] = ([], 1.0)) -> dict:
    """Train one child run of ``parent_run_id`` on ``split`` of the identity folder ``source``. Every
    epoch evaluates validation and each set of ``eval_people`` (metrics ``<name>_accuracy``).
    ``oversample`` (people, factor): those people are drawn into P×K batches ``factor`` times as often."""
    cfg = config_lib.from_dict(cfg.to_dict())
    cfg.data.source, cfg.train.run_name = str(source), f"warm_vs_full-{label}-{time.strftime('%Y%m%d-%H%M%S')}"
    plan = train.plan_run(cfg, None, split=split)
    manifest = json.loads(Path(plan.manifest).read_text())
    people, factor = oversample
    if people and factor != 1.0:
        chosen = set(shard_paths(manifest, sorted(people)))
        plan.train_weights = [w * (factor if shard in chosen else 1.0)
                              for w, shard in zip(plan.train_weights or [1.0] * len(plan.shards.train), plan.shards.train)]
    plan.eval_sets = {"val": plan.shards.val,
                      **{name: shard_paths(manifest, sorted(names)) for name, names in eval_people.items()}}
    plan.init_from, plan.parent_run_id = init_from, parent_run_id  # saved by open_tracking
    if tags:  # set when the run is created, so a round's runs can be found while they train
        from mlflow.tracking import MlflowClient

        open_tracking(plan, cfg)
        for key, value in tags.items():
            MlflowClient(plan.tracking_uri).set_tag(plan.mlflow_run_id, key, str(value))
    results = train.run_tracked(plan, cfg)
    history = [json.loads((d / "state.json").read_text())["metrics"]
               for d in sorted((Path(plan.run_dir) / "checkpoints").glob("epoch-*"))]
    keys = ("epoch", "compute/total_train_flops", "compute/total_steps", *(f"{n}_accuracy" for n in ("val", *eval_people)))
    return {"label": label, "run_dir": plan.run_dir, "mlflow_run_id": plan.mlflow_run_id,
            "compute": results["compute"], "final": results["last_epoch"], "test": results.get("test", {}),
            "history": [{k: h[k] for k in keys} for h in history]}


def run_one(cfg, label: str, source: Path, people: dict, parent_run_id: str, init_from: str = "") -> dict:
    train_people = people["base"] if label == "N" else people["base"] + people["new"]
    split = Split(sorted(train_people), people["val"], people["test"])
    evals = {"old": people["old_sample"], "new": people["new"] + [people["replaced"]]}
    return run_child(cfg, label, source, split, evals, parent_run_id, init_from)


def plot(runs: list[dict], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4))
    FigureCanvasAgg(figure)
    for axis, metric, title in zip(figure.subplots(1, 3), ("val_accuracy", "new_accuracy", "old_accuracy"),
                                   ("held-out identities", "new + replaced identities", "old identities (sample)")):
        for run in runs:
            flops = [h["compute/total_train_flops"] / 1e12 for h in run["history"]]
            axis.plot(flops, [h[metric] for h in run["history"]], marker=".", label=run["label"])
        axis.set(title=title, xlabel="training TFLOPs", ylabel="10-fold pair accuracy")
        axis.grid(alpha=0.3)
    figure.axes[0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def table(runs: list[dict]) -> str:
    prim = next(r for r in runs if r["label"] == "N_prim")["compute"]
    rows = ["| run | steps | images | train FLOPs | seconds | val acc | new acc | old acc | test acc | compute vs N_prim |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in runs:
        c, f = r["compute"], r["final"]
        rows.append(f"| {r['label']} | {c['steps']} | {c['images']} | {c['train_flops']:.3g} | {c['wall_seconds']:.0f} | "
                    f"{f['val_accuracy']:.3f} | {f['new_accuracy']:.3f} | {f['old_accuracy']:.3f} | "
                    f"{r['test'].get('accuracy', float('nan')):.3f} | {c['train_flops'] / prim['train_flops']:.3f} |")
    return "\n".join(rows)


def command(argv: list[str] | None) -> str:
    return results_file.command("warm_vs_full", argv)


def main(argv: list[str] | None = None) -> int:
    parser = cliargs.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--new", type=int, default=30, help="identities added in the change")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path(".facenet/warm_vs_full"))
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--target", choices=("final", "best"), default="final",
                        help="warm start until N_prim's final accuracies, or its best epoch's (stricter)")
    parser.add_argument("--reuse", type=Path, help="a previous results JSON: reuse its N and N_prim runs "
                        "(with --rounds: a warm_vs_full_rounds.json of the same people and changes)")
    parser.add_argument("--rounds", type=int, default=0,
                        help="successive class changes (experiments/continual_rounds.py); 0 = the single change")
    parser.add_argument("--add", type=int, default=5, help="with --rounds: people added each round")
    parser.add_argument("--remove", type=int, default=5, help="with --rounds: people removed each round")
    parser.add_argument("--max-warm-epochs", type=int, default=0,
                        help="with --rounds: a warm start's epoch budget (0 = a full retraining's steps)")
    parser.add_argument("--warm-steps-per-epoch", type=int, default=0,
                        help="with --rounds: a warm start's evaluation period in steps, the grain of its cost "
                             "(0 = train.steps_per_epoch)")
    parser.add_argument("--warm-oversample", type=float, default=1.0, metavar="F",
                        help="with --rounds: a warm start draws the round's added people F times as often (default 1)")
    args = parser.parse_args(argv)
    for wrong, message in ((args.rounds < 0, "--rounds must be >= 0"),
                           (args.rounds and args.add < 2, "--add must be >= 2 (the added people are measured in pairs)"),
                           (args.remove < 0, "--remove must be >= 0"),
                           (args.max_warm_epochs < 0, "--max-warm-epochs must be >= 0"),
                           (args.warm_steps_per_epoch < 0, "--warm-steps-per-epoch must be >= 0"),
                           (args.warm_steps_per_epoch and not args.rounds, "--warm-steps-per-epoch is for --rounds"),
                           (args.warm_oversample <= 0, "--warm-oversample must be > 0"),
                           (args.warm_oversample != 1.0 and not args.rounds, "--warm-oversample is for --rounds")):
        if wrong:
            parser.error(message)
    import mlflow

    try:
        cfg = config_lib.load(args.config, args.set)
    except config_lib.ConfigError as exc:
        parser.error(str(exc))
    if args.rounds:
        from experiments import continual_rounds

        return continual_rounds.main(args, cfg, parser, command(argv))
    root = Path(config_lib.resolve_path(cfg.data.source))
    people = build_roots(root, args.work.resolve(), cfg, args.new, args.seed)
    parent_id = tracking.parent_run(tracking.resolve_tracking_uri(cfg.mlflow.tracking_uri), cfg.mlflow.experiment,
                                    "warm_vs_full", {"new_identities": args.new, "base_identities": len(people["base"]),
                                                     "replaced_identity": people["replaced"], **cfg.flat()})

    if args.reuse:
        runs = [r for r in json.loads(args.reuse.read_text())["runs"] if r["label"] in ("N", "N_prim")]
    else:
        runs = [run_one(cfg, "N", args.work.resolve() / "base", people, parent_id)]
        runs.append(run_one(cfg, "N_prim", args.work.resolve() / "changed", people, parent_id))
    prim = runs[-1]["final"]
    if args.target == "best":  # the epoch of N_prim with the best validation accuracy
        prim = max(runs[-1]["history"], key=lambda h: h["val_accuracy"])
    warm = warm_start_config(cfg, stop_when=stop_at({k: prim[k] for k in ("val_accuracy", "new_accuracy")}, TOLERANCE))
    orig = str(checkpoints.latest_checkpoint(runs[0]["run_dir"]))
    runs.append(run_one(warm, "N_adpt", args.work.resolve() / "changed", people, parent_id, init_from=orig))

    args.results.mkdir(parents=True, exist_ok=True)
    stem = "warm_vs_full" if args.target == "final" else "warm_vs_full_best"
    plot(runs, args.results / f"{stem}.png")
    adpt, prim_c = runs[2]["compute"], runs[1]["compute"]
    summary = {"runs": runs, "people": {k: (v if k == "replaced" else len(v)) for k, v in people.items()},
               "n_adpt_over_n_prim": adpt["train_flops"] / prim_c["train_flops"],
               "reached_target": all(runs[2]["final"][k] >= prim[k] - TOLERANCE for k in ("val_accuracy", "new_accuracy")),
               "old_not_worse": runs[2]["final"]["old_accuracy"] >= runs[0]["final"]["old_accuracy"] - TOLERANCE,
               "target": {"mode": args.target, "val_accuracy": prim["val_accuracy"], "new_accuracy": prim["new_accuracy"]},
               "command": command(argv)}
    (args.results / f"{stem}.json").write_text(json.dumps(summary, indent=1))
    (args.results / f"{stem}.md").write_text(table(runs) + "\n")
    tracking.start(tracking.resolve_tracking_uri(cfg.mlflow.tracking_uri), cfg.mlflow.experiment, "", run_id=parent_id)
    mlflow.log_metrics({"N_adpt_over_N_prim": summary["n_adpt_over_n_prim"],
                        **{f"{r['label']}_train_flops": r["compute"]["train_flops"] for r in runs}})
    for name in (f"{stem}.png", f"{stem}.json", f"{stem}.md"):
        mlflow.log_artifact(str(args.results / name))
    mlflow.end_run()
    print(table(runs))
    print(f"N_adpt / N_prim = {summary['n_adpt_over_n_prim']:.3f}; reached target: {summary['reached_target']}; "
          f"old identities not worse: {summary['old_not_worse']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
