"""``enroll cluster DIR``: group the faces of a folder of photos by identity, without labels.

    enroll cluster photos/ [--min-size 2] [--method chinese_whispers|agglomerative|dbscan] [--enroll-as PREFIX]

Every photo under DIR (recursively; hidden files and folders skipped) goes through the path identify
uses: ``service.align_photo`` (MTCNN, 5-point alignment at the production model's input size) and the
production model's ``embed_pixels``. The aligner keeps one face a photo, so a group photo contributes
its largest face, and its line says so. The faces are grouped by ``enroll.clustering`` at the
production model's τ (default method: enroll.yaml's ``cluster_method``). Groups of at least
``--min-size`` faces are printed largest first, numbered from 1; smaller ones are listed as ungrouped.

``--enroll-as PREFIX`` enrols group n as the person ``PREFIX-n`` through ``service.add_person``, the
path of ``enroll add-person`` (duplicate crops refused, a held-out face, look-alike warnings, then the
retraining policy once), after checking that none of those names is taken: a refusal stores nothing.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from enroll.gallery import GalleryError, validate_name
from enroll.home import face_template


@dataclass
class Group:
    id: int  # 1 = the largest group
    members: list[str]  # photo paths relative to DIR
    enrolled_as: str | None = None
    error: str | None = None  # why its enrolment failed, when it did

    @property
    def size(self) -> int:
        return len(self.members)


@dataclass
class Clustering:
    """What one ``enroll cluster`` found: every photo's fate, the groups and the rest."""
    folder: str
    method: str
    implementation: str
    threshold: float
    model_version: int
    min_size: int
    photos: list[dict] = field(default_factory=list)  # {"source", "accepted", "reason"}, as add-person reports
    groups: list[Group] = field(default_factory=list)
    ungrouped: list[str] = field(default_factory=list)  # faces in groups smaller than min_size

    def to_dict(self) -> dict:
        out = asdict(self)
        out["faces"] = sum(p["accepted"] for p in self.photos)
        for group, row in zip(self.groups, out["groups"]):
            row["size"] = group.size
        return out


def add_parser(sub, common) -> None:
    from enroll.clustering import METHODS

    p = sub.add_parser("cluster", parents=[common], help="group the faces of a folder of photos by identity")
    p.add_argument("folder", metavar="DIR", help="a folder of photos (searched recursively)")
    p.add_argument("--min-size", type=int, default=2, help="faces a group needs to be listed and enrolled (default 2)")
    p.add_argument("--method", choices=METHODS, default=None,
                   help="grouping at the production model's τ (default: enroll.yaml's cluster_method, chinese_whispers)")
    p.add_argument("--enroll-as", metavar="PREFIX", default=None,
                   help="enrol each group as a new person PREFIX-<group id>, as add-person does")


def find_photos(folder: Path) -> list[Path]:
    """Image files under ``folder``, sorted; hidden files and folders are skipped, links to folders not followed."""
    from trainer.align import IMAGE_EXTENSIONS

    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root) / f for f in files if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(found)


def check_request(args, home) -> tuple[Path, list[Path], str]:
    """Refuse bad input before any slow work: (the folder, its photos, the method)."""
    from enroll.model_versions import production_meta
    from enroll.settings import load_settings

    if args.min_size < 1:
        raise GalleryError(f"--min-size must be at least 1, got {args.min_size}")
    folder = Path(args.folder)
    if not os.path.isdir(args.folder):
        raise GalleryError(f"not a folder: {args.folder}")
    photos = find_photos(folder)
    if not photos:
        raise GalleryError(f"no photos under {args.folder} (looked for .jpg, .jpeg, .png, .pgm, .bmp, .webp)")
    if args.enroll_as is not None:
        validate_name(args.enroll_as)
        try:
            validate_name(person_name(args.enroll_as, len(photos)))  # the longest name it could make
        except GalleryError as exc:
            raise GalleryError(f"--enroll-as {args.enroll_as!r} makes no valid name: {exc}") from None
    production_meta(home)
    method = args.method or load_settings(home).cluster_method
    if args.enroll_as is not None:
        check_prefix_free(home, args.enroll_as)
    return folder, photos, method


def check_prefix_free(home, prefix: str) -> None:
    """No one enrolled may already be called PREFIX-<number>: group n of this run would collide."""
    import re

    from enroll.commands import _gallery

    pattern = re.compile(re.escape(validate_name(prefix)) + r"-\d+")
    with _gallery(home) as gallery:
        taken = [name for name, _ in gallery.list_people() if pattern.fullmatch(name)]
    if taken:
        raise GalleryError(f"{taken[0]!r} is already enrolled ({len(taken)} people are named {prefix}-<n>): "
                           "choose another --enroll-as prefix")


def person_name(prefix: str, group_id: int) -> str:
    return f"{validate_name(prefix)}-{group_id}"


def cluster_folder(home, folder: Path, paths: list[Path], method: str, min_size: int) -> Clustering:
    """Align, embed and group the photos."""
    from enroll.clustering import cluster, implementation
    from enroll.model_versions import embed_pixels, production
    from enroll.service import align_photo

    version, meta, model = production(home)
    if meta.get("threshold") is None:
        raise GalleryError(f"production model {version} has no calibrated τ to cluster at; run `enroll init` again")
    found = Clustering(str(folder), method, implementation(method), float(meta["threshold"]), version, min_size)
    crops, faces = [], []
    for path in paths:
        photo = align_photo(path, meta["image_size"], allow_several=True, template=face_template(meta))
        found.photos.append({"source": relative(path, folder), "accepted": photo.accepted, "reason": photo.reason})
        if photo.accepted:
            crops.append(photo.crop)
            faces.append(path)
    if not faces:
        raise GalleryError(f"no face found in any of the {len(paths)} photos under {folder}")
    labels = cluster(embed_pixels(model, np.stack(crops)), found.threshold, method)
    members = [[relative(faces[i], folder) for i in np.flatnonzero(labels == k)] for k in range(labels.max() + 1)]
    found.groups = [Group(n, m) for n, m in enumerate((m for m in members if len(m) >= min_size), 1)]
    found.ungrouped = sorted(f for m in members if len(m) < min_size for f in m)
    return found


def relative(path: Path, folder: Path) -> str:
    # Undecodable bytes in a file name (surrogate escapes) are kept as \udcff-style text, as add-person does.
    return str(path.relative_to(folder)).encode("utf-8", "backslashreplace").decode("utf-8")


def enrol_groups(home, found: Clustering, folder: Path, prefix: str, notes: list[str]) -> list[dict]:
    """Enrol every group as ``PREFIX-<id>`` (add-person's path); the names are checked first."""
    from enroll.commands import _gallery
    from enroll.retrain import maybe_retrain
    from enroll.service import add_person

    names = {g.id: person_name(prefix, g.id) for g in found.groups}
    with _gallery(home, create=True) as gallery:
        taken = [n for n in names.values() if gallery.get(n) is not None]
        if taken:
            raise GalleryError(f"{taken[0]!r} is already enrolled ({len(taken)} of the names --enroll-as {prefix!r} "
                               "would give are taken): choose another prefix; nothing was stored")
        reports = []
        for group in found.groups:
            try:
                report = add_person(gallery, home, names[group.id], [folder / m for m in group.members],
                                    allow_several=True)
            except GalleryError as exc:
                group.error = str(exc).splitlines()[0]
                notes.append(f"warning: group {group.id} was not enrolled: {group.error}")
                continue
            group.enrolled_as = report["name"]
            reports.append(report)
            for other in report["lookalikes"]:
                notes.append(f"warning: {report['name']!r} looks like {other['name']!r} (distance "
                             f"{other['distance']:.4f} <= τ {report['threshold']:.4f}): the same person twice?")
        if reports:  # the retraining policy once, as add-person applies it after each enrolment
            try:
                submitted = maybe_retrain(home, gallery, "cluster --enroll-as")
            except GalleryError as exc:  # the enrolments are committed: say what did not happen
                notes.append(f"warning: the groups are enrolled, but {str(exc).splitlines()[0]}")
            else:
                if submitted:
                    notes.append(submitted[2])
    return reports


def cmd_cluster(args: argparse.Namespace, home, notes: list[str]):
    folder, paths, method = check_request(args, home)
    found = cluster_folder(home, folder, paths, method, args.min_size)
    several = sum(p["accepted"] and p["reason"].startswith("several faces") for p in found.photos)
    if several:
        notes.append(f"note: {several} photo(s) show several faces; the aligner keeps one face a photo, "
                     "so only the largest of each was clustered")
    enrolled = enrol_groups(home, found, folder, args.enroll_as, notes) if args.enroll_as is not None else []
    result = found.to_dict()
    if args.enroll_as is not None:
        result["enrolled"] = enrolled
    return result, text_lines(found)


def text_lines(found: Clustering) -> list[str]:
    notes = {p["source"]: f"  ({p['reason']})" for p in found.photos if p["accepted"] and p["reason"]}
    lines = []
    for group in found.groups:
        tail = (f"  -> enrolled as {group.enrolled_as!r}" if group.enrolled_as else
                f"  -> not enrolled: {group.error}" if group.error else "")
        lines.append(f"group {group.id}: {group.size} faces{tail}")
        lines += [f"  {m}{notes.get(m, '')}" for m in group.members]
    if found.ungrouped:
        lines.append(f"ungrouped (groups under --min-size {found.min_size}): {len(found.ungrouped)} faces")
        lines += [f"  {m}{notes.get(m, '')}" for m in found.ungrouped]
    lines += [f"rejected  {p['source']}: {p['reason']}" for p in found.photos if not p["accepted"]]
    faces = sum(p["accepted"] for p in found.photos)
    lines.append(f"{len(found.photos)} photos, {faces} faces, {len(found.groups)} groups of at least {found.min_size} "
                 f"({found.method} [{found.implementation}] at τ {found.threshold:.4f}, model version {found.model_version})")
    return lines
