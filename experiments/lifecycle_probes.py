"""The lifecycle's identification stages (``python -m experiments.lifecycle``, stages 6 and 9): the
probe photos, and how well the home's production model names enrolled people and rejects strangers."""
from __future__ import annotations

import time
from pathlib import Path

from trainer.align import IMAGE_EXTENSIONS


def photos_of(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)


def probes_of(people: list[Path], strangers: int) -> list[tuple[str | None, Path]]:
    """Every enrolled person's photos but the first (their enrolment photo), then every photo of the
    first ``strangers`` people (never enrolled: expected None)."""
    return ([(folder.name, p) for folder in people[strangers:] for p in photos_of(folder)[1:]]
            + [(None, p) for folder in people[:strangers] for p in sorted(folder.iterdir())])


def identify_all(home: Path, probes: list[tuple[str | None, Path]]) -> dict:
    """Identify every probe photo (expected name, or None for a stranger); accuracies and latency."""
    from enroll.gallery import GalleryError
    from enroll.service import identify
    from enroll.backends import open_gallery

    known_hits = known_rank1 = known = strangers_rejected = strangers = 0
    latencies = []
    with open_gallery(home, create=True) as gallery:
        for expected, path in probes:
            started = time.perf_counter()
            try:
                answer = identify(gallery, home, path)
                name, nearest = answer["name"], (answer["candidates"] or [{"name": None}])[0]["name"]
            except GalleryError:
                continue  # no usable face in this probe photo
            latencies.append(time.perf_counter() - started)
            if expected is None:
                strangers += 1
                strangers_rejected += name == "unknown"
            else:
                known += 1
                known_hits += name == expected
                known_rank1 += nearest == expected  # nearest person, whatever the threshold says
    latencies.sort()
    return {"known_identified": known_hits / max(known, 1), "known_rank1": known_rank1 / max(known, 1),
            "known_probes": known,
            "strangers_rejected": strangers_rejected / max(strangers, 1), "stranger_probes": strangers,
            "identify_p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else float("nan")}
