"""Face tracks across a video's sampled frames: who is the same face from one frame to the next.

Each new frame's faces are matched to the live tracks by box overlap (IoU with the track's last
box), one face per track (the Hungarian assignment, scipy's ``linear_sum_assignment``). A match
must also pass an embedding gate: the face must be within ``max_distance`` (the production τ) of
the track's mean embedding. Boxes alone would carry a track across a cut from one person to
another filmed at the same place; the gate ends it there, and among overlapping candidates the
embedding distance breaks ties. A face no track takes starts a new one; a track unmatched for
more than ``max_missed`` sampled frames in a row is finished (the face left, or was hidden).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from enroll.faces import Box
from enroll.index import normalise

MIN_IOU = 0.3  # boxes of one face a fifth of a second apart overlap far more; two faces side by side hardly
MAX_MISSED = 3  # sampled frames a track may go unseen (a blink of the detector, a turn of the head)
TIE_WEIGHT = 0.1  # embedding distance (0..2) against 1 - IoU (0..1): overlap first, identity to break ties
_REFUSED = 1e6


@dataclass(frozen=True)
class Sighting:
    """One face in one sampled frame, with its share of that frame's detection and embedding time."""
    frame: int
    time_s: float
    box: Box
    embedding: np.ndarray  # unit vector
    detect_ms: float = 0.0
    embed_ms: float = 0.0


@dataclass
class Track:
    id: int
    sightings: list[Sighting] = field(default_factory=list)
    missed: int = 0  # sampled frames since it was last seen
    _total: np.ndarray | None = None

    def add(self, sighting: Sighting) -> None:
        self.sightings.append(sighting)
        self._total = sighting.embedding.copy() if self._total is None else self._total + sighting.embedding
        self.missed = 0

    @property
    def embedding(self) -> np.ndarray:
        """The mean of the sightings' unit vectors, re-normalised: the track's one query."""
        return normalise(self._total)[0]

    @property
    def first(self) -> Sighting:
        return self.sightings[0]

    @property
    def last(self) -> Sighting:
        return self.sightings[-1]


def box_iou(a: Box, b: Box) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    inter_w = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    inter_h = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = inter_w * inter_h
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


class FaceTracker:
    def __init__(self, max_distance: float, min_iou: float = MIN_IOU, max_missed: int = MAX_MISSED):
        self.max_distance, self.min_iou, self.max_missed = max_distance, min_iou, max_missed
        self.tracks: list[Track] = []  # every track, in the order they started

    def live(self) -> list[Track]:
        return [t for t in self.tracks if t.missed <= self.max_missed]

    def update(self, sightings: list[Sighting]) -> None:
        """Add one sampled frame's faces (possibly none)."""
        live = self.live()
        pairs: dict[int, int] = {}  # live track (row) -> the sighting (column) it takes
        if live and sightings:
            from scipy.optimize import linear_sum_assignment  # (scipy comes with scikit-learn)

            cost = np.array([[self._cost(track, s) for s in sightings] for track in live])
            pairs = {int(r): int(c) for r, c in zip(*linear_sum_assignment(cost)) if cost[r, c] < _REFUSED}
        for row, track in enumerate(live):  # all costs first, then the updates
            if row in pairs:
                track.add(sightings[pairs[row]])
            else:
                track.missed += 1
        taken = set(pairs.values())
        for col, sighting in enumerate(sightings):
            if col not in taken:
                track = Track(len(self.tracks) + 1)
                track.add(sighting)
                self.tracks.append(track)

    def _cost(self, track: Track, sighting: Sighting) -> float:
        iou = box_iou(track.last.box, sighting.box)
        distance = float(np.linalg.norm(track.embedding - sighting.embedding))
        if iou < self.min_iou or distance > self.max_distance:
            return _REFUSED
        return (1.0 - iou) + TIE_WEIGHT * distance
