"""The face crop finds the face in a real photo, none in a blank or noisy picture, and the
detector never sees more than DETECT_MAX_SIDE pixels, whatever size the photo is."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core import faces

FACE = Path(__file__).resolve().parents[1] / "data" / "astronaut-256.png"
KNOWN = (86, 31, 53, 53)  # where OpenCV's frontal cascade finds the astronaut's face


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = w * h
    return inter / (aw * ah + bw * bh - inter)


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return Image.open(FACE).convert("RGB")


def test_the_astronauts_face_is_found_where_it_is(photo: Image.Image):
    found = faces.find_faces(photo)
    assert len(found) == 1
    box = found[0]
    assert _overlap((box.x, box.y, box.width, box.height), KNOWN) > 0.6


def test_a_blank_picture_and_noise_have_no_face():
    assert faces.find_faces(Image.new("RGB", (256, 256), "white")) == []
    assert faces.crop_face(Image.new("RGB", (300, 200), "black")) is None
    noise = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    assert faces.find_faces(Image.fromarray(noise)) == []


def test_the_crop_is_a_padded_square_around_the_face(photo: Image.Image):
    crop = faces.crop_face(photo, padding=0.5, size=224)
    assert crop is not None and crop.size == (224, 224) and crop.mode == "RGB"
    raw = faces.crop_face(photo, padding=0.5, size=None)
    assert raw is not None
    side = raw.size[0]
    assert raw.size == (side, side)
    assert 53 * 2 - 4 <= side <= 53 * 2 + 4  # the box plus half of it on each side
    # the crop holds the face: the face is found again in it, filling most of it
    again = faces.find_faces(raw)
    assert again and again[0].width > side * 0.3
    # no padding: the crop is just the box, smaller than the padded one
    tight = faces.crop_face(photo, padding=0.0, size=None)
    assert tight is not None and tight.size[0] < side


def test_the_crop_box_stays_inside_the_picture():
    box = faces.crop_box(faces.FaceBox(0, 0, 40, 40), (100, 80), padding=1.0)
    left, top, right, bottom = box
    assert left >= 0 and top >= 0 and right <= 100 and bottom <= 80
    assert right - left == bottom - top == 80  # as large as fits


def test_a_huge_photo_is_shrunk_before_the_detector_sees_it(photo: Image.Image, monkeypatch):
    seen: list[tuple[int, ...]] = []
    real = faces._cascade

    class Recording:
        def __init__(self, name: str) -> None:
            self.inner = real(name)

        def detectMultiScale(self, grey, **kwargs):  # noqa: N802 (OpenCV's name)
            seen.append(grey.shape)
            return self.inner.detectMultiScale(grey, **kwargs)

    monkeypatch.setattr(faces, "_cascade", Recording)
    huge = photo.resize((4000, 3000))
    found = faces.find_faces(huge)
    assert seen and all(max(shape) <= faces.DETECT_MAX_SIDE for shape in seen)
    assert found  # and the face is still found, in the big photo's own pixels
    box = found[0]
    scale = 4000 / 256
    assert _overlap(
        (box.x, box.y, box.width, box.height),
        tuple(round(v * s) for v, s in zip(KNOWN, (scale, 3000 / 256, scale, 3000 / 256))),
    ) > 0.3


def test_nothing_about_a_face_is_logged_or_written(photo: Image.Image, caplog, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.DEBUG):
        assert faces.crop_face(photo) is not None
    assert caplog.records == []
    assert list(tmp_path.iterdir()) == []


def test_bad_sizes_are_refused(photo: Image.Image):
    with pytest.raises(ValueError):
        faces.crop_face(photo, size=5)
    with pytest.raises(ValueError):
        faces.crop_face(photo, padding=-1)


def test_a_face_turned_the_other_way_is_found_on_the_mirror_image(monkeypatch):
    """The profile cascade knows faces turned one way only; the other way is found on the mirror
    image, and its box is put back where the face is in the photo."""
    picture = Image.new("RGB", (200, 100))
    calls: list[str] = []

    def fake_detect(name: str, grey: np.ndarray, min_side: int):
        calls.append(name)
        mirrored = grey[0, 0] == 255  # the photo has a white right edge, so its mirror a white left
        if name == faces.PROFILE_CASCADE and mirrored:
            return [(10, 20, 30, 30)]  # found on the mirror image, 10 px from its left side
        return []

    grey = np.zeros((100, 200), dtype=np.uint8)
    grey[:, -1] = 255  # white right edge (the mirror image's left)
    monkeypatch.setattr(faces, "_grey", lambda image: (grey, 1.0))
    monkeypatch.setattr(faces, "_detect", fake_detect)
    found = faces.find_faces(picture)
    assert calls == [*faces.CASCADES, faces.PROFILE_CASCADE, faces.PROFILE_CASCADE]
    assert found == [faces.FaceBox(200 - 10 - 30, 20, 30, 30)]
