"""Extractor settings (what ``features.json`` records) and the extraction of one media file.

Audio sets (``--audio``):

* ``sims``: CH-SIMS's acoustic features as its paper describes them (Yu et al., ACL 2020, Sec. 4.2:
  librosa with default parameters at 22050 Hz; 1 log F0 + 20 MFCC + 12 constant-Q chroma = 33, the
  audio size of ``unaligned_39.pkl``); librosa's default frame 2048 and hop 512, and its ``yin``
  defaults for F0 (fmin C2, fmax C7, threshold 0.1; which F0 function CH-SIMS called is not stated).
* ``general``: MMSA-FET's librosa example (``example_configs/librosa.json``: MFCC 20, RMS, ZCR) plus a
  log-mel spectrogram, at 16 kHz with 25 ms windows and a 20 ms hop (our choice: speech rates).

Video (``--fps``, ``--crop``): `video.features` at ``fps`` frames per second (MMSA-FET's example
configs use 25; our default is 10 to keep CPU time down; 0.1 s is finer than a facial expression).

`fingerprint` hashes the settings: a run records it (via ``features.json``) and ``predict.py
--media`` extracts with the run's own settings, refusing a record it cannot reproduce.
"""
from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

import numpy as np

from mmfuse_jax.extract import audio as A
from mmfuse_jax.extract import decode
from mmfuse_jax.extract import video as V

VERSION = 1  # bump when a change makes features differ for the same settings

AUDIO_SETS: dict[str, dict[str, Any]] = {
    "sims": {"set": "sims", "sample_rate": 22050, "frame": 2048, "hop": 512, "n_mfcc": 20,
             "f0": {"fmin": 65.4, "fmax": 2093.0, "threshold": 0.1, "fallback": "global_min"},
             "chroma": {"fmin": 32.703, "n_octaves": 7, "bins_per_octave": 36}},
    "general": {"set": "general", "sample_rate": 16000, "frame": 512, "win": 400, "hop": 320, "n_mels": 40,
                "n_mfcc": 20},
}
VIDEO_DEFAULTS: dict[str, Any] = {"fps": 10.0, "max_width": 320, "crop": 8, "min_face": 24}


def make_settings(audio_set: str = "sims", **video) -> dict[str, Any]:
    """The settings dict (``audio``, ``video``, ``version``) with channel names and sizes."""
    if audio_set not in AUDIO_SETS:
        raise ValueError(f"--audio={audio_set!r}: expected one of {sorted(AUDIO_SETS)}")
    a = copy.deepcopy(AUDIO_SETS[audio_set])
    a["channels"] = audio_channels(a)
    a["dim"] = len(a["channels"])
    v = {**VIDEO_DEFAULTS, **{k: val for k, val in video.items() if val is not None}}
    v["detector"] = "opencv-haar:" + ",".join(V.CASCADES.values())
    v["channels"] = V.channels(int(v["crop"]))
    v["dim"] = len(v["channels"])
    return {"version": VERSION, "audio": a, "video": v}


def audio_channels(a: dict) -> list[str]:
    if a["set"] == "sims":
        return ["log_f0", *(f"mfcc_{i}" for i in range(a["n_mfcc"])), *(f"chroma_{i}" for i in range(12))]
    return [*(f"logmel_{i}" for i in range(a["n_mels"])), *(f"mfcc_{i}" for i in range(a["n_mfcc"])), "rms", "zcr"]


def fingerprint(settings: dict) -> str:
    """Hash of what determines the features (channel lists included)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def audio_features(y: np.ndarray, a: dict) -> np.ndarray:
    sr, hop = a["sample_rate"], a["hop"]
    if a["set"] == "sims":
        parts = [A.log_f0(y, sr, frame=a["frame"], hop=hop, **a["f0"]),
                 A.mfcc(y, sr, n_fft=a["frame"], hop=hop, n_mfcc=a["n_mfcc"]),
                 A.chroma_cqt(y, sr, hop=hop, **a["chroma"])]
    else:
        parts = [A.log_mel(y, sr, n_fft=a["frame"], hop=hop, win=a["win"], n_mels=a["n_mels"]),
                 A.mfcc(y, sr, n_fft=a["frame"], hop=hop, win=a["win"], n_mfcc=a["n_mfcc"]),
                 A.rms(y, frame=a["win"], hop=hop), A.zcr(y, frame=a["win"], hop=hop)]
    return np.concatenate(parts, axis=1).astype(np.float32)


def extract_file(path: str, settings: dict, *, silence: float = 1e-4) -> dict[str, np.ndarray]:
    """``{'audio': [Ta, Da], 'video': [Tv, Dv]}`` of one media file; a `decode.MediaError` says why not."""
    a, v = settings["audio"], settings["video"]
    if settings.get("version") != VERSION:
        raise decode.MediaError(f"features of version {settings.get('version')} cannot be reproduced by this "
                                f"extractor (version {VERSION})")
    y = decode.audio(path, a["sample_rate"])
    if float(np.max(np.abs(y))) < silence:
        raise decode.MediaError(f"silent audio (peak amplitude {float(np.max(np.abs(y))):.2g} < {silence})")
    frames = decode.video_frames(path, float(v["fps"]), int(v["max_width"]))
    out = {"audio": audio_features(y, a), "video": V.features(frames, crop=int(v["crop"]),
                                                              min_face=int(v["min_face"]))}
    for m, x in out.items():
        if not np.all(np.isfinite(x)):
            raise decode.MediaError(f"non-finite {m} features")
    return out
