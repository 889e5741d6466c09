"""Both AV-MNIST builders (standard from IDX + wav files, offline from packaged digits + espeak-ng) and the protocol."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from data_prep import avmnist
from data_prep._avmnist_protocol import availability_mask
from data_prep._avmnist_speech import Utterance, require_speech_tools
from mckd.avmnist.conventions import AUDIO_INDEX, IMAGE_INDEX, MFCC_SHAPE
from mckd.avmnist.data import load_split


SPEAKERS, RECORDINGS, TEST_INDEX_BELOW = ("jackson", "theo"), 4, 1  # as written by the fake_sources fixture


def _build_standard(sources, out: Path, **protocol) -> Path:
    mnist, fsdd = sources
    return avmnist.build_standard(
        mnist, fsdd, out, avmnist.ProtocolOptions(**protocol), SPEAKERS, RECORDINGS, TEST_INDEX_BELOW
    )


def _arrays(folder: Path, split: str) -> dict[str, np.ndarray]:
    with np.load(folder / {"training": "train.npz", "test": "test.npz", "meta_validation": "meta_val.npz"}[split]) as f:
        return {key: f[key] for key in f.files}


def test_standard_build_pairs_images_and_recordings_of_the_same_digit(fake_sources, fakes, tmp_path):
    assert (fakes.speakers, fakes.recordings, fakes.test_index_below) == (SPEAKERS, RECORDINGS, TEST_INDEX_BELOW)
    out = tmp_path / "out"
    info = json.loads(_build_standard(fake_sources, out, meta_val_fraction=0.0).read_text())
    per_class_train = len(SPEAKERS) * (RECORDINGS - TEST_INDEX_BELOW)
    per_class_test = len(SPEAKERS) * TEST_INDEX_BELOW
    assert info["splits"]["training"]["num_samples"] == 10 * per_class_train
    assert info["splits"]["test"]["num_samples"] == 10 * per_class_test
    train, test = _arrays(out, "training"), _arrays(out, "test")
    # the fake images carry their digit in pixel (0, 0): every image is paired with a recording of its own digit
    np.testing.assert_array_equal(train["image"][:, 0, 0, 0], train["label"])
    np.testing.assert_array_equal(test["image"][:, 0, 0, 0], test["label"])
    assert train["audio"].shape[1:] == MFCC_SHAPE and train["audio"].dtype == np.float32
    # train: first images of each class of MNIST train; test: the last ones of MNIST test (serial in pixel (0, 1))
    mnist_test_images, mnist_test_labels = fakes.fake_digit_images(5, np.random.default_rng(0))
    assert sorted(test["source_index"][test["label"] == 3, 0]) == list(np.flatnonzero(mnist_test_labels == 3)[-2:])
    assert sorted(train["source_index"][train["label"] == 3, 0]) == list(range(3, 3 + 10 * per_class_train, 10))
    # recordings with index < TEST_INDEX_BELOW are test, the others training
    assert set(test["source_index"][:, 1]) == set(range(TEST_INDEX_BELOW))
    assert set(train["source_index"][:, 1]) == set(range(TEST_INDEX_BELOW, RECORDINGS))
    assert train["available"].all() and test["available"].all()


def test_audio_rate_keeps_audio_for_that_share_of_each_class_and_zeroes_the_rest(fake_sources, tmp_path):
    out = tmp_path / "out"
    _build_standard(fake_sources, out, audio_rate=50, meta_val_fraction=1 / 6)
    train, meta = _arrays(out, "training"), _arrays(out, "meta_validation")
    assert meta["available"].all() and np.bincount(meta["label"]).tolist() == [1] * 10
    for digit in range(10):
        rows = train["label"] == digit
        assert train["available"][rows, AUDIO_INDEX].sum() == round(0.5 * rows.sum())
        kept_speakers = train["speaker"][rows & train["available"][:, AUDIO_INDEX]]
        assert set(kept_speakers) == set(SPEAKERS)  # balanced over speakers
    assert train["available"][:, IMAGE_INDEX].all()
    assert not train["audio"][~train["available"][:, AUDIO_INDEX]].any()
    samples = load_split(out, "training")
    assert samples[0]["image"].dtype == np.float32 and samples[0]["available"].shape == (2,)


def test_rates_never_leave_a_sample_without_any_modality():
    labels, speakers = np.repeat(np.arange(10), 7), np.tile(np.array(["a", "b", "c", "d", "e", "f", "g"]), 10)
    mask = availability_mask(labels, speakers, 50, 50, np.random.default_rng(0))
    assert mask.any(axis=1).all()
    with pytest.raises(ValueError, match="add up to less than 100"):
        avmnist.ProtocolOptions(audio_rate=30, image_rate=40)
    with pytest.raises(ValueError, match="audio-rate"):
        avmnist.ProtocolOptions(audio_rate=0)


def test_missing_recording_is_named(fake_sources, tmp_path):
    mnist, fsdd = fake_sources
    (fsdd / "recordings" / "7_theo_2.wav").unlink()
    with pytest.raises(FileNotFoundError, match="7_theo_2.wav"):
        _build_standard(fake_sources, tmp_path / "out")
    assert not (tmp_path / "out" / "dataset.json").exists()


def test_corrupt_recording_is_named(fake_sources, tmp_path):
    (fake_sources[1] / "recordings" / "2_jackson_3.wav").write_bytes(b"RIFF0000WAVEnot really")
    with pytest.raises(ValueError, match="2_jackson_3.wav"):
        _build_standard(fake_sources, tmp_path / "out")


def test_truncated_or_wrong_idx_file_is_named(fake_sources, fakes, tmp_path):
    mnist = fake_sources[0]
    labels = mnist / "t10k-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:-3])
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.*corrupt"):
        _build_standard(fake_sources, tmp_path / "out")
    fakes.write_idx(labels, np.zeros((50, 28, 28), np.uint8))  # an image file where labels belong
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.*magic"):
        _build_standard(fake_sources, tmp_path / "out")
    labels.unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        _build_standard(fake_sources, tmp_path / "out")


def test_offline_build_needs_espeak_and_sox(monkeypatch):
    monkeypatch.setattr("data_prep._avmnist_speech.shutil.which", lambda name: None)
    with pytest.raises(RuntimeError, match="espeak-ng and sox.*apt-get"):
        require_speech_tools()


def test_sklearn_fallback_gives_mnist_shaped_real_digits():
    images, labels, name = avmnist._packaged_digits("sklearn")
    assert images.shape[1:] == (28, 28) and images.dtype == np.uint8 and "load_digits" in name
    assert images.max() > 200 and images[:, :4].max() == 0 and set(labels.tolist()) == set(range(10))


def test_offline_build_is_deterministic_per_seed_and_caches_wavs(speech_tools, tmp_path):
    def build(folder: Path, seed: int) -> dict[str, np.ndarray]:
        options = avmnist.OfflineOptions(train_per_class=2, test_per_class=1, voices=("en-us+m3", "en-gb+f2"))
        avmnist.build_offline(folder, avmnist.ProtocolOptions(audio_rate=50, meta_val_fraction=0.0, seed=seed), options)
        return _arrays(folder, "training")

    first, again = build(tmp_path / "a", 0), build(tmp_path / "b", 0)
    for key in ("image", "audio", "label", "available"):
        np.testing.assert_array_equal(first[key], again[key])
    assert first["audio"].shape == (20, *MFCC_SHAPE) and np.bincount(first["label"]).tolist() == [2] * 10
    assert first["available"][:, AUDIO_INDEX].sum() == 10
    wavs = sorted((tmp_path / "a" / "wavs").glob("*.wav"))
    assert len(wavs) == 30
    stamp = wavs[0].stat().st_mtime_ns
    build(tmp_path / "a", 0)  # rebuild reuses the cache
    assert wavs[0].stat().st_mtime_ns == stamp
    other = build(tmp_path / "c", 1)
    assert not np.array_equal(first["audio"], other["audio"])
    assert Utterance(3, "en-us+m3", 150, 40).file_name == "3_en-us-m3_s150_p40.wav"
