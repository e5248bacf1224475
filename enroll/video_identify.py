"""``enroll identify VIDEO``: who appears in a video, one answer per face track.

Sampled frames (enroll.video) go through MTCNN in batches, every face is aligned as enrolment aligns
(enroll.faces) and embedded by the production model; the tracker (enroll.tracking) follows each
face from frame to frame. Each track is then answered once, as ``identify`` answers a photo
(``service.nearest_answer``, or the closed-set classifiers with ``--method knn|svm``), for the mean
of its frames' unit vectors, re-normalised: averaging over frames smooths out a blurred or turned
frame (the seeds: "in case of video, average predictions over frames"). Each track reports the
detection and embedding time of its frames (a frame's time shared among its faces) and its search.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from enroll.embedders import Embedder, EmbeddingModel, LocalEmbedder
from enroll.faces import detect_faces
from enroll.gallery import GalleryError
from enroll.home import face_template
from enroll.service import nearest_answer, search_index
from enroll.tracking import FaceTracker, Sighting, Track
from enroll.video import Frame, Sampling, VideoError, open_video

DETECT_BATCH = 8  # sampled frames per MTCNN call: batching costs little more than one frame on a CPU


@dataclass
class Timing:
    """Milliseconds spent on the whole video, by stage."""
    decode: float = 0.0
    detect: float = 0.0
    embed: float = 0.0
    track: float = 0.0
    search: float = 0.0

    def as_dict(self) -> dict:
        return {k: round(v, 1) for k, v in vars(self).items()}


def identify_video(gallery, home, path, sampling: Sampling = Sampling(), top_k: int = 3, method: str = "nearest",
                   embedder: Embedder | None = None) -> dict:
    """Every face track in the video at ``path``, each named (or "unknown" beyond τ) from the mean
    of its frames' embeddings. ``VideoError`` when the file is not a decodable video or shows no face."""
    if top_k < 1:
        raise GalleryError(f"--top-k must be at least 1, got {top_k}")
    model = (embedder or LocalEmbedder()).current(home)
    threshold = model.meta["threshold"]
    answer = _answerer(gallery, home, model.version, threshold, top_k, method)  # refuses before decoding
    started = time.perf_counter()
    timing = Timing()
    tracker = FaceTracker(max_distance=threshold)
    with open_video(path) as video:
        step = sampling.step(video.fps)
        sampled = 0
        for batch in _batches(video.frames(step), timing):
            sampled += len(batch)
            _track_batch(batch, model, tracker, timing)
    if not tracker.tracks:
        raise VideoError(f"{path}: no face found in {sampled} sampled frames (every {_nth(step)} of {video.frames_read})")
    tracks = []
    for track in tracker.tracks:
        t0 = time.perf_counter()
        result = answer(track.embedding)
        search_ms = (time.perf_counter() - t0) * 1000
        timing.search += search_ms
        tracks.append(_track_result(track, result, search_ms))
    seconds = time.perf_counter() - started
    return {"source": str(path), "model_version": model.version, "threshold": threshold, "method": method,
            "video": {"fps": round(video.fps, 3), "frames": video.frames_read, "frames_declared": video.frames_declared,
                      "width": video.width, "height": video.height,
                      "duration_s": round(video.frames_read / video.fps, 3)},
            "sampling": {"every_n_frames": step, "fps": round(video.fps / step, 3)},
            "frames_sampled": sampled, "faces": sum(len(t.sightings) for t in tracker.tracks),
            "tracks": tracks, "timing_ms": {**timing.as_dict(), "total": round(seconds * 1000, 1)},
            "sampled_frames_per_s": round(sampled / seconds, 2),
            "video_frames_per_s": round(video.frames_read / seconds, 2), "note": video.note}


def _answerer(gallery, home, version: int, threshold: float, top_k: int, method: str) -> Callable[[np.ndarray], dict]:
    """One embedding -> identify's answer (name, distance, candidates), by ``method``."""
    if method == "nearest":
        index = search_index(gallery, version)
        return lambda embedding: nearest_answer(index, embedding, threshold, top_k)
    from enroll.classifiers import answer, check_method, check_people, classifier_for

    names, matrix = gallery.embeddings(version)
    check_people(names, check_method(method))
    classifier = classifier_for(home, version, gallery.gallery_version(), method, names, matrix)
    return lambda embedding: answer(classifier, names, matrix, embedding, threshold, top_k)


def _batches(frames: Iterator[Frame], timing: Timing) -> Iterator[list[Frame]]:
    """The sampled frames, DETECT_BATCH at a time; the time spent decoding them goes to ``timing``."""
    batch: list[Frame] = []
    while True:
        t0 = time.perf_counter()
        frame = next(frames, None)
        timing.decode += (time.perf_counter() - t0) * 1000
        if frame is None:
            break
        batch.append(frame)
        if len(batch) == DETECT_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _track_batch(batch: list[Frame], model: EmbeddingModel, tracker: FaceTracker, timing: Timing) -> None:
    """Detect, align and embed the faces of a batch of frames, then track them frame by frame."""
    t0 = time.perf_counter()
    faces = detect_faces([frame.rgb for frame in batch], model.meta["image_size"],
                         template=face_template(model.meta))
    t1 = time.perf_counter()
    crops = [face.crop for frame_faces in faces for face in frame_faces]
    vectors = model.embed(np.stack(crops)) if crops else None
    t2 = time.perf_counter()
    detect_ms, embed_ms = (t1 - t0) * 1000, (t2 - t1) * 1000
    timing.detect += detect_ms
    timing.embed += embed_ms
    row = 0
    for frame, frame_faces in zip(batch, faces):
        sightings = []
        for face in frame_faces:  # a frame's detection time shared among its faces; embedding time per face
            sightings.append(Sighting(frame.index, frame.time_s, face.box, vectors[row],
                                      detect_ms / len(batch) / len(frame_faces), embed_ms / len(crops)))
            row += 1
        t3 = time.perf_counter()
        tracker.update(sightings)
        timing.track += (time.perf_counter() - t3) * 1000


def _track_result(track: Track, answer: dict, search_ms: float) -> dict:
    x, y, w, h = track.first.box
    return {"track": track.id, "first_frame": track.first.frame, "last_frame": track.last.frame,
            "first_s": round(track.first.time_s, 3), "last_s": round(track.last.time_s, 3),
            "frames": len(track.sightings), **answer,
            "box": {"x": round(x), "y": round(y), "width": round(w), "height": round(h)},
            "timing_ms": {"detect": round(sum(s.detect_ms for s in track.sightings), 1),
                          "embed": round(sum(s.embed_ms for s in track.sightings), 1),
                          "search": round(search_ms, 2)}}


def _nth(step: int) -> str:
    return "frame" if step == 1 else f"{step}{'th' if 10 <= step % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(step % 10, 'th')} frame"


def video_lines(r: dict) -> list[str]:
    """The text ``enroll identify VIDEO`` prints: one line on the video, one per track."""
    v, s = r["video"], r["sampling"]
    lines = [f"{r['source']}: {v['frames']} frames, {v['fps']:g} fps, {v['width']}x{v['height']}; "
             f"{r['frames_sampled']} sampled (every {_nth(s['every_n_frames'])}, {s['fps']:g} a second); "
             f"{len(r['tracks'])} track{'s' if len(r['tracks']) != 1 else ''}; "
             f"{r['sampled_frames_per_s']:.1f} sampled frames/s ({r['video_frames_per_s']:.1f} video frames/s)"]
    for t in r["tracks"]:
        distance = f"distance {t['distance']:.4f}, τ {r['threshold']:.4f}" if t["distance"] is not None else "gallery empty"
        lines.append(f"track {t['track']}: frames {t['first_frame']}-{t['last_frame']} "
                     f"({t['first_s']:.2f}-{t['last_s']:.2f} s, {t['frames']} sampled)  {t['name']} ({distance})  "
                     f"detect {t['timing_ms']['detect']:.0f} ms, embed {t['timing_ms']['embed']:.0f} ms, "
                     f"search {t['timing_ms']['search']:.2f} ms")
    return lines + ([f"note: {r['note']}"] if r["note"] else [])
