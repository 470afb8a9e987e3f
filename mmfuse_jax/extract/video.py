"""Per-frame face features from OpenCV's bundled Haar cascades (no model download, CPU only).

Why OpenCV and not MediaPipe: ``opencv-python-headless`` 4.x ships its Haar cascades inside the
wheel (``cv2.data.haarcascades``) and needs nothing else; MediaPipe's current FaceLandmarker needs a
``.task`` model file fetched separately, and the legacy ``solutions`` API is gone from recent wheels.
OpenCV 5 dropped the cascades, hence ``opencv-python-headless>=4.8,<5``.

Channels per frame (`CHANNELS`; the order is the feature order):

* ``face``: 1 when a frontal face was found in the frame, else 0. Every face channel below is 0 on a
  no-face frame, so a model sees "no face" rather than a made-up face.
* ``cx cy w h``: the largest face's box (centre and size) as fractions of the frame.
* ``eyes``: eyes found in the upper half of the face (0, 0.5, 1); ``lx ly rx ry``: the left and right
  eye centres as fractions of the face box (0 when not found).
* ``smile``, ``smile_w``: a smile found in the lower half of the face, and its width / face width.
* ``bright``, ``contrast``: mean and standard deviation of the face's grey levels (/255).
* ``face_motion``: mean absolute change of the face crop since the previous frame (/255; 0 when
  either frame has no face); ``motion``: the same over the whole frame (always set).
* ``crop_0 ... crop_{n*n-1}``: the face crop scaled to ``crop x crop`` and standardised (a coarse
  appearance code, in the spirit of landmark/blend-shape vectors).
"""
from __future__ import annotations

import functools
from collections.abc import Iterable

import numpy as np

BASE_CHANNELS = ("face", "cx", "cy", "w", "h", "eyes", "lx", "ly", "rx", "ry", "smile", "smile_w", "bright",
                 "contrast", "face_motion", "motion")
CASCADES = {"face": "haarcascade_frontalface_default.xml", "eye": "haarcascade_eye.xml",
            "smile": "haarcascade_smile.xml"}


def channels(crop: int) -> list[str]:
    return [*BASE_CHANNELS, *(f"crop_{i}" for i in range(crop * crop))]


@functools.cache
def _cascade(name: str):
    import cv2

    path = cv2.data.haarcascades + CASCADES[name]
    c = cv2.CascadeClassifier(path)
    if c.empty():
        raise RuntimeError(f"OpenCV cascade {path} could not be loaded (opencv-python-headless>=4.8,<5 ships it)")
    return c


def _largest(boxes) -> tuple[int, int, int, int] | None:
    if boxes is None or len(boxes) == 0:
        return None
    return tuple(int(v) for v in max(boxes, key=lambda b: b[2] * b[3]))


def _eyes(upper: np.ndarray, fw: int, fh: int) -> list[float]:
    found = _cascade("eye").detectMultiScale(upper, scaleFactor=1.1, minNeighbors=5,
                                             minSize=(max(4, fw // 10), max(4, fw // 10)))
    eyes = sorted(sorted(found, key=lambda b: -b[2] * b[3])[:2], key=lambda b: b[0]) if len(found) else []
    pos = [0.0] * 4
    for i, (x, y, w, h) in enumerate(eyes):
        pos[2 * i: 2 * i + 2] = [(x + w / 2) / fw, (y + h / 2) / fh]
    return [len(eyes) / 2, *pos]


def _smile(lower: np.ndarray, fw: int) -> list[float]:
    box = _largest(_cascade("smile").detectMultiScale(lower, scaleFactor=1.2, minNeighbors=15,
                                                      minSize=(max(4, fw // 5), max(4, fw // 10))))
    return [0.0, 0.0] if box is None else [1.0, box[2] / fw]


def frame_features(gray: np.ndarray, prev: np.ndarray | None, prev_face: np.ndarray | None, *, crop: int,
                   min_face: int) -> tuple[np.ndarray, np.ndarray | None]:
    """One frame's features and its 16 x 16 face crop (for the next frame's ``face_motion``)."""
    import cv2

    H, W = gray.shape
    out = np.zeros(len(BASE_CHANNELS) + crop * crop, np.float32)
    if prev is not None and prev.shape == gray.shape:
        out[15] = np.mean(np.abs(gray.astype(np.float32) - prev.astype(np.float32))) / 255.0
    box = _largest(_cascade("face").detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5,
                                                     minSize=(min_face, min_face)))
    if box is None:
        return out, None
    x, y, w, h = box
    face = gray[y:y + h, x:x + w]
    small = cv2.resize(face, (16, 16), interpolation=cv2.INTER_AREA).astype(np.float32)
    out[:5] = [1.0, (x + w / 2) / W, (y + h / 2) / H, w / W, h / H]
    out[5:10] = _eyes(face[: h // 2], w, h)
    out[10:12] = _smile(face[h // 2:], w)
    out[12:14] = [face.mean() / 255.0, face.std() / 255.0]
    if prev_face is not None:
        out[14] = np.mean(np.abs(small - prev_face)) / 255.0
    c = cv2.resize(face, (crop, crop), interpolation=cv2.INTER_AREA).astype(np.float32).reshape(-1)
    out[16:] = (c - c.mean()) / (c.std() + 1e-6)
    return out, small


def features(frames: Iterable[np.ndarray], *, crop: int = 8, min_face: int = 24) -> np.ndarray:
    """``[T, 16 + crop^2]`` features of grey frames ``[H, W]`` (see the module docstring)."""
    rows, prev, prev_face = [], None, None
    for gray in frames:
        row, prev_face = frame_features(gray, prev, prev_face, crop=crop, min_face=min_face)
        rows.append(row)
        prev = gray
    return np.stack(rows)
