"""Typed config fields: values checked against a dataclass's annotations, one-line errors.

The machinery ``trainer.config`` (the sections) and ``trainer.config_lists`` (list-valued keys)
share; every message names the offending key, e.g. ``unknown config key 'train.lerning_rate'``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, get_type_hints

import yaml


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message is one line."""


def coerce(label: str, value: Any, typ: type) -> Any:
    """``value`` as ``typ`` (ints widen to floats, nothing else is converted); ``label`` names it in errors."""
    if typ is bool:
        if isinstance(value, bool):
            return value
    elif typ is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif typ is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif typ is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise ConfigError(f"{label} must be {typ.__name__}, got {value!r}")


def apply_fields(target: Any, values: dict[str, Any], label: Callable[[str], str]) -> None:
    """Set dataclass fields of ``target`` from ``values``, typed; an unknown key is an error.

    ``label(key)`` names a key in messages, e.g. ``config key 'train.epochs'``.
    """
    hints = get_type_hints(type(target))
    for key, value in values.items():
        if key not in hints:
            raise ConfigError(f"unknown {label(key)}")
        setattr(target, key, coerce(label(key), value, hints[key]))


def read_mapping(path: Path, what: str) -> dict[str, Any]:
    """The YAML mapping in ``path`` ({} when empty); one-line ConfigError otherwise."""
    try:
        raw = yaml.safe_load(path.read_bytes()) or {}  # bytes: YAML's reader decodes (UTF-8/16) and refuses junk
    except OSError as exc:
        raise ConfigError(f"{what} {path} is unreadable: {exc.strerror or exc}") from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise ConfigError(f"{what} {path} is not valid YAML: {(str(exc).splitlines() or [type(exc).__name__])[0]}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} {path} must hold a mapping")
    return raw


