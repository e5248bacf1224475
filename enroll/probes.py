"""What the promotion gate shows the models: enrolled faces, changed people's unseen photos, strangers.

A changed person (enrolled or appended to since the production model) is judged on photos the
candidate never trained on:
- their held-out photo: enrolment with two or more photos keeps one out of the retraining export
  (``gallery.held_out_row``); it is still in the gallery for ``identify``, just not for training;
- else (enrolled from one photo) strong augmentations of each enrolment crop: random scale
  0.85–1.15, rotation ±12°, translation ±8 %, brightness, contrast, saturation, sometimes grey,
  sometimes blurred; ``AUGMENTATIONS`` per crop, seeded by the crop's hash, so production and
  candidate see the same probes and a rerun sees them again. Never a plain mirror image.
The gallery those probes are matched against is every enrolled person's faces that are not held
out (a held-out face must not find itself). Strangers are photos of the base data's held-out
identities, whom nobody enrolled.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

AUGMENTATIONS = 8  # strong augmentations per enrolment crop of a person without a held-out photo


@dataclass
class Faces:
    names: list[str]
    pixels: np.ndarray  # (n, s, s, 3) uint8

    def __len__(self) -> int:
        return len(self.names)


@dataclass
class GateFaces:
    gallery: Faces  # every enrolled face that is not held out: what probes are matched against
    everyone: Faces  # every enrolled face: the gallery a stranger meets in `enroll identify`
    probes: Faces  # changed people's photos the candidate never trained on
    held_out_probes: int
    augmented_probes: int


def strong_augmentation(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random geometric + photometric variant of an aligned crop (no flip)."""
    from PIL import Image, ImageEnhance, ImageFilter

    size = pixels.shape[0]
    image = Image.fromarray(np.asarray(pixels, np.uint8))
    scale, angle = rng.uniform(0.85, 1.15), np.deg2rad(rng.uniform(-12.0, 12.0))
    tx, ty = rng.uniform(-0.08, 0.08, 2) * size
    # PIL maps each output pixel to an input position: the inverse of scale-rotate-translate about the centre.
    cos, sin, centre = np.cos(angle) / scale, np.sin(angle) / scale, (size - 1) / 2
    a, b, d, e = cos, sin, -sin, cos
    matrix = (a, b, centre - a * (centre + tx) - b * (centre + ty), d, e, centre - d * (centre + tx) - e * (centre + ty))
    fill = tuple(int(v) for v in np.asarray(pixels).reshape(-1, 3).mean(0))
    image = image.transform((size, size), Image.AFFINE, matrix, resample=Image.BILINEAR, fillcolor=fill)
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.7, 1.3))
    image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.7, 1.3))
    image = ImageEnhance.Color(image).enhance(rng.uniform(0.6, 1.4))
    if rng.uniform() < 0.3:
        image = image.convert("L").convert("RGB")
    if rng.uniform() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5) * size / 96))
    return np.asarray(image, np.uint8)


def augmentations(pixels: np.ndarray, seed: str, count: int = AUGMENTATIONS) -> np.ndarray:
    """``count`` strong augmentations of one crop, the same every time for the same ``seed`` (its hash)."""
    rng = np.random.default_rng(int(seed[:16], 16))
    return np.stack([strong_augmentation(pixels, rng) for _ in range(count)])


def gate_faces(gallery, changed: list[str], image_size: int) -> GateFaces:
    """The gallery, the changed people's probes and their counts, read once for both models."""
    from enroll.crops import decode_png
    from enroll.gallery import GalleryError

    names, crops, held, shas = [], [], [], []
    for name, _ in gallery.list_people():
        person = gallery.get(name)
        for face in person.faces if person else []:
            try:
                crops.append(decode_png(gallery.crop(face.sha256), image_size))
            except GalleryError:
                continue  # removed meanwhile
            names.append(name)
            held.append(face.held_out)
            shas.append(face.sha256)
    empty = np.zeros((0, image_size, image_size, 3), np.uint8)
    pixels = np.stack(crops) if crops else empty
    keep = [i for i in range(len(names)) if not held[i]]
    probe_names, probe_pixels, from_held = [], [], 0
    for name in changed:
        rows = [i for i, n in enumerate(names) if n == name]
        unseen = [i for i in rows if held[i]]
        if unseen:
            batch = pixels[unseen]
        else:
            batch = np.concatenate([augmentations(pixels[i], shas[i]) for i in rows]) if rows else empty
        probe_pixels.append(batch)
        probe_names += [name] * len(batch)
        from_held += len(unseen)
    probes = Faces(probe_names, np.concatenate(probe_pixels) if probe_pixels else empty)
    return GateFaces(Faces([names[i] for i in keep], pixels[keep] if keep else empty), Faces(names, pixels),
                     probes, from_held, len(probes) - from_held)
