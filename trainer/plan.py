"""Planning a training run: prepare every data source, split identities, write the run directory.

``plan_run`` returns the ``RunPlan`` (trainer/run_plan.py, saved as ``runs/<run>/plan.json``)
that ``trainer.worker`` trains from; ``resume_plan`` reopens one with overrides; ``open_tracking``
creates its MLflow run.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from trainer import config as config_lib
from trainer.config import Config, ConfigError, resolve_path
from trainer.prepare import DatasetError
from trainer.run_plan import PLAN_FILE, RunPlan, Shards

ALIGN_MODES = {"detect": True, "prealigned": "prealigned", "resized": False}  # SourceConfig.align -> prepare


@dataclass
class _TrainingSet:
    """The training shards gathered from every source, with what the pipeline needs about each."""

    shards: list[str] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)  # how often each identity is drawn
    unlabeled: list[int] = field(default_factory=list)  # indices of shards without trusted labels
    photos: list[int] = field(default_factory=list)  # aligned photos in each shard

    @property
    def images(self) -> int:
        return sum(self.photos)

    def add(self, shards: list[str], photos: list[int], weight: float = 1.0, labeled: bool = True) -> None:
        if not labeled:
            self.unlabeled += range(len(self.shards), len(self.shards) + len(shards))
        self.shards += shards
        self.weights += [weight] * len(shards)
        self.photos += photos


def plan_run(cfg: Config, config_path: str | None, progress: bool = True, split=None,
             run_dir: Path | None = None) -> RunPlan:
    """Prepare data, split identities and create the run directory; return the saved plan.

    ``split`` (a ``splits.Split``) fixes which identities train, validate and test, for
    experiments that compare runs on changing data; by default the seeded split of the config.
    ``run_dir``: the directory ``new_run_dir`` chose beforehand (``trainer.train`` logs into it
    while data is prepared); by default it is chosen here.
    """
    size = _check_inputs(cfg)
    data = _gather(cfg, size, split, progress)
    split, training, held, counts, manifest = data.split, data.training, data.held, data.counts, data.manifests[0]
    if cfg.train.teacher_views:
        counts["teacher_views"] = _prepare_views(cfg, training, progress)
    if len(training.shards) < cfg.train.identities_per_batch:
        raise DatasetError(f"the training split has {len(training.shards)} usable identities, fewer than "
                           f"train.identities_per_batch={cfg.train.identities_per_batch}")
    run_dir = new_run_dir(cfg, config_path, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    plan = RunPlan(
        config=cfg.to_dict(), run_dir=str(run_dir), run_name=run_dir.name, image_size=size,
        face_template=cfg.model.face_template,
        manifest=manifest["path"], data_fingerprint=manifest["fingerprint"], data_counts=manifest["counts"],
        source_counts=counts, split=split, shards=Shards(training.shards, held["val"], held["test"]),
        train_weights=training.weights, train_unlabeled=training.unlabeled, train_photos=training.photos,
        train_images=training.images,
        # Sets evaluated after every epoch (metrics "<name>_accuracy", ...); callers may add more.
        eval_sets={"val": held["val"]} if split.val else {},
    )
    cfg.save(run_dir / "config.yaml")
    plan.save()
    return plan


@dataclass
class _Gathered:
    """Every source prepared and its people split (``_gather``)."""

    manifests: list[dict]  # data.source's first, then each data.sources entry's, then data.extra_source's
    split: object  # splits.Split
    training: _TrainingSet
    held: dict[str, list[str]]  # "val" / "test" -> shards
    counts: dict[str, dict]  # per source ("" = data.source), for the plan's record


def _gather(cfg: Config, size: int, split, progress: bool) -> _Gathered:
    """Prepare every source and split its people (by ``split`` when given, else the config's seeded split)."""
    from trainer.splits import shard_paths, split_identities

    manifest = _prepare_main(cfg, size, progress)
    aligned = {name: entry["aligned"] for name, entry in manifest["identities"].items()}
    if split is None:
        split = split_identities(aligned, cfg.data.val_fraction, cfg.data.test_fraction, cfg.data.split_seed,
                                 cfg.data.min_images_per_identity)
    else:  # a given split (a warm start's, N_prim's) names data.source's people; each source adds its own again
        split = _without_sources(split, cfg)
    data = _Gathered([manifest], split, _TrainingSet(), {"val": shard_paths(manifest, split.val),
                                                         "test": shard_paths(manifest, split.test)},
                     {"": manifest["counts"]})
    data.training.add(shard_paths(manifest, split.train), [aligned[n] for n in split.train])
    for source in cfg.data.sources:
        data.manifests.append(_add_source(cfg, source, size, split, data.training, data.held, progress))
        data.counts[config_lib.source_name(source)] = data.manifests[-1]["counts"]
    if cfg.data.extra_source:
        extra = _prepare_extra(cfg, size, progress)
        names = sorted(n for n, e in extra["identities"].items() if e["aligned"] >= 1)
        data.training.add(shard_paths(extra, names), [extra["identities"][n]["aligned"] for n in names])
        data.manifests.append(extra)
    return data


def _prepare_views(cfg: Config, training: _TrainingSet, progress: bool) -> dict:
    """The training photos' views, each taught by the teacher on the same view (train.teacher_views)."""
    from trainer.teacher_views import prepare_views

    return prepare_views(training.shards, cfg.train.teacher, cfg.train.teacher_views, cfg.train.seed,
                         cfg.ray.address, progress)


def _without_sources(split, cfg: Config):
    """``split`` without the ``<source>/<identity>`` names ``data.sources`` put there."""
    from trainer.splits import Split

    prefixes = tuple(f"{config_lib.source_name(s)}/" for s in cfg.data.sources)
    keep = (lambda names: [n for n in names if not n.startswith(prefixes)]) if prefixes else list
    return Split(keep(split.train), keep(split.val), keep(split.test), list(split.excluded_too_few_images), split.seed)


def _check_inputs(cfg: Config) -> int:
    """Resolve every path and refuse what cannot work, before the first (long) alignment starts;
    returns the crop size: ``model.input_size``, or the model's own when that is 0."""
    if not cfg.data.source:
        raise ConfigError("no dataset given: set data.source to an identity-folder root or tfds:<name>")
    cfg.data.source, cfg.data.cache_dir = resolve_path(cfg.data.source), resolve_path(cfg.data.cache_dir)
    cfg.train.out_dir = resolve_path(cfg.train.out_dir)
    if cfg.data.extra_source:
        cfg.data.extra_source = resolve_path(cfg.data.extra_source)
    for source in cfg.data.sources:
        source.path = resolve_path(source.path)
        if not source.path.startswith("tfds:") and not Path(source.path).is_dir():
            raise DatasetError(f"data.sources entry {source.path} not found or not a directory "
                               f"(expected a folder of <identity>/<photo>.jpg)")
    for bench in cfg.eval.benchmarks:  # evaluated when the run ends (trainer.evaluation.benchmark)
        bench.pairs, bench.images = resolve_path(bench.pairs), resolve_path(bench.images)
        if not Path(bench.pairs).is_file() or not Path(bench.images).is_dir():
            raise DatasetError(f"eval.benchmarks: {bench.pairs} (pairs file) or {bench.images} (photo folder) not found")
    if cfg.train.teacher:
        from trainer.teacher import check_teacher

        check_teacher(cfg.train.teacher)  # a missing [teacher] extra is one line, before any alignment
    from trainer.models import NATIVE_INPUT_SIZE

    return cfg.model.input_size or NATIVE_INPUT_SIZE[cfg.model.name]


def _add_source(cfg: Config, source, size: int, split, training: _TrainingSet, held: dict, progress: bool) -> dict:
    """Prepare one ``data.sources`` entry and add its identities, namespaced ``<name>/<identity>``,
    to the training set (and, with ``split: true``, to validation and test); returns its manifest."""
    from trainer.splits import Split, shard_paths, split_identities

    name = config_lib.source_name(source)
    extra = _prepare_source(cfg, source, size, progress)
    least = cfg.data.min_images_per_identity if source.labeled else 1  # unlabeled photos need no pair
    usable = {n: e["aligned"] for n, e in extra["identities"].items() if e["aligned"] >= least}
    own = split_identities(usable, cfg.data.val_fraction, cfg.data.test_fraction, cfg.data.split_seed, 2) \
        if source.split and source.labeled else Split(train=sorted(usable))
    for part in ("train", "val", "test"):
        getattr(split, part).extend(f"{name}/{n}" for n in getattr(own, part))
    training.add(shard_paths(extra, own.train), [usable[n] for n in own.train], source.weight, source.labeled)
    held["val"] += shard_paths(extra, own.val)
    held["test"] += shard_paths(extra, own.test)
    return extra


def _prepare_main(cfg: Config, size: int, progress: bool) -> dict:
    from trainer.prepare import prepare

    return prepare(cfg.data.source, cfg.data.cache_dir, size, cfg.data.align, cfg.data.max_identities,
                   cfg.data.prepare_workers, cfg.ray.address, progress, teacher=cfg.train.teacher,
                   template=cfg.model.face_template)


def _prepare_source(cfg: Config, source, size: int, progress: bool) -> dict:
    from trainer.prepare import prepare

    return prepare(source.path, cfg.data.cache_dir, size, ALIGN_MODES[source.align], 0, cfg.data.prepare_workers,
                   cfg.ray.address, progress, teacher=cfg.train.teacher, max_per_identity=source.max_per_identity,
                   template=cfg.model.face_template)


def _prepare_extra(cfg: Config, size: int, progress: bool) -> dict:
    """``data.extra_source``: enrolled people's crops, already aligned."""
    from trainer.prepare import prepare

    return prepare(cfg.data.extra_source, cfg.data.cache_dir, size, False, 0, cfg.data.prepare_workers,
                   cfg.ray.address, progress, teacher=cfg.train.teacher, template=cfg.model.face_template)


def prepare_all(cfg: Config, progress: bool = True) -> list[dict]:
    """Prepare what a run of ``cfg`` reads (``data.source``, every ``data.sources`` entry and
    ``data.extra_source``, with the teacher's embeddings) without planning a run; the manifests."""
    size = _check_inputs(cfg)
    data = _gather(cfg, size, None, progress)  # the split too: views are of the training people only
    if cfg.train.teacher_views:
        _prepare_views(cfg, data.training, progress)
    return data.manifests


def new_run_dir(cfg: Config, config_path: str | None, run_dir: Path | None = None) -> Path:
    """Where a new run goes (``train.out_dir``/``train.run_name``, or the config's name and the time;
    relative to $FACENET_WORKDIR like every path); refused if a run was already planned there. Not
    created here."""
    if run_dir is None:
        stem = Path(config_path).stem if config_path else "run"
        name = cfg.train.run_name or f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        run_dir = Path(resolve_path(cfg.train.out_dir)) / name
    run_dir = Path(run_dir).resolve()
    if (run_dir / PLAN_FILE).exists():
        raise ConfigError(f"run directory {run_dir} already exists: choose another train.run_name, "
                          f"or continue it with --resume {run_dir}")
    return run_dir


def resume_plan(run_dir: str, overrides: list[str]) -> tuple[RunPlan, Config]:
    """The plan of an existing run with ``section.key=value`` overrides applied (``--resume``)."""
    try:
        plan = RunPlan.load(run_dir)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None  # the command line's one-line error, as for a bad config
    cfg = config_lib.from_dict(config_lib.apply_overrides(plan.config, overrides))
    plan.config = cfg.to_dict()
    plan.save(run_dir)  # where it was found, should the directory have moved since it was planned
    return plan, cfg


def open_tracking(plan: RunPlan, cfg: Config) -> None:
    """Create (or reopen) the run's MLflow run on the driver; the chief worker logs into it."""
    import mlflow

    from trainer import tracking

    plan.tracking_uri = tracking.resolve_tracking_uri(cfg.mlflow.tracking_uri)
    run = tracking.start(plan.tracking_uri, cfg.mlflow.experiment, plan.run_name,
                         run_id=plan.mlflow_run_id or None, parent_run_id=plan.parent_run_id or None)
    if not plan.mlflow_run_id:
        mlflow.log_params(cfg.flat())
        mlflow.set_tags({"git_commit": tracking.git_commit(Path(__file__).parent), "data_fingerprint":
                         plan.data_fingerprint, "model": cfg.model.name, "run_dir": plan.run_dir,
                         "init_from": plan.init_from})
        mlflow.log_dict(plan.split.to_dict(), "split.json")
        mlflow.log_dict(plan.data_counts, "data_counts.json")
    plan.mlflow_run_id = run.info.run_id
    plan.save()
    mlflow.end_run()
