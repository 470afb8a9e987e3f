"""Frame-level audio features in numpy/scipy, with librosa's conventions (no librosa, no numba).

Every function takes a mono float waveform ``y`` and returns ``[T, D]`` float32 with
``T = 1 + len(y) // hop`` (librosa's ``center=True`` framing with zero padding), so features of
one clip line up frame by frame and can be concatenated.

* `log_mel`, `mfcc`: librosa ``melspectrogram`` (Hann window, power 2, Slaney mel scale and norm)
  -> ``power_to_db`` (amin 1e-10, top_db 80) -> MFCC = orthonormal DCT-II (librosa ``mfcc``).
* `rms`, `zcr`: librosa ``feature.rms`` / ``zero_crossing_rate`` on centred frames.
* `log_f0`: YIN (de Cheveigné & Kawahara 2002) as librosa 0.11 ``yin`` computes it (cumulative mean
  normalised difference, absolute threshold 0.1, parabolic refinement, the global minimum where no
  trough is under the threshold; ``fallback='unvoiced'`` gives 0 there instead); digitally silent
  frames get log F0 = 0 (MMSA sets log(0) = -inf to 0).
* `chroma_cqt`: librosa ``chroma_cqt`` defaults (fmin C1, 7 octaves, 36 bins per octave, Hann
  kernels with Q = 1 / (2^(1/36) - 1), 3 bins folded into each semitone, per-frame max norm);
  computed octave by octave on a signal halved in rate each octave, as librosa's CQT does. Close to
  librosa, not identical (its filter scaling differs, and it estimates a tuning offset per clip:
  correlation 0.99 with librosa's ``tuning=0`` on the golden test signal).

MFCC, log-mel, RMS, ZCR and F0 equal librosa 0.11's to float precision
(``tests/fixtures/extract_librosa_golden.npz``, made by ``tests/fixtures/make_extract_librosa_golden.py``).
"""
from __future__ import annotations

import functools

import numpy as np
from scipy.fft import dct
from scipy.signal import resample_poly

BLOCK = 2048  # frames per block: memory stays bounded (~2048 x frame length) however long the clip


def frames(y: np.ndarray, length: int, hop: int, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Centred frames ``[start:stop]`` of ``[1 + len(y) // hop, length]`` (zero padding of ``length // 2``
    each side), float64."""
    stop = 1 + len(y) // hop if stop is None else stop   # frames past the signal's end are zeros
    if stop <= start or len(y) == 0:
        return np.zeros((max(stop - start, 0), length))
    idx = (np.arange(start, stop) * hop - length // 2)[:, None] + np.arange(length)[None, :]
    inside = (idx >= 0) & (idx < len(y))
    return np.where(inside, np.asarray(y)[np.clip(idx, 0, len(y) - 1)], 0.0).astype(np.float64)


def blocked(fn, y: np.ndarray, length: int, hop: int, n_frames: int | None = None) -> np.ndarray:
    """``fn(frames)`` over blocks of `BLOCK` frames, concatenated (``fn`` works frame by frame)."""
    n = 1 + len(y) // hop if n_frames is None else n_frames
    return np.concatenate([fn(frames(y, length, hop, s, min(s + BLOCK, n))) for s in range(0, max(n, 1), BLOCK)])


def _hann_in(n_fft: int, win: int | None) -> np.ndarray:
    """A periodic Hann window of ``win`` samples centred in ``n_fft`` (librosa's ``win_length``)."""
    win = win or n_fft
    w = np.zeros(n_fft)
    left = (n_fft - win) // 2
    w[left:left + win] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)
    return w


def power_spectrum(y: np.ndarray, n_fft: int, hop: int, win: int | None = None) -> np.ndarray:
    """|STFT|^2 ``[T, n_fft // 2 + 1]``."""
    w = _hann_in(n_fft, win)
    return blocked(lambda f: np.abs(np.fft.rfft(f * w, axis=1)) ** 2, y, n_fft, hop)


def _hz_to_mel(f):
    f = np.asarray(f, np.float64)
    lin = f / (200.0 / 3)
    return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0), lin)


def _mel_to_hz(m):
    m = np.asarray(m, np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), m * (200.0 / 3))


@functools.cache
def mel_filters(sr: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """Slaney-style mel filterbank ``[n_mels, n_fft // 2 + 1]`` (librosa ``filters.mel`` defaults)."""
    fmax = sr / 2 if fmax is None else fmax
    fft_f = np.linspace(0, sr / 2, n_fft // 2 + 1)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    fdiff, ramps = np.diff(mel_f), mel_f[:, None] - fft_f[None, :]
    lower, upper = -ramps[:-2] / fdiff[:-1, None], ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    return weights * (2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels]))[:, None]


def _db(s: np.ndarray, top_db: float = 80.0) -> np.ndarray:
    db = 10.0 * np.log10(np.maximum(s, 1e-10))
    return np.maximum(db, db.max() - top_db) if db.size else db


def log_mel(y, sr: int, *, n_fft: int, hop: int, win: int | None = None, n_mels: int = 40) -> np.ndarray:
    w, m = _hann_in(n_fft, win), mel_filters(sr, n_fft, n_mels).T
    mel = blocked(lambda f: (np.abs(np.fft.rfft(f * w, axis=1)) ** 2) @ m, y, n_fft, hop)
    return _db(mel).astype(np.float32)


def mfcc(y, sr: int, *, n_fft: int, hop: int, win: int | None = None, n_mfcc: int = 20, n_mels: int = 128
         ) -> np.ndarray:
    """librosa ``feature.mfcc`` (128 mel bands by default, as librosa)."""
    mel_db = log_mel(y, sr, n_fft=n_fft, hop=hop, win=win, n_mels=n_mels).astype(np.float64)
    return dct(mel_db, type=2, norm="ortho", axis=1)[:, :n_mfcc].astype(np.float32)


def rms(y, *, frame: int, hop: int) -> np.ndarray:
    return blocked(lambda f: np.sqrt(np.mean(f ** 2, axis=1, keepdims=True)), y, frame, hop).astype(np.float32)


def _zcr(f: np.ndarray) -> np.ndarray:
    crossings = np.abs(np.diff(np.signbit(f).astype(np.int8), axis=1))
    return np.mean(np.pad(crossings, ((0, 0), (1, 0))), axis=1, keepdims=True)


def zcr(y, *, frame: int, hop: int) -> np.ndarray:
    return blocked(_zcr, y, frame, hop).astype(np.float32)


def yin_f0(y, sr: int, *, frame: int, hop: int, fmin: float = 65.4, fmax: float = 2093.0,
           threshold: float = 0.1, fallback: str = "global_min", silence: float = 1e-4) -> np.ndarray:
    """F0 in Hz per frame ``[T]``; 0 on silent frames (RMS under ``silence``) and, with ``fallback='unvoiced'``,
    on frames with no trough under ``threshold`` (``'global_min'``: librosa's choice, the deepest trough)."""
    if fallback not in ("global_min", "unvoiced"):
        raise ValueError(f"F0 fallback {fallback!r}: expected 'global_min' (librosa) or 'unvoiced'")
    fn = functools.partial(_yin_frames, sr=sr, fmin=fmin, fmax=fmax, threshold=threshold, silence=silence,
                           fallback=fallback)
    return blocked(fn, y, frame, hop)


def _yin_frames(x: np.ndarray, *, sr: int, fmin: float, fmax: float, threshold: float, silence: float,
                fallback: str) -> np.ndarray:
    """librosa 0.11 ``yin`` on frames ``x`` [T, frame] (full-frame autocorrelation form of the difference
    function); see `yin_f0` for ``fallback`` and ``silence``."""
    frame = x.shape[1]
    min_p, max_p = int(np.floor(sr / fmax)), min(int(np.ceil(sr / fmin)), frame - 1)
    n = 1 << int(np.ceil(np.log2(2 * frame)))
    acf = np.fft.irfft(np.abs(np.fft.rfft(x, n)) ** 2, n)[:, :max_p + 1]
    energy = np.cumsum(x ** 2, axis=1)
    d = np.zeros((len(x), max_p + 1))
    d[:, 1:] = 2 * (acf[:, :1] - acf[:, 1:]) - energy[:, :max_p]    # d(k) = 2 (r(0) - r(k)) - sum_{m<k} x_m^2
    mean = np.cumsum(d[:, 1:], axis=1) / np.arange(1, max_p + 1)
    cmnd = d[:, min_p:] / (mean[:, min_p - 1:] + np.finfo(np.float64).tiny)   # lags min_p .. max_p
    left = np.concatenate([np.full((len(x), 1), np.inf), cmnd[:, :-1]], axis=1)
    right = np.concatenate([cmnd[:, 1:], cmnd[:, -1:]], axis=1)
    trough = (left > cmnd) & (cmnd <= right)
    trough[:, 0] = cmnd[:, 0] < cmnd[:, 1]
    below = trough & (cmnd < threshold)
    f0 = np.zeros(len(x))
    found = below.any(axis=1)
    for t in range(len(x)) if fallback == "global_min" else np.flatnonzero(found):
        k = int(below[t].argmax()) if found[t] else int(cmnd[t].argmin())
        shift = 0.0
        if 0 < k < cmnd.shape[1] - 1:
            a = cmnd[t, k + 1] + cmnd[t, k - 1] - 2 * cmnd[t, k]
            b = (cmnd[t, k + 1] - cmnd[t, k - 1]) / 2
            shift = -b / a if abs(b) < abs(a) else 0.0
        f0[t] = sr / (min_p + k + shift)
    loud = np.sqrt(np.mean(x ** 2, axis=1)) >= silence
    return np.where(loud, f0, 0.0)


def log_f0(y, sr: int, *, frame: int, hop: int, fmin: float = 65.4, fmax: float = 2093.0,
           threshold: float = 0.1, fallback: str = "global_min") -> np.ndarray:
    """``[T, 1]`` natural log of the YIN F0; 0 where F0 is 0 (MMSA zeroes log(0) = -inf)."""
    f0 = yin_f0(y, sr, frame=frame, hop=hop, fmin=fmin, fmax=fmax, threshold=threshold, fallback=fallback)
    return np.where(f0 > 0, np.log(np.maximum(f0, 1e-12)), 0.0)[:, None].astype(np.float32)


@functools.cache
def _cqt_kernels(sr: int, fmin_octave: float, bins: int, q: float) -> np.ndarray:
    """Conjugated Hann-windowed complex kernels ``[L, bins]`` (centred, L1-normalised) of one octave."""
    freqs = fmin_octave * 2.0 ** (np.arange(bins) / bins)
    lengths = np.ceil(q * sr / freqs).astype(int)
    size = int(lengths.max()) | 1
    k = np.zeros((size, bins), np.complex128)
    for i, (f, n) in enumerate(zip(freqs, lengths)):
        t = np.arange(n) - (n - 1) / 2
        w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)
        start = (size - n) // 2
        k[start:start + n, i] = np.conj(w * np.exp(2j * np.pi * f * t / sr) / w.sum())
    return k


def chroma_cqt(y, sr: int, *, hop: int, fmin: float = 32.703, n_octaves: int = 7, bins_per_octave: int = 36,
               n_chroma: int = 12) -> np.ndarray:
    """``[T, n_chroma]`` chromagram from a constant-Q transform (see the module docstring)."""
    if hop % 2 ** (n_octaves - 1):
        raise ValueError(f"hop {hop} must be divisible by 2^(n_octaves - 1) = {2 ** (n_octaves - 1)}")
    q = 1.0 / (2.0 ** (1.0 / bins_per_octave) - 1.0)
    n_frames = 1 + len(y) // hop
    mags, sig, rate, h = [], np.asarray(y, np.float64), sr, hop
    for octave in reversed(range(n_octaves)):  # top octave first, then halve the rate
        kern = _cqt_kernels(rate, fmin * 2.0 ** octave, bins_per_octave, q)
        mags.append(blocked(lambda f, k=kern: np.abs(f @ k), sig, kern.shape[0], h, n_frames))
        if octave:
            sig, rate, h = resample_poly(sig, 1, 2), rate / 2, h // 2
    cq = np.concatenate(mags[::-1], axis=1)       # [T, n_octaves * bins_per_octave], low to high
    per_semitone = bins_per_octave // n_chroma
    pitch_class = (np.rint(np.arange(cq.shape[1]) / per_semitone).astype(int)) % n_chroma
    chroma = np.zeros((cq.shape[0], n_chroma))
    np.add.at(chroma.T, pitch_class, cq.T)
    peak = chroma.max(axis=1, keepdims=True)
    return np.where(peak > 0, chroma / np.maximum(peak, 1e-30), 0.0).astype(np.float32)
