"""Our numpy audio features against librosa 0.11 (golden values: tests/fixtures/make_extract_librosa_golden.py)."""
from __future__ import annotations

import os

import numpy as np
import pytest

from mmfuse_jax.extract import audio as A

SR = 22050
GOLDEN = os.path.join(os.path.dirname(__file__), os.pardir, "fixtures", "extract_librosa_golden.npz")


def _signal() -> np.ndarray:  # the generator's formula
    t = np.arange(SR) / SR
    phase = 2 * np.pi * np.cumsum(150 + 30 * np.sin(2 * np.pi * 1.5 * t)) / SR
    return sum(0.3 / k * np.sin(k * phase) for k in range(1, 6)).astype(np.float32)


@pytest.fixture(scope="module")
def golden():
    with np.load(GOLDEN) as z:
        return {k: z[k] for k in z.files}


def test_mfcc_log_mel_rms_zcr_equal_librosa(golden):
    y = _signal()
    np.testing.assert_allclose(A.mfcc(y, SR, n_fft=2048, hop=512), golden["mfcc"], atol=1e-3)
    np.testing.assert_allclose(A.log_mel(y, SR, n_fft=512, hop=320, win=400, n_mels=40), golden["log_mel"], atol=1e-3)
    np.testing.assert_allclose(A.rms(y, frame=2048, hop=512), golden["rms"], atol=1e-6)
    np.testing.assert_allclose(A.zcr(y, frame=2048, hop=512), golden["zcr"], atol=1e-6)


def test_yin_equals_librosa_and_chroma_is_close(golden):
    y = _signal()
    np.testing.assert_allclose(A.yin_f0(y, SR, frame=2048, hop=512), golden["yin"], rtol=1e-5)
    ours = A.chroma_cqt(y, SR, hop=512)
    ref = golden["chroma_cqt_tuning0"]
    assert ours.shape == ref.shape
    assert np.corrcoef(ours.ravel(), ref.ravel())[0, 1] > 0.98
    assert np.mean(ours.argmax(1) == ref.argmax(1)) > 0.9
