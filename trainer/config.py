"""Experiment configuration: typed sections, loaded from YAML, unknown keys rejected by name.

One YAML file per experiment (``experiments/*.yaml``). Every key has a default here, so a config
file only states what differs. Loading fails at once with a one-line ``ConfigError`` naming the
offending key, e.g. ``unknown config key 'train.lerning_rate'``; the resolved config (all
defaults filled in) is what gets saved with every checkpoint and logged to MLflow.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trainer.config_fields import ConfigError, apply_fields, coerce, read_mapping  # noqa: F401  (re-exported)
from trainer.config_lists import BenchmarkConfig, SourceConfig, parse_benchmarks, parse_sources, source_name  # noqa: F401


@dataclass
class DataConfig:
    # An identity-folder root (``root/<identity>/*.jpg|png|pgm``) or ``tfds:<name>`` (e.g. ``tfds:lfw``).
    source: str = ""
    # Where aligned TFRecord shards, manifests and splits are cached.
    cache_dir: str = ".facenet/cache"
    align: bool = True  # False: images are already aligned crops (e.g. ORL); only resize.
    min_images_per_identity: int = 2
    max_identities: int = 0  # 0 = all; otherwise the first N identities in sorted order.
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    split_seed: int = 0
    prepare_workers: int = 0  # Ray tasks in flight; 0 = number of CPUs.
    # An identity folder of already-aligned crops (e.g. enrolled people exported from the gallery)
    # whose identities all join the training split; one photo per person is enough (K augmented views).
    extra_source: str = ""
    # More identity folders trained on together (see SourceConfig), e.g. in YAML:
    #   sources: [{path: ../shared/data/glint6, align: prealigned, max_per_identity: 100}]
    sources: list[SourceConfig] = field(default_factory=list)


@dataclass
class ModelConfig:
    name: str = "nn4_small2"  # nn1 | nn2 | nn4_small2 | nn4_small2_bn | tiny | dlib_resnet (dlib's weights, [teacher] extra)
    embedding_dim: int = 128
    input_size: int = 0  # 0 = the model's native size (nn1 220, nn2 224, nn4_small2 96, tiny 64).
    # Evaluate and ship normalise(f(x) + f(mirror x)) (trainer/models/mirror.py): ~1 point of pair
    # accuracy and more of rank-1 for twice the inference FLOPs; training is unchanged.
    mirror_average: bool = True
    # The face framing crops are aligned to (trainer/align.py TEMPLATES): "arcface" (ArcFace's 112 px
    # template, tight, from the brows down) or "dlib" (dlib's chip: forehead and hair in view). A
    # student of the dlib teacher sees what its teacher saw with "dlib". Enrolment and serving read it
    # back from the model's meta, so a model is always fed its own framing.
    face_template: str = "arcface"


@dataclass
class TrainConfig:
    identities_per_batch: int = 16  # P
    images_per_identity: int = 4  # K
    epochs: int = 10
    steps_per_epoch: int = 0  # 0 = (training images) / (P*K)
    optimizer: str = "adagrad"  # adagrad (FaceNet paper) | adam | sgd (momentum 0.9)
    learning_rate: float = 0.05
    loss: str = "semihard"  # semihard | hard
    margin: float = 0.2
    distance_metric: str = "squared-L2"  # L2 | squared-L2 | angular
    augment: bool = True
    seed: int = 0
    out_dir: str = "runs"
    run_name: str = ""  # "" = <config stem>-<timestamp>
    init_from: str = ""  # checkpoint to warm-start from
    # Stop early once every condition holds after an epoch, e.g. "val_accuracy>=0.71,new_accuracy>=0.8".
    stop_when: str = ""
    # Distillation from a trusted model (trainer/teacher.py): "" = none, "dlib_resnet_v1" (the
    # [teacher] extra). The loss is metric_weight × triplet loss + distill_weight × embedding
    # matching + distill_relational_weight × pairwise-distance matching (trainer/distill.py).
    teacher: str = ""
    metric_weight: float = 1.0
    distill_weight: float = 0.0
    distill_relational_weight: float = 0.0
    # Consistent teaching (trainer/teacher_views.py): N augmented views of every training photo, each
    # with the teacher's embedding of the same view, made once beside the shards; 0 = none.
    teacher_views: int = 0
    # A margin-softmax classifier over the training people beside the other terms (trainer/margin_softmax.py):
    # "" = none | cosface | arcface; + margin_softmax_weight × its cross-entropy.
    margin_softmax: str = ""
    margin_softmax_weight: float = 1.0
    margin_softmax_scale: float = 30.0
    margin_softmax_margin: float = 0.35
    # learned (a weight vector per person, trained) | teacher: each person's weight is the mean of the
    # teacher's embeddings of their training photos, fixed (ProxylessKD, Shi et al. 2020): the class
    # head is the teacher's, so the margin pulls the student into the teacher's space.
    margin_softmax_centres: str = "learned"
    # + centre_distill_weight × KL(teacher || student) of the softmax of centre_distill_scale × their cosines
    # to those teacher centres (trainer/distill.py centre_matching); needs margin_softmax_centres: teacher.
    centre_distill_weight: float = 0.0
    centre_distill_scale: float = 10.0
    # Which checkpoint a finished run keeps as its model: "best" (highest validation accuracy) or "last".
    keep: str = "best"
    # With keep: best, validate the starting weights (a pretrained model, --init-from) too, and keep them
    # when no epoch beats them on validation: fine-tuning never ships a model worse than where it began.
    validate_start: bool = False
    # identities: every person equally likely in a P×K batch (FaceNet's); photos: a person in
    # proportion to their photos, so every photo is seen equally often (what distillation wants)
    sampling: str = "identities"
    augment_strength: str = "standard"  # standard | strong (adds greyscale, blur, small rotations)
    lr_schedule: str = "constant"  # constant | cosine (with warmup_epochs of linear warm-up)
    warmup_epochs: int = 0
    weight_decay: float = 0.0  # decoupled (AdamW) when optimizer is adam; SGD's own (decoupled) with sgd
    # mixed_bfloat16: bfloat16 compute, float32 weights and embedding head (oneDNN on AVX-512 BF16
    # CPUs, or GPUs); measured in experiments/bench_train.py --precision
    precision: str = "float32"


@dataclass
class EvalConfig:
    pairs_per_fold: int = 300  # matched and mismatched pairs per fold (LFW uses 300 + 300)
    folds: int = 10
    far_target: float = 1e-3
    eval_batch_size: int = 128
    # e.g. [{pairs: experiments/benchmarks/yaleb27.pairs.txt, images: ../shared/data/yaleb27}]
    benchmarks: list[BenchmarkConfig] = field(default_factory=list)


@dataclass
class RayConfig:
    address: str = ""  # "" = $RAY_ADDRESS (set by `ray job submit`), else a new local Ray; "auto" = `ray start` cluster
    num_workers: int = 1  # Ray Train workers; 0 = train in this process without Ray Train
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0
    max_failures: int = 2


@dataclass
class MlflowConfig:
    tracking_uri: str = ""  # "" = $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db
    experiment: str = "facenet"


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """``{"train.epochs": 10, ...}``: the form logged as MLflow params."""
        return {f"{s}.{k}": v for s, sec in self.to_dict().items() for k, v in sec.items()}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


_CHOICES = {
    "model.name": ("dlib_resnet", "nn1", "nn2", "nn4_small2", "nn4_small2_bn", "tiny"),
    "model.face_template": ("arcface", "dlib"),  # trainer/align.py TEMPLATES (not imported: config stays light)
    "train.teacher": ("", "dlib_resnet_v1"),
    "train.keep": ("best", "last"),
    "train.augment_strength": ("standard", "strong"),
    "train.sampling": ("identities", "photos"),
    "train.lr_schedule": ("constant", "cosine"),
    "train.precision": ("float32", "mixed_bfloat16"),
    "train.optimizer": ("adagrad", "adam", "sgd"),
    "train.loss": ("semihard", "hard"),
    "train.margin_softmax": ("", "cosface", "arcface"),
    "train.margin_softmax_centres": ("learned", "teacher"),
    "train.distance_metric": ("L2", "squared-L2", "angular"),
}


def from_dict(raw: dict[str, Any] | None) -> Config:
    """Build a Config from nested dicts, rejecting unknown sections/keys and wrong types."""
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ConfigError("config must be a mapping of sections (data, model, train, eval, ray, mlflow)")
    cfg = Config()
    sections = [f.name for f in dataclasses.fields(cfg)]
    for section, values in raw.items():
        if section not in sections:
            raise ConfigError(f"unknown config section {str(section)!r} (allowed: {', '.join(sections)})")
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"config section '{section}' must be a mapping, got {values!r}")
        if section == "data" and "sources" in values:
            values = dict(values)
            cfg.data.sources = parse_sources(values.pop("sources"))
        if section == "eval" and "benchmarks" in values:
            values = dict(values)
            cfg.eval.benchmarks = parse_benchmarks(values.pop("benchmarks"))
        apply_fields(getattr(cfg, section), values, lambda key, section=section: f"config key {f'{section}.{key}'!r}")
    for key, allowed in _CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value not in allowed:
            raise ConfigError(f"config key '{key}' must be one of {', '.join(allowed)}, got {value!r}")
    _check_ranges(cfg)
    return cfg


def _check_ranges(cfg: Config) -> None:
    positive = {
        "train.identities_per_batch": cfg.train.identities_per_batch,
        "train.images_per_identity": cfg.train.images_per_identity,
        "train.learning_rate": cfg.train.learning_rate,
        "model.embedding_dim": cfg.model.embedding_dim,
        "eval.folds": cfg.eval.folds,
    }
    for key, value in positive.items():
        if not value > 0:  # NaN too
            raise ConfigError(f"config key '{key}' must be > 0, got {value!r}")
    if cfg.train.epochs < 0:
        raise ConfigError(f"config key 'train.epochs' must be >= 0 (0 = evaluate the initial weights), got {cfg.train.epochs}")
    if cfg.model.name == "dlib_resnet" and cfg.model.face_template != "dlib":
        raise ConfigError("config key 'model.name: dlib_resnet' starts from dlib's weights, which need dlib's framing: "
                          "set model.face_template=dlib")
    if cfg.ray.num_workers < 0:
        raise ConfigError(f"config key 'ray.num_workers' must be >= 0 (0 = train in-process), got {cfg.ray.num_workers}")
    if cfg.train.images_per_identity < 2:
        raise ConfigError("config key 'train.images_per_identity' must be >= 2 (a triplet needs a positive)")
    parse_stop_when(cfg.train.stop_when)
    if cfg.train.metric_weight < 0 or cfg.train.distill_weight < 0 or cfg.train.distill_relational_weight < 0:
        raise ConfigError("config keys 'train.metric_weight', 'train.distill_weight' and "
                          "'train.distill_relational_weight' must be >= 0")
    distilling = cfg.train.distill_weight > 0 or cfg.train.distill_relational_weight > 0
    if not distilling and any(not s.labeled for s in cfg.data.sources):
        raise ConfigError("config key 'data.sources[].labeled: false' needs distillation: set train.teacher and "
                          "train.distill_weight")
    if cfg.train.teacher_views < 0 or (cfg.train.teacher_views and not cfg.train.teacher):
        raise ConfigError("config key 'train.teacher_views' must be >= 0 and needs a teacher (train.teacher)")
    if distilling and not cfg.train.teacher:
        raise ConfigError("config keys 'train.distill_*' need a teacher: set train.teacher=dlib_resnet_v1")
    if cfg.train.margin_softmax and not (cfg.train.margin_softmax_scale > 0 and cfg.train.margin_softmax_weight > 0
                                         and 0 <= cfg.train.margin_softmax_margin < 1.5):
        raise ConfigError("config keys 'train.margin_softmax_scale' and '_weight' must be > 0 and "
                          "'train.margin_softmax_margin' in [0, 1.5)")
    if cfg.train.margin_softmax_centres == "teacher" and not (cfg.train.margin_softmax and cfg.train.teacher):
        raise ConfigError("config key 'train.margin_softmax_centres: teacher' needs train.margin_softmax and "
                          "train.teacher")
    if cfg.train.centre_distill_weight and not (cfg.train.centre_distill_weight > 0 and cfg.train.centre_distill_scale > 0
                                                 and cfg.train.margin_softmax_centres == "teacher"):
        raise ConfigError("config key 'train.centre_distill_weight' must be >= 0, with 'train.centre_distill_scale' "
                          "> 0 and train.margin_softmax_centres: teacher")
    if not distilling and cfg.train.metric_weight == 0 and not cfg.train.margin_softmax:
        raise ConfigError("config key 'train.metric_weight' is 0 and nothing is distilled: there is no loss")
    if not 0 <= cfg.data.val_fraction + cfg.data.test_fraction < 1:
        raise ConfigError("config keys 'data.val_fraction' + 'data.test_fraction' must be in [0, 1)")


def parse_stop_when(text: str) -> list[tuple[str, float]]:
    """``"val_accuracy>=0.7,new_accuracy>=0.8"`` -> [("val_accuracy", 0.7), ("new_accuracy", 0.8)]."""
    conditions = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition(">=")
        try:
            conditions.append((name.strip(), float(value)))
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise ConfigError(f"config key 'train.stop_when' must look like metric>=value[,...], got {text!r}")
    return conditions


def parse_override(text: str) -> tuple[str, str, Any]:
    """``train.epochs=3`` -> ("train", "epochs", 3); the value is parsed as YAML."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"override must look like section.key=value, got {text!r}")
    dotted, value = text.split("=", 1)
    section, key = dotted.split(".", 1)
    try:
        return section, key, yaml.safe_load(value) if value else ""
    except (yaml.YAMLError, RecursionError) as exc:
        raise ConfigError(f"override {text!r}: the value is not valid YAML: "
                          f"{(str(exc).splitlines() or [type(exc).__name__])[0]}") from None


def load(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML config file (or defaults when ``path`` is None) and apply ``section.key=value`` overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        raw = read_mapping(p, "config file")
    return from_dict(apply_overrides(raw, overrides))


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides to a raw (nested dict) config, in place; returns it."""
    for text in overrides:
        section, key, value = parse_override(text)
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raise ConfigError(f"config section {section!r} must be a mapping")
        raw[section][key] = value
    return raw


def resolve_path(path: str) -> str:
    """A relative path resolved against ``$FACENET_WORKDIR`` (default: the current directory).

    ``ray job submit --working-dir .`` runs the driver in an uploaded copy of the project, so
    relative data, cache, output and sqlite paths would land in a temporary folder; setting
    FACENET_WORKDIR in the job's runtime env points them back at the submitter's directory.
    """
    import os

    if not path or path.startswith("tfds:") or os.path.isabs(os.path.expanduser(path)):
        return os.path.expanduser(path)
    return os.path.join(os.environ.get("FACENET_WORKDIR", os.getcwd()), path)


def fingerprint(obj: Any) -> str:
    """A short stable hash of any JSON-able object (configs, file lists)."""
    import hashlib

    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
