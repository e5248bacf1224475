"""Aligned face crops as content-addressed files: ``crops/ab/abcdef….png`` (SHA-256 of the PNG).

A crop must be on disk before the database row that names it commits, and a crop whose row never
committed (the writer was killed) must not stay behind. Both are handled with an intent journal:
while holding the database write lock, a writer first lists the crops it is about to create or
drop in ``crops/.pending-<token>.json``, then touches files, then commits. Whoever next takes the
write lock (``resolve_pending``) deletes every listed crop that no committed row references, then
the journal. Only the lock holder writes crops or resolves journals, so a journal seen by a lock
holder belongs to a finished or dead writer and resolving it can never race a live one.
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Callable, Iterable

JOURNAL_GLOB = ".pending-*.json"


class CropFiles:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / f"{sha256}.png"

    def write(self, data: bytes) -> str:
        """Store ``data`` atomically (tmp file, fsync, rename); returns its SHA-256. Idempotent."""
        sha = hashlib.sha256(data).hexdigest()
        target = self.path(sha)
        if target.exists() and target.stat().st_size == len(data):
            return sha
        target.parent.mkdir(exist_ok=True)
        tmp = target.with_name(f"{target.name}.tmp-{uuid.uuid4().hex[:8]}")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # the rename must never expose a crop whose bytes are not yet on disk
        os.replace(tmp, target)
        return sha

    def read(self, sha256: str) -> bytes:
        return self.path(sha256).read_bytes()

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    # -------------------------------------------------------------------------------- journal
    def begin(self, shas: Iterable[str]) -> Path:
        """Record the crops a write transaction may leave unreferenced; call under the write lock."""
        journal = self.root / f".pending-{uuid.uuid4().hex}.json"
        tmp = journal.with_suffix(".tmp")
        tmp.write_text(json.dumps(sorted(set(shas))))
        os.replace(tmp, journal)  # a torn journal would be unreadable exactly when it is needed
        return journal

    def end(self, journal: Path) -> None:
        journal.unlink(missing_ok=True)  # another lock holder may already have resolved it

    def resolve_pending(self, referenced: Callable[[set[str]], set[str]]) -> int:
        """Delete journalled crops that no committed row references; call under the write lock.

        ``referenced(shas)`` returns the subset still named by a face row. Returns files removed.
        """
        removed = 0
        for stray in self.root.glob(".pending-*.tmp"):  # a journal torn before its rename listed nothing yet
            stray.unlink(missing_ok=True)
        for journal in self.root.glob(JOURNAL_GLOB):
            try:
                shas = set(json.loads(journal.read_text()))
            except (OSError, ValueError):
                shas = set()
            keep = referenced(shas) if shas else set()
            for sha in shas - keep:
                removed += self.delete(sha)
            journal.unlink(missing_ok=True)
        return removed

    def delete(self, sha256: str) -> int:
        """Remove a crop and any half-written tmp copy of it; returns files removed."""
        target = self.path(sha256)
        removed = 0
        for path in [target, *target.parent.glob(f"{target.name}.tmp-*")]:
            try:
                path.unlink()
                removed += 1
            except FileNotFoundError:
                pass
        return removed

    def scan(self) -> tuple[set[str], list[Path]]:
        """Every stored crop's SHA-256, and stray files (tmp leftovers, journals); a full walk."""
        shas, strays = set(), []
        for sub in self.root.iterdir():
            if sub.is_dir():
                for path in sub.iterdir():
                    if path.suffix == ".png" and len(path.stem) == 64:
                        shas.add(path.stem)
                    else:
                        strays.append(path)
            else:
                strays.append(sub)
        return shas, strays


def encode_png(crop) -> bytes:
    """RGB uint8 crop -> PNG bytes (lossless, so a later model re-embeds exactly these pixels)."""
    import cv2

    ok, data = cv2.imencode(".png", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("could not encode the face crop as PNG")
    return data.tobytes()


def decode_png(data: bytes, size: int | None = None):
    """PNG bytes -> RGB uint8 array, resized to ``size`` × ``size`` when the crop was stored at
    another size (a new production model with a different input size). The alignment template
    scales with the crop, so a resized crop keeps the canonical face framing."""
    import cv2
    import numpy as np

    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("stored crop is not a decodable PNG")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if size and rgb.shape[0] != size:
        interpolation = cv2.INTER_AREA if rgb.shape[0] > size else cv2.INTER_LINEAR
        rgb = cv2.resize(rgb, (size, size), interpolation=interpolation)
    return rgb
