"""TF-Serving's ``--model_config_file``: a ModelServerConfig in protobuf text format.

A version policy of ``latest { num_versions: N }`` keeps the N newest versions loaded, so clients
pinned to the previous version (``/v1/models/facenet/versions/<n>``) keep working while a gallery
update rolls out, and an old version is unloaded only once a newer one has loaded.

The text is written by hand rather than through ``tensorflow_serving.config`` so that exporting
works without the ``[serving]`` extra; the tests parse it with ``model_server_config_pb2``.
"""
from __future__ import annotations

import json
from pathlib import Path

from trainer.files import atomic_write


def models_config_text(base_path: str, model_name: str = "facenet", versions_to_keep: int = 2,
                       labels: dict[str, int] | None = None) -> str:
    """The config text for one model whose versions live in ``<base_path>/<model_name>/``.

    ``base_path`` is the path *as the server sees it* (``/models`` inside the tensorflow/serving
    container), not necessarily where the export was written. ``labels`` maps version labels
    (e.g. ``{"stable": 3}``) to versions; TF-Serving refuses a label on a version it has not loaded.
    """
    if versions_to_keep < 1:
        raise ValueError(f"versions_to_keep must be >= 1, got {versions_to_keep}")
    if not model_name or "/" in model_name:
        raise ValueError(f"invalid model name {model_name!r}")
    # json.dumps yields a double-quoted string with escapes the text format also accepts.
    model_base = json.dumps(str(base_path).rstrip("/") + "/" + model_name)
    lines = [
        "model_config_list {",
        "  config {",
        f"    name: {json.dumps(model_name)}",
        f"    base_path: {model_base}",
        '    model_platform: "tensorflow"',
        "    model_version_policy {",
        "      latest {",
        f"        num_versions: {int(versions_to_keep)}",
        "      }",
        "    }",
    ]
    for label, version in sorted((labels or {}).items()):
        lines += ["    version_labels {", f"      key: {json.dumps(label)}", f"      value: {int(version)}", "    }"]
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def write_models_config(base_path: str | Path, path: str | Path, model_name: str = "facenet",
                        versions_to_keep: int = 2, labels: dict[str, int] | None = None) -> Path:
    """Write the config for ``model_name`` under ``base_path`` to ``path`` (atomically: the server
    may re-read it at any moment with ``--model_config_file_poll_wait_seconds``)."""
    return atomic_write(path, models_config_text(str(base_path), model_name, versions_to_keep, labels))
