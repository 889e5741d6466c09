"""Audio features of the AV-MNIST builds (computed with librosa) and image energy reduction of the large variant."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import librosa
import numpy as np

__all__ = ["SAMPLE_RATE", "MFCCSettings", "mfcc_features", "resample", "add_noise", "trim_silence"]

#: Sample rate of the Free Spoken Digit Dataset and of every synthesised recording.
SAMPLE_RATE = 8000


@dataclass(frozen=True)
class MFCCSettings:
    """The SMIL-protocol MFCC: decimate the 8 kHz wav by 3, 20 coefficients with librosa's defaults
    (n_fft 2048, hop 512) at a nominal 8 kHz, then zero-pad or cut to 20 frames.

    Attributes:
        decimation: keep every ``decimation``-th sample before the MFCC (SMIL: 3).
        n_mfcc: number of coefficients (SMIL: 20).
        frames: number of frames after padding/cutting (SMIL: 20).
        sample_rate: nominal sample rate passed to librosa (SMIL: 8000, the rate before decimation).
        n_fft: FFT size (librosa's default 2048, as SMIL).
        hop_length: hop (librosa's default 512, as SMIL).
    """

    decimation: int = 3
    n_mfcc: int = 20
    frames: int = 20
    sample_rate: int = SAMPLE_RATE
    n_fft: int = 2048
    hop_length: int = 512


def mfcc_features(signal: np.ndarray, settings: MFCCSettings) -> np.ndarray:
    """MFCC ``float32 [1, n_mfcc, frames]`` of an 8 kHz signal, following ``settings``."""
    decimated = np.ascontiguousarray(signal[:: settings.decimation], dtype=np.float32)
    with warnings.catch_warnings():
        # SMIL's settings use n_fft 2048 on ~1,000-sample decimated signals; librosa warns and zero-pads (centred).
        warnings.filterwarnings("ignore", message="n_fft=.*is too large for input signal")
        mfcc = librosa.feature.mfcc(
            y=decimated,
            sr=settings.sample_rate,
            n_mfcc=settings.n_mfcc,
            n_fft=settings.n_fft,
            hop_length=settings.hop_length,
        )
    mfcc = mfcc[:, : settings.frames]
    mfcc = np.pad(mfcc, ((0, 0), (0, settings.frames - mfcc.shape[1])))
    return mfcc[None].astype(np.float32)


def resample(signal: np.ndarray, rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """``signal`` at ``target_rate`` (unchanged when it already is)."""
    if rate == target_rate:
        return signal
    return librosa.resample(signal, orig_sr=rate, target_sr=target_rate).astype(np.float32)


def trim_silence(signal: np.ndarray, top_db: float) -> np.ndarray:
    """``signal`` without leading/trailing parts quieter than ``top_db`` below its peak (FSDD recordings are trimmed)."""
    trimmed, _ = librosa.effects.trim(signal, top_db=top_db)
    return trimmed if trimmed.size else signal


def add_noise(signal: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """``signal`` plus white Gaussian noise at signal-to-noise ratio ``snr_db``."""
    power = float(np.mean(signal.astype(np.float64) ** 2))
    noise = rng.standard_normal(signal.shape) * np.sqrt(power / 10 ** (snr_db / 10))
    return (signal + noise).astype(np.float32)
