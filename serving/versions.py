"""Versioned model directories in TF-Serving's layout: ``<base>/<name>/<version>/``, atomically.

TF-Serving's file-system source polls ``<base>/<name>/`` and loads every child whose name is an
integer (subject to the version policy), so a version directory must appear complete or not at
all. Each version is written into a hidden ``.tmp-*`` directory beside the versions (same file
system, and a name the server ignores) and then ``os.rename``d into place. A crash leaves only a
``.tmp-*`` directory behind, which neither TF-Serving nor ``list_versions`` ever picks up.

Versions only increase: the next one is ``max(existing) + 1``. Two exporters racing for the same
number cannot both win, since renaming onto an existing non-empty directory fails; the loser moves
on to the next number and writes again (the number is recorded in the export's metadata).
"""
from __future__ import annotations

import errno
import os
import secrets
import shutil
from pathlib import Path
from typing import Callable

TMP_PREFIX = ".tmp-"


def model_dir(base_path: str | Path, model_name: str) -> Path:
    return Path(base_path) / model_name


def list_versions(base_path: str | Path, model_name: str) -> list[int]:
    """The published versions, ascending (directories named by a positive integer only)."""
    root = model_dir(base_path, model_name)
    if not root.is_dir():
        return []
    return sorted(int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) > 0)


def latest_version(base_path: str | Path, model_name: str) -> int | None:
    versions = list_versions(base_path, model_name)
    return versions[-1] if versions else None


def version_dir(base_path: str | Path, model_name: str, version: int | None = None) -> Path:
    """The directory of ``version`` (default: the latest); FileNotFoundError when there is none."""
    if version is None:
        version = latest_version(base_path, model_name)
        if version is None:
            raise FileNotFoundError(f"no exported version under {model_dir(base_path, model_name)}")
    path = model_dir(base_path, model_name) / str(version)
    if not path.is_dir():
        raise FileNotFoundError(f"no version {version} under {model_dir(base_path, model_name)}")
    return path


def _renamed(src: Path, dst: Path) -> bool:
    """Rename a directory unless ``dst`` exists; True on success."""
    if dst.exists():
        return False
    try:
        os.rename(src, dst)
    except OSError as exc:
        # Lost a race: another exporter renamed its directory onto the same number first.
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
            return False
        raise
    return True


def publish(base_path: str | Path, model_name: str, write: Callable[[Path, int], None],
            version: int | None = None) -> Path:
    """Call ``write(tmp_dir, version)`` to fill a fresh directory, then rename it into place.

    ``version`` None takes the next free number; an explicit one must exceed every existing
    version (clients and TF-Serving treat the largest number as the newest).
    """
    root = model_dir(base_path, model_name)
    root.mkdir(parents=True, exist_ok=True)
    latest = latest_version(base_path, model_name) or 0
    if version is not None and (not isinstance(version, int) or version <= latest):
        raise ValueError(f"version must be an integer greater than the latest existing version ({latest}), "
                         f"got {version!r}")
    target = version or latest + 1
    while True:
        # Not mkdtemp: its mode 0700 would survive the rename and hide the version from a server
        # running as another user; mkdir honours the umask like every other file written.
        tmp = root / f"{TMP_PREFIX}{target}-{secrets.token_hex(4)}"
        tmp.mkdir()
        try:
            write(tmp, target)
            if _renamed(tmp, root / str(target)):
                return root / str(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone already after a successful rename
        # Lost a race for ``target``: write again, since the number is recorded inside the export.
        if version is not None:
            raise FileExistsError(f"version {version} appeared under {root} while exporting")
        target = (latest_version(base_path, model_name) or 0) + 1


def prune(base_path: str | Path, model_name: str, keep: int) -> list[int]:
    """Delete all but the newest ``keep`` versions; returns the deleted numbers.

    For exporters that publish often (a gallery-only version per enrolment window): TF-Serving
    holds the versions its policy names in memory, so deleting an older directory only stops it
    from being loaded again. Keep more than the policy's ``num_versions`` so that a server that has
    not loaded the newest yet still finds the one it serves.
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    old = list_versions(base_path, model_name)[:-keep]
    for number in old:
        shutil.rmtree(model_dir(base_path, model_name) / str(number), ignore_errors=True)
    return old


def new_bytes(version_dir: str | Path) -> int:
    """Bytes only this version holds on disk: hard links shared with another version (the network
    shard of gallery-only versions, serving/gallery_versions.py) are not counted."""
    stats = (p.stat() for p in Path(version_dir).rglob("*") if p.is_file())
    return sum(s.st_size for s in stats if s.st_nlink == 1)
