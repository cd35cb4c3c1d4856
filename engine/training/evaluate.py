"""Simple, explainable measures of "does this sound like music", numpy/scipy only (no torch).

- Spectral flatness: geometric over arithmetic mean of each frame's power spectrum, averaged
  (white noise about 0.56, a held note close to 0).
- Chroma concentration: how much of each frame's pitch-class energy sits in its strongest three
  of twelve pitch classes (noise spreads evenly: 3/12 = 0.25; a chord or a melody concentrates it).
- Pitch salience: the share of each frame's 80 Hz-2 kHz energy that lies on the harmonics of
  the best fundamental (harmonic sum), averaged.
- Onset regularity: the highest autocorrelation of the onset-strength envelope (spectral flux)
  at lags of 0.2 s to 2 s (a beat repeats; noise has no beat).

`features` gives them for one clip; `mel_stats` gives mean and spread of a log-mel spectrogram
(the input of the conditioning classifier); `LogisticRegression` is a small multinomial one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.signal import get_window

FEATURES = ("spectral_flatness", "chroma_concentration", "pitch_salience", "onset_regularity")


def stft_power(x: np.ndarray, n_fft: int = 2048, hop: int = 512) -> np.ndarray:
    """|STFT|^2, [frames, n_fft // 2 + 1], Hann window, no padding."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    n = 1 + (len(x) - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(n)[:, None]
    frames = x[idx] * get_window("hann", n_fft, fftbins=True)[None]
    return np.abs(np.fft.rfft(frames, axis=1)) ** 2


def _active(power: np.ndarray, floor_db: float = -50.0) -> np.ndarray:
    """Frames louder than `floor_db` below the loudest (silence says nothing about music)."""
    e = power.sum(axis=1)
    if e.max() <= 0:
        return np.zeros(len(e), dtype=bool)
    return 10 * np.log10(e / e.max() + 1e-20) > floor_db


def spectral_flatness(power: np.ndarray) -> float:
    p = power[_active(power)][:, 1:] + 1e-12
    if not len(p):
        return float("nan")
    return float(np.mean(np.exp(np.mean(np.log(p), axis=1)) / np.mean(p, axis=1)))


def chroma(power: np.ndarray, sr: int, n_fft: int, fmin: float = 55.0, fmax: float = 4200.0) -> np.ndarray:
    """Pitch-class energy per frame [frames, 12] from the magnitude spectrum (A = 0)."""
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    use = (freqs >= fmin) & (freqs <= fmax)
    pc = np.round(12 * np.log2(freqs[use] / 440.0)).astype(int) % 12
    mag = np.sqrt(power[:, use])
    out = np.zeros((power.shape[0], 12))
    for k in range(12):
        out[:, k] = mag[:, pc == k].sum(axis=1)
    return out


def chroma_concentration(power: np.ndarray, sr: int, n_fft: int) -> float:
    c = chroma(power[_active(power)], sr, n_fft)
    if not len(c):
        return float("nan")
    c = c / (c.sum(axis=1, keepdims=True) + 1e-12)
    return float(np.mean(np.sort(c, axis=1)[:, -3:].sum(axis=1)))


def pitch_salience(power: np.ndarray, sr: int, n_fft: int, n_harmonics: int = 5) -> float:
    """Mean over frames of max over f0 in 80-1000 Hz of the energy on f0's first harmonics, as a
    share of the 80 Hz - 5 kHz energy."""
    p = power[_active(power)]
    if not len(p):
        return float("nan")
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    band = (freqs >= 80) & (freqs <= 5000)
    total = p[:, band].sum(axis=1) + 1e-12
    f0s = 80.0 * 2 ** (np.arange(0, 42) / 12)  # 80 Hz to about 900 Hz in semitones
    bin_hz = sr / n_fft
    best = np.zeros(len(p))
    for f0 in f0s:
        acc = np.zeros(len(p))
        for h in range(1, n_harmonics + 1):
            b = round(h * f0 / bin_hz)
            if b + 1 >= p.shape[1] or h * f0 > 5000:
                break
            acc += p[:, b - 1 : b + 2].sum(axis=1)  # the bin and its neighbours (window spread)
        best = np.maximum(best, acc)
    return float(np.mean(best / total))


def onset_envelope(power: np.ndarray) -> np.ndarray:
    """Half-wave rectified spectral flux of the log spectrum."""
    logp = np.log1p(1e3 * power / (power.max() + 1e-12))
    flux = np.maximum(np.diff(logp, axis=0), 0).sum(axis=1)
    return np.concatenate([[0.0], flux])


def onset_regularity(power: np.ndarray, sr: int, hop: int, lo_s: float = 0.2, hi_s: float = 2.0) -> float:
    env = onset_envelope(power)
    env = env - env.mean()
    if len(env) < 8 or not np.any(env):
        return float("nan")
    ac = np.correlate(env, env, mode="full")[len(env) - 1 :]
    ac = ac / (ac[0] + 1e-12)
    lo, hi = int(lo_s * sr / hop), min(len(ac) - 1, int(hi_s * sr / hop))
    if hi <= lo:
        return float("nan")
    return float(ac[lo : hi + 1].max())


def features(x: np.ndarray, sr: int) -> dict[str, float]:
    n_fft, hop = 2048, 512
    power = stft_power(x, n_fft, hop)
    return {
        "spectral_flatness": spectral_flatness(power),
        "chroma_concentration": chroma_concentration(power, sr, n_fft),
        "pitch_salience": pitch_salience(power, sr, n_fft),
        "onset_regularity": onset_regularity(power, sr, hop),
    }


def mel_filterbank(
    sr: int, n_fft: int, n_mels: int = 40, fmin: float = 40.0, fmax: float | None = None
) -> np.ndarray:
    fmax = fmax or sr / 2

    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        return 700.0 * (10 ** (m / 2595.0) - 1.0)

    mels = np.linspace(hz_to_mel(np.array(fmin)), hz_to_mel(np.array(fmax)), n_mels + 2)
    hz = mel_to_hz(mels)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    fb = np.zeros((n_mels, len(freqs)))
    for i in range(n_mels):
        lo, mid, hi = hz[i], hz[i + 1], hz[i + 2]
        up = (freqs - lo) / max(mid - lo, 1e-9)
        down = (hi - freqs) / max(hi - mid, 1e-9)
        fb[i] = np.maximum(0, np.minimum(up, down))
    return fb


def mel_stats(x: np.ndarray, sr: int, n_mels: int = 40) -> np.ndarray:
    """Mean and standard deviation over time of each log-mel band, and of its frame-to-frame change
    (timbre and articulation), level-normalised: [3 * n_mels]."""
    n_fft, hop = 2048, 512
    power = stft_power(x, n_fft, hop)
    power = power[_active(power)] if _active(power).any() else power
    mel = np.log(power @ mel_filterbank(sr, n_fft, n_mels).T + 1e-10)
    mel = mel - mel.mean()  # loudness does not tell composers apart
    d = np.abs(np.diff(mel, axis=0)).mean(axis=0) if len(mel) > 1 else np.zeros(n_mels)
    return np.concatenate([mel.mean(axis=0), mel.std(axis=0), d])


@dataclass
class LogisticRegression:
    """Multinomial logistic regression with L2, fitted by gradient descent on standardised inputs."""

    l2: float = 1e-2
    steps: int = 3000
    lr: float = 0.5
    classes_: np.ndarray | None = None
    w: np.ndarray | None = None
    mu: np.ndarray | None = None
    sd: np.ndarray | None = None

    def fit(self, x: np.ndarray, y: Sequence[object]) -> LogisticRegression:
        x = np.asarray(x, dtype=np.float64)
        labels = np.asarray(y)
        self.classes_ = np.unique(labels)
        k = len(self.classes_)
        idx = np.searchsorted(self.classes_, labels)
        self.mu, self.sd = x.mean(axis=0), x.std(axis=0) + 1e-8
        z = np.hstack([(x - self.mu) / self.sd, np.ones((len(x), 1))])
        onehot = np.eye(k)[idx]
        w = np.zeros((z.shape[1], k))
        for _ in range(self.steps):
            p = _softmax(z @ w)
            grad = z.T @ (p - onehot) / len(z) + self.l2 * np.vstack([w[:-1], np.zeros((1, k))])
            w -= self.lr * grad
        self.w = w
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        assert self.w is not None and self.mu is not None and self.sd is not None
        z = np.hstack([(np.asarray(x, dtype=np.float64) - self.mu) / self.sd, np.ones((len(x), 1))])
        return _softmax(z @ self.w)

    def predict(self, x: np.ndarray) -> np.ndarray:
        assert self.classes_ is not None
        return self.classes_[np.argmax(self.predict_proba(x), axis=1)]


def _softmax(a: np.ndarray) -> np.ndarray:
    a = a - a.max(axis=1, keepdims=True)
    e = np.exp(a)
    return e / e.sum(axis=1, keepdims=True)


def summarise(rows: Sequence[dict[str, float]]) -> dict[str, tuple[float, float]]:
    """(mean, std) of each feature over clips, NaNs left out."""
    out = {}
    for f in FEATURES:
        v = np.array([r[f] for r in rows], dtype=np.float64)
        v = v[~np.isnan(v)]
        out[f] = (float(v.mean()) if len(v) else float("nan"), float(v.std()) if len(v) else float("nan"))
    return out
