"""The one home of every AV-MNIST fact: modality order, class names, tensor shapes and the on-disk dataset format.

Data preparation (``data_prep.avmnist``), the network (:class:`mckd.networks.avdigit.AVDigitNet`), the data loader
(:mod:`mckd.avmnist.data`) and the evaluation report all import from here.

On-disk format written by ``python -m data_prep.avmnist`` (one folder per build):

- ``dataset.json``: the description (format version, source, split file names and sizes, tensor shapes, the
  missing-modality rates, the seed and the audio feature settings).
- one ``.npz`` per split (``train.npz``, ``meta_val.npz``, ``test.npz``) holding
  ``image`` uint8 ``[N, 1, 28, 28]`` (0..255, white digit on black), ``audio`` float32 ``[N, 1, F, T]``
  (20 MFCC x 20 frames for the SMIL-protocol builds), ``label`` int64 ``[N]`` (the digit),
  ``available`` bool ``[N, 2]`` (per-sample modality availability in :data:`MODALITIES` order; a missing
  modality's array is all zeros and must never be read), ``speaker`` str ``[N]`` (speaker or synthetic voice) and
  ``source_index`` int64 ``[N, 2]`` (index of the image in its source split and of the recording in the speaker's
  sequence, for traceability).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

__all__ = [
    "MODALITIES",
    "MODALITY_DISPLAY_NAMES",
    "NUM_MODALITIES",
    "IMAGE_INDEX",
    "AUDIO_INDEX",
    "NUM_CLASSES",
    "DIGIT_WORDS",
    "IMAGE_SHAPE",
    "MFCC_SHAPE",
    "SPLIT_FILES",
    "DATASET_INFO_FILE",
    "FORMAT_VERSION",
    "ARRAY_KEYS",
]

#: Modality keys in the fixed order of every availability mask, feature tensor and importance weight.
MODALITIES: tuple[str, ...] = ("image", "audio")
MODALITY_DISPLAY_NAMES: Mapping[str, str] = MappingProxyType({"image": "Image", "audio": "Audio"})
NUM_MODALITIES = len(MODALITIES)
IMAGE_INDEX = MODALITIES.index("image")
AUDIO_INDEX = MODALITIES.index("audio")

NUM_CLASSES = 10
#: Spoken form of each digit class (used to synthesise speech for the offline build).
DIGIT_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

#: Channel-first shape of one image sample.
IMAGE_SHAPE: tuple[int, int, int] = (1, 28, 28)
#: Channel-first shape of one audio sample of the SMIL-protocol builds: 20 MFCC coefficients x 20 frames.
MFCC_SHAPE: tuple[int, int, int] = (1, 20, 20)

#: Split name (as used in datalists and configs) -> file name inside the dataset folder.
SPLIT_FILES: Mapping[str, str] = MappingProxyType(
    {"training": "train.npz", "meta_validation": "meta_val.npz", "test": "test.npz"}
)
DATASET_INFO_FILE = "dataset.json"
FORMAT_VERSION = 1
#: Arrays every split file holds.
ARRAY_KEYS: tuple[str, ...] = ("image", "audio", "label", "available", "speaker", "source_index")
