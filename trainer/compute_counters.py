"""Compute counters: the N of the N / N_prim / N_adpt comparison, defined once, here.

Every training run (full, from scratch, or warm-started) accumulates the same counters, per epoch
and in total, so that runs can be compared by what they cost:

- ``steps``          optimizer steps (one step = one global P×K batch, all replicas together)
- ``images``         training images processed = steps × global batch size (P×K)
- ``train_flops``    3 × forward FLOPs per image × images. Forward FLOPs come from TensorFlow's
                     profiler on the frozen model (trainer/flops.py; a multiply-add counts 2); the
                     backward pass costs about twice the forward one, hence 3×. Evaluation is not
                     counted: it is the same for every run being compared.
- ``wall_seconds``   wall-clock seconds spent in training epochs (not data preparation, not eval)
- ``worker_seconds`` wall_seconds × number of training workers
- ``gpu_seconds``    wall_seconds × GPUs in use (0 on CPU-only runs)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

FIELDS = ("steps", "images", "train_flops", "wall_seconds", "worker_seconds", "gpu_seconds")


@dataclass
class ComputeCounters:
    steps: int = 0
    images: int = 0
    train_flops: float = 0.0
    wall_seconds: float = 0.0
    worker_seconds: float = 0.0
    gpu_seconds: float = 0.0

    def add(self, other: "ComputeCounters") -> None:
        for name in FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def as_metrics(self, prefix: str) -> dict[str, float]:
        """``{"<prefix>steps": ..., ...}``: e.g. prefix ``compute/epoch_`` or ``compute/total_``."""
        return {f"{prefix}{k}": float(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict) -> "ComputeCounters":
        return cls(**{k: values[k] for k in FIELDS if k in values})


def epoch_counters(steps: int, batch_size: int, seconds: float, forward_flops_per_image: int,
                   workers: int, gpus: int) -> ComputeCounters:
    from trainer.flops import training_flops

    images = steps * batch_size
    return ComputeCounters(steps, images, float(training_flops(forward_flops_per_image, images)), seconds,
                           seconds * workers, seconds * gpus)
