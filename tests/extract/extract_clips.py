"""Media clips built with PyAV for the extraction tests: a moving square and a pure tone."""
from __future__ import annotations

import fractions

import numpy as np

CONTAINERS = {"mp4": ("mpeg4", "aac"), "mkv": ("ffv1", "flac"), "webm": ("libvpx", "libopus")}


def write_clip(path: str, *, seconds: float = 1.0, tone: float = 220.0, fps: int = 15, rate: int = 48000,
               size: tuple[int, int] = (96, 64), start: int = 0) -> str:
    """A clip at ``path`` whose container is its extension: a white square moving right over grey
    (starting ``start`` px in) and a sine tone at ``tone`` Hz (amplitude 0.5)."""
    import av

    vcodec, acodec = CONTAINERS[path.rsplit(".", 1)[-1]]
    w, h = size
    with av.open(path, "w") as out:
        vs = out.add_stream(vcodec, rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p" if vcodec != "ffv1" else "yuv420p"
        a_rate = 48000 if acodec == "libopus" else rate
        ast = out.add_stream(acodec, rate=a_rate)
        ast.layout = "mono"
        for i in range(int(seconds * fps)):
            img = np.full((h, w, 3), 60, np.uint8)
            x = (start + 3 * i) % (w - 16)
            img[h // 2 - 8:h // 2 + 8, x:x + 16] = 255
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            for pkt in vs.encode(frame):
                out.mux(pkt)
        for pkt in vs.encode():
            out.mux(pkt)
        n, chunk = int(seconds * a_rate), 1024
        t = np.arange(n) / a_rate
        y = (0.5 * np.sin(2 * np.pi * tone * t)).astype(np.float32)
        for s in range(0, n, chunk):
            frame = av.AudioFrame.from_ndarray(y[None, s:s + chunk], format="flt", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = a_rate, s, fractions.Fraction(1, a_rate)
            for pkt in ast.encode(frame):
                out.mux(pkt)
        for pkt in ast.encode():
            out.mux(pkt)
    return path
