"""AVDigitNet: the MCKD network contract (available=, modality_scale=, one FeatureTap, mean fill) on image + audio."""

from __future__ import annotations

import pytest
import torch
from monai.engines import PrepareBatchExtraInput

from mckd.availability import ModalityDropout
from mckd.distillation import ModalityImportance
from mckd.engines import MCKDTrainer
from mckd.handlers import MetaImportanceUpdater
from mckd.networks.avdigit import AVDigitNet
from mckd.networks.feature_tap import capture_features


def _inputs(batch: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch, 1, 28, 28, generator=generator), torch.randn(batch, 1, 20, 20, generator=generator)


def _network() -> AVDigitNet:
    torch.manual_seed(0)
    return AVDigitNet(feature_size=16, hidden_size=16).eval()


MIXED = torch.tensor([[True, True], [True, False], [False, True], [True, True]])


def test_logits_shape_and_none_means_every_modality_present():
    net, (image, audio) = _network(), _inputs()
    logits = net(image, audio)
    assert logits.shape == (4, 10)
    torch.testing.assert_close(logits, net(image, audio, available=torch.ones(4, 2, dtype=torch.bool)))


def test_missing_modality_input_is_never_read():
    net, (image, audio) = _network(), _inputs()
    reference = net(image, audio, available=MIXED)
    image[2], audio[1] = float("nan"), 1e9  # sample 2 has no image, sample 1 no audio
    torch.testing.assert_close(net(image, audio, available=MIXED), reference)


def test_encoders_run_only_on_samples_that_have_the_modality():
    net, (image, audio) = _network(), _inputs()
    seen = {}
    net.image_encoder.register_forward_hook(lambda m, i, o: seen.__setitem__("image", i[0].shape[0]))
    net.audio_encoder.register_forward_hook(lambda m, i, o: seen.__setitem__("audio", i[0].shape[0]))
    net(image, audio, available=MIXED)
    assert seen == {"image": 3, "audio": 3}
    seen.clear()
    net(image, audio, available=torch.tensor([[True, False]] * 4))
    assert seen == {"image": 4}


def test_feature_tap_sees_zeros_for_missing_and_classifier_sees_the_mean_fill():
    net, (image, audio) = _network(), _inputs()
    fused = {}
    net.classifier.register_forward_hook(lambda m, i, o: fused.__setitem__("x", i[0]))
    with capture_features(net) as capture:
        net(image, audio, available=MIXED)
    features = capture.features
    assert features.shape == (4, 2, 16)
    assert not features[1, 1].any() and not features[2, 0].any()
    classifier_input = fused["x"].reshape(4, 2, 16)
    torch.testing.assert_close(classifier_input[1, 1], features[1, 0])  # missing audio <- the image's feature
    torch.testing.assert_close(classifier_input[2, 0], features[2, 1])  # missing image <- the audio's feature
    torch.testing.assert_close(classifier_input[0], features[0])


def test_modality_scale_multiplies_fused_features_and_receives_gradients():
    net, (image, audio) = _network(), _inputs()
    scale = torch.tensor([0.25, 0.75], requires_grad=True)
    fused = {}
    net.classifier.register_forward_hook(lambda m, i, o: fused.__setitem__("x", i[0]))
    net(image, audio, available=MIXED, modality_scale=scale).sum().backward()
    assert scale.grad is not None and scale.grad.abs().sum() > 0
    with capture_features(net) as capture:
        net(image, audio, modality_scale=scale.detach())
    torch.testing.assert_close(fused["x"].reshape(4, 2, 16)[0, 1], 0.75 * capture.features[0, 1])


def test_bad_inputs_raise_clear_errors():
    net, (image, audio) = _network(), _inputs()
    with pytest.raises(ValueError, match="at least one available modality"):
        net(image, audio, available=torch.tensor([[True, True], [False, False], [True, True], [True, True]]))
    with pytest.raises(ValueError, match="audio must have shape"):
        net(image, audio[:, :, :10])
    with pytest.raises(ValueError, match="agree on the batch"):
        net(image, audio[:3])


def test_trains_with_the_shared_mckd_trainer_and_meta_update():
    """One epoch through MCKDTrainer with PrepareBatchExtraInput(audio) and the meta-importance handler."""
    torch.manual_seed(0)
    image, audio = _inputs(8)
    batch = {"image": image, "audio": audio, "label": torch.arange(8) % 10, "available": torch.ones(8, 2, dtype=torch.bool)}
    net = AVDigitNet(feature_size=16, hidden_size=16)
    importance = ModalityImportance(2, seed=0)
    trainer = MCKDTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=[batch, batch],
        network=net,
        optimizer=torch.optim.Adam(net.parameters(), 1e-3),
        loss_function=torch.nn.CrossEntropyLoss(),
        importance=importance,
        modality_dropout=ModalityDropout(2),
        prepare_batch=PrepareBatchExtraInput(extra_keys={"audio": "audio"}),
        decollate=False,
    )
    w_before = importance.w.detach().clone()
    updater = MetaImportanceUpdater(importance, torch.optim.Adam(importance.parameters(), 1e-2), [batch], 1, 2)
    updater.attach(trainer)
    trainer.run()
    assert torch.isfinite(trainer.state.output["loss"]) and trainer.state.output["kd_loss"] >= 0
    assert not torch.equal(importance.w.detach(), w_before)
