"""Connecting to Ray: a running cluster when one is given, else a local one started in-process.

``ray job submit`` sets ``RAY_ADDRESS`` for the driver, so the same entry point runs on the
cluster it was submitted to; ``ray.address: auto`` attaches to a cluster started with
``ray start`` on this machine; with no address anywhere, a new local Ray is started in-process (the
embedded default). Every worker gets ``TF_USE_LEGACY_KERAS=1`` through the runtime env so that
tf-keras is chosen before TensorFlow is first imported in the worker process.
"""
from __future__ import annotations

import os

WORKER_ENV = {"TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}


def ensure_ray(address: str = "") -> None:
    import ray

    if ray.is_initialized():
        return
    kwargs = dict(runtime_env={"env_vars": WORKER_ENV}, ignore_reinit_error=True, log_to_driver=True)
    address = address or os.environ.get("RAY_ADDRESS", "")
    if address:
        ray.init(address=address, **kwargs)
    else:
        # "local", not None: a bare ray.init() attaches to whatever cluster /tmp/ray last recorded,
        # which may be someone else's or gone. Use ray.address: auto (or RAY_ADDRESS) for that.
        ray.init(address="local", include_dashboard=False, **kwargs)
