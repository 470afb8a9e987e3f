"""Decoding with PyAV (its wheels bundle FFmpeg): any container FFmpeg reads.

`audio` returns the first audio stream as mono float32 at a given rate (FFmpeg's resampler);
`video_frames` yields grey frames sampled at ``fps`` (the first decoded frame at or after each
instant k / fps), scaled so the width is at most ``max_width``. A file that cannot be read, or has no
such stream, or nothing in it, is a `MediaError` saying which and why.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np


class MediaError(Exception):
    """A media file that cannot be used (the message says why; the caller names the file)."""


def _open(path: str):
    import av

    try:
        return av.open(path)
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise MediaError(f"not a readable media file ({type(e).__name__}: {e})") from None


def audio(path: str, rate: int) -> np.ndarray:
    """Mono float32 samples at ``rate`` Hz of the first audio stream."""
    import av

    with _open(path) as container:
        if not container.streams.audio:
            raise MediaError("no audio stream")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        chunks = []
        try:
            for frame in container.decode(container.streams.audio[0]):
                chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
            chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
        except av.FFmpegError as e:
            raise MediaError(f"audio stream cannot be decoded ({type(e).__name__}: {e})") from None
    y = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if y.size == 0:
        raise MediaError("the audio stream holds no samples")
    return y


def video_frames(path: str, fps: float, max_width: int) -> Iterator[np.ndarray]:
    """Grey frames ``[H, W]`` uint8 sampled at ``fps``, one at a time (a long clip never sits in memory)."""
    import av

    with _open(path) as container:
        if not container.streams.video:
            raise MediaError("no video stream")
        n, next_t, last_t = 0, 0.0, 0.0
        try:
            for frame in container.decode(container.streams.video[0]):
                t = float(frame.time) if frame.time is not None else last_t
                last_t = t
                if t + 1e-6 < next_t:
                    continue
                w, h = frame.width, frame.height
                if w > max_width:
                    w, h = max_width, max(2, round(frame.height * max_width / frame.width / 2) * 2)
                n += 1
                yield frame.reformat(width=w, height=h, format="gray").to_ndarray()
                while next_t <= t + 1e-6:
                    next_t += 1.0 / fps
        except av.FFmpegError as e:
            raise MediaError(f"video stream cannot be decoded ({type(e).__name__}: {e})") from None
    if not n:
        raise MediaError("the video stream holds no frames")
