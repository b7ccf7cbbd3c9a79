"""Find the face in a photo and crop it, with OpenCV's Haar cascades (no download, no research model).

The detector is the Viola-Jones cascade that ships inside the ``opencv-python-headless`` wheel
(``cv2.data.haarcascades``, Intel's BSD-licensed ``haarcascade_frontalface_default.xml``, then
``..._alt2.xml``, then ``haarcascade_profileface.xml`` on the photo and its mirror image for faces
turned sideways). Nothing is fetched at run time and no InsightFace model is used: those are
licensed for non-commercial research only (see docs/models.md).

Work is bounded: the photo is shrunk so that its longer side is at most :data:`DETECT_MAX_SIDE`
pixels before the detector sees it, whatever size it came in.

Biometric data. A face box, a face crop and anything computed from them (an IP-Adapter image
embedding) are biometric data in the sense of GDPR Art. 9 and PIPL Art. 28. This module keeps
them in memory only: it writes no file, keeps no cache of photos, crops or boxes, and logs
nothing about a face (no coordinates, no count). Whoever calls it owns what it returns and must
drop it when the job ends, however it ends: in Obscura that is the job's own code in
``core/control.py``, which keeps the crop in a local variable, never puts it (or a box) in a
result, a log line or a picture's metadata, and lets it go with the job. A caller may say "a face
was found: yes/no" and nothing else face-derived.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

DETECT_MAX_SIDE = 1024  # the detector never sees more than this many pixels on the longer side
CASCADES = (
    "haarcascade_frontalface_default.xml",
    "haarcascade_frontalface_alt2.xml",
)
PROFILE_CASCADE = "haarcascade_profileface.xml"
SCALE_FACTOR = 1.1  # detectMultiScale's pyramid step
MIN_NEIGHBORS = 5  # overlapping hits needed for a face: fewer gives false faces in noise
MIN_FACE_FRACTION = 0.06  # a face smaller than this part of the shorter side is not the subject
MAX_PADDING = 2.0
MIN_CROP_SIZE, MAX_CROP_SIZE = 16, 1024


@dataclass(frozen=True)
class FaceBox:
    """A face's box in the original photo's pixels (biometric data: keep it in memory only)."""

    x: int
    y: int
    width: int
    height: int

    @property
    def area(self) -> int:
        return self.width * self.height


_cascades: dict[str, Any] = {}
_lock = threading.Lock()  # one detection at a time: a CascadeClassifier is not re-entrant


def _cascade(name: str) -> Any:
    """The classifier for one shipped cascade file, loaded once (it is a model, not face data)."""
    import cv2

    classifier = _cascades.get(name)
    if classifier is None:
        folder = str(cv2.data.haarcascades)  # type: ignore[attr-defined]  # (not in cv2's stubs)
        classifier = cv2.CascadeClassifier(folder + name)
        if classifier.empty():
            raise RuntimeError(f"OpenCV's {name} is missing from the opencv-python-headless wheel")
        _cascades[name] = classifier
    return classifier


def _grey(image: Image.Image) -> tuple[np.ndarray, float]:
    """The photo in grey, at most DETECT_MAX_SIDE px on its longer side, and the factor used."""
    import cv2

    width, height = image.size
    scale = min(1.0, DETECT_MAX_SIDE / max(width, height, 1))
    if scale < 1.0:
        image = image.resize(
            (max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.BOX
        )
    grey = np.asarray(image.convert("L"), dtype=np.uint8)
    return cv2.equalizeHist(grey), scale


def _detect(name: str, grey: np.ndarray, min_side: int) -> list[tuple[int, int, int, int]]:
    found = _cascade(name).detectMultiScale(
        grey, scaleFactor=SCALE_FACTOR, minNeighbors=MIN_NEIGHBORS, minSize=(min_side, min_side)
    )
    return [tuple(int(v) for v in box) for box in found]  # type: ignore[misc]


def find_faces(image: Image.Image) -> list[FaceBox]:
    """Every face found in ``image``, largest first (empty when there is none).

    Boxes are in ``image``'s own pixels. Frontal cascades first; only when they find nothing,
    the profile cascade on the photo and on its mirror image."""
    grey, scale = _grey(image)
    min_side = max(20, round(min(grey.shape) * MIN_FACE_FRACTION))
    with _lock:
        boxes: list[tuple[int, int, int, int]] = []
        for name in CASCADES:
            boxes = _detect(name, grey, min_side)
            if boxes:
                break
        if not boxes:
            boxes = _detect(PROFILE_CASCADE, grey, min_side)
            if not boxes:
                mirrored = np.ascontiguousarray(grey[:, ::-1])
                width = grey.shape[1]
                boxes = [
                    (width - x - w, y, w, h)
                    for x, y, w, h in _detect(PROFILE_CASCADE, mirrored, min_side)
                ]
    faces = [
        FaceBox(round(x / scale), round(y / scale), round(w / scale), round(h / scale))
        for x, y, w, h in boxes
    ]
    return sorted(faces, key=lambda face: face.area, reverse=True)


def crop_box(face: FaceBox, image_size: tuple[int, int], padding: float) -> tuple[int, int, int, int]:
    """The square (left, top, right, bottom) around ``face`` with ``padding`` of its size added
    on each side (as Fooocus and IP-Adapter crop faces), moved and shrunk to fit the photo."""
    if not 0.0 <= padding <= MAX_PADDING:
        raise ValueError(f"padding must be 0..{MAX_PADDING}")
    width, height = image_size
    side = round(max(face.width, face.height) * (1 + 2 * padding))
    side = max(1, min(side, width, height))
    centre_x = face.x + face.width / 2
    centre_y = face.y + face.height / 2
    left = int(min(max(0, round(centre_x - side / 2)), width - side))
    top = int(min(max(0, round(centre_y - side / 2)), height - side))
    return left, top, left + side, top + side


def crop_face(
    image: Image.Image, *, padding: float = 0.5, size: int | None = 224
) -> Image.Image | None:
    """The largest face in ``image`` as a square RGB picture (``size`` px, or as cropped when
    None), or None when no face is found. Biometric data: the caller drops it with the job."""
    if size is not None and not MIN_CROP_SIZE <= size <= MAX_CROP_SIZE:
        raise ValueError(f"size must be {MIN_CROP_SIZE}..{MAX_CROP_SIZE} or None")
    faces = find_faces(image)
    if not faces:
        return None
    crop = image.convert("RGB").crop(crop_box(faces[0], image.size, padding))
    if size is not None and crop.size != (size, size):
        crop = crop.resize((size, size), Image.Resampling.LANCZOS)
    return crop
