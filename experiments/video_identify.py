"""Throughput of ``enroll identify VIDEO`` on this CPU: a clip made from photos, a real production model.

    nice -n 10 python -m experiments.video_identify [--run runs/s13-distill-40ep] [--photos ../shared/data/lfw_mini]
        [--seconds 10] [--out experiments/results/video_identify.json]

Three people are enrolled one-shot (their first photo, sorted by file) in a fresh home whose production
model is ``--run``; the clip (25 fps, 640×360, MPEG-4 Part 2 as OpenCV writes it) shows other photos
of them and of a stranger: the first person drifting across the frame, the second, the stranger, then
the first and the third side by side. ``identify_video`` runs on it at several samplings; per sampling:
sampled frames and video frames processed per second of wall time (decode, detect, align, embed,
track, search; the model and detector already loaded) and per CPU-second of this process (which a
shared machine's load does not inflate), time by stage, and the tracks' answers against the scenes'
true names (``true_name``: the photo under the track's first box). ``make_clip`` is also how tests/test_video.py makes its clips.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from experiments import results_file

RESULTS = Path(__file__).resolve().parent / "results" / "video_identify.json"
FPS = 25
SIZE = (640, 360)  # width, height
SAMPLINGS = (("5 fps (default)", None, None), ("every frame", 1, None), ("1 fps", None, 1.0))


@dataclass
class Scene:
    """``seconds`` of the photos side by side (RGB arrays), centred (moved ``offset`` px right),
    drifting ``drift`` px a second."""
    photos: list[np.ndarray]
    seconds: float
    drift: float = 0.0
    offset: int = 0
    names: list[str] = field(default_factory=list)  # who they are (for scoring; "" for a stranger)


def make_clip(path, scenes: list[Scene], fps: int = FPS, size: tuple[int, int] = SIZE) -> Path:
    """Write the scenes as one video (codec by suffix: .mp4 MPEG-4, .avi MJPEG); returns ``path``."""
    import cv2

    path = Path(path)
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if path.suffix.lower() == ".avi" else "mp4v"))
    writer = cv2.VideoWriter(str(path), fourcc, fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path.suffix} video here")
    try:
        for scene in scenes:
            for k in range(round(scene.seconds * fps)):
                writer.write(cv2.cvtColor(_frame(scene, k / fps, size), cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path


def _frame(scene: Scene, t: float, size: tuple[int, int]) -> np.ndarray:
    width, height = size
    canvas = np.full((height, width, 3), 90, np.uint8)
    total = sum(p.shape[1] for p in scene.photos)
    x = (width - total) // 2 + scene.offset + int(round(scene.drift * t))
    for photo in scene.photos:
        h, w = photo.shape[:2]
        y = (height - h) // 2
        left, right = max(x, 0), min(x + w, width)
        if right > left:
            canvas[y:y + h, left:right] = photo[:, left - x:right - x]
        x += w
    return canvas


def scenes_from(photos: Path, seconds: float) -> tuple[dict[str, str], list[Scene]]:
    """({enrolled name: enrolment photo}, the clip's scenes) from an identity folder of photos."""
    from trainer.align import read_image

    people = sorted(p for p in photos.iterdir() if p.is_dir() and len(list(p.glob("*.jpg"))) >= 3)[:4]
    if len(people) < 4:
        raise SystemExit(f"{photos}: need 4 identity folders with 3+ photos each")
    files = {p.name: sorted(p.glob("*.jpg")) for p in people}
    a, b, stranger, c = (p.name for p in people)
    enrol = {n: str(files[n][0]) for n in (a, b, c)}
    shot = {n: read_image(files[n][1]) for n in (a, b, stranger, c)}
    part = seconds / 10
    return enrol, [Scene([shot[a]], 3 * part, drift=20, names=[a]), Scene([shot[b]], 3 * part, names=[b]),
                   Scene([shot[stranger]], 2 * part, names=[""]), Scene([shot[a], shot[c]], 2 * part, names=[a, c])]


def true_name(scenes: list[Scene], time_s: float, box: dict, size: tuple[int, int] = SIZE) -> str:
    """Who a track is: the scene on screen at ``time_s``, the photo under the box's centre ("unknown"
    for a stranger or no photo)."""
    start = 0.0
    for scene in scenes:
        if time_s < start + scene.seconds:
            x = (size[0] - sum(p.shape[1] for p in scene.photos)) // 2 + scene.offset
            x += int(round(scene.drift * (time_s - start)))
            centre = box["x"] + box["width"] / 2
            for photo, name in zip(scene.photos, scene.names):
                if x <= centre < x + photo.shape[1]:
                    return name or "unknown"
                x += photo.shape[1]
            return "unknown"
        start += scene.seconds
    return "unknown"


def measure(home: Path, clip: Path, scenes: list[Scene]) -> list[dict]:
    from enroll.store import SqliteGallery
    from enroll.video import Sampling
    from enroll.video_identify import identify_video

    rows = []
    with SqliteGallery(home) as gallery:
        identify_video(gallery, home, clip, Sampling(fps=1.0))  # warm-up: model, detector, graph traces
        for label, every, fps in SAMPLINGS:
            load, cpu = os.getloadavg()[0], time.process_time()
            r = identify_video(gallery, home, clip, Sampling(every, fps))
            cpu = time.process_time() - cpu  # all this process's threads: what the work costs, whatever else runs
            answered = [t["name"] for t in r["tracks"]]
            truth = [true_name(scenes, t["first_s"], t["box"]) for t in r["tracks"]]
            rows.append({"sampling": label, "every_n_frames": r["sampling"]["every_n_frames"],
                         "frames": r["video"]["frames"], "frames_sampled": r["frames_sampled"], "faces": r["faces"],
                         "tracks": len(r["tracks"]), "names": answered, "true_names": truth,
                         "right": sum(a == t for a, t in zip(answered, truth)),
                         "unknown_instead": sum(a == "unknown" != t for a, t in zip(answered, truth)),
                         "wrong": sum(a not in ("unknown", t) for a, t in zip(answered, truth)),
                         "nearest_right": sum(bool(x["candidates"]) and x["candidates"][0]["name"] == t
                                              for x, t in zip(r["tracks"], truth) if t != "unknown"),
                         "timing_ms": r["timing_ms"], "sampled_frames_per_s": r["sampled_frames_per_s"],
                         "video_frames_per_s": r["video_frames_per_s"],
                         "realtime_factor": round(r["video_frames_per_s"] / r["video"]["fps"], 3),
                         "cpu_s": round(cpu, 2), "sampled_frames_per_cpu_s": round(r["frames_sampled"] / cpu, 2),
                         "video_frames_per_cpu_s": round(r["video"]["frames"] / cpu, 2), "load_average": load,
                         "per_track": [{**{k: t[k] for k in ("track", "first_s", "last_s", "frames", "name", "distance",
                                                             "timing_ms")},
                                        "nearest": t["candidates"][0]["name"] if t["candidates"] else None}
                                       for t in r["tracks"]]})
            print(f"{label}: {r['sampled_frames_per_s']} sampled frames/s, {r['video_frames_per_s']} video frames/s, "
                  f"tracks {answered}", flush=True)
    return rows


def markdown(result: dict) -> str:
    lines = ["| sampling | frames sampled | tracks (right / unknown instead / wrong) | sampled frames/s (wall) | video frames/s (wall) | × real time | "
             "sampled frames per CPU-s | decode / detect / embed / track+search ms | load |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        t = r["timing_ms"]
        lines.append(f"| {r['sampling']} | {r['frames_sampled']} of {r['frames']} | "
                     f"{r['tracks']} ({r['right']} / {r['unknown_instead']} / {r['wrong']}) | "
                     f"{r['sampled_frames_per_s']:.1f} | {r['video_frames_per_s']:.1f} | {r['realtime_factor']:.2f} | "
                     f"{r['sampled_frames_per_cpu_s']:.1f} | "
                     f"{t['decode']:.0f} / {t['detect']:.0f} / {t['embed']:.0f} / {t['track'] + t['search']:.0f} | "
                     f"{r['load_average']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.video_identify", description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/s13-distill-40ep", help="the production model's run")
    parser.add_argument("--photos", default=str(Path(__file__).resolve().parents[1].parent / "shared/data/lfw_mini"))
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    from enroll.model_versions import register_run
    from enroll.service import add_person
    from enroll.store import SqliteGallery

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        register_run(args.run, home)
        enrol, scenes = scenes_from(Path(args.photos), args.seconds)
        with SqliteGallery(home) as gallery:
            for name, photo in enrol.items():
                add_person(gallery, home, name, [photo])
        clip = make_clip(Path(tmp) / "clip.mp4", scenes)
        rows = measure(home, clip, scenes)
    result = {"command": results_file.command("video_identify", argv), "run": args.run, "photos": args.photos,
              "clip": {"seconds": args.seconds, "fps": FPS, "width": SIZE[0], "height": SIZE[1], "codec": "mp4v",
                       "scenes": [{"seconds": s.seconds, "names": s.names, "drift_px_s": s.drift} for s in scenes]},
              "enrolled": sorted(enrol), "cpus": os.cpu_count(), "rows": rows}
    results_file.publish(args.out, result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
