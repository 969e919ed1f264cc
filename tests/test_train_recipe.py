"""The default recipe pinned layer by layer, the backbone registry and weight handling."""

from __future__ import annotations

import urllib.error

import pytest
import torch
from pydantic import ValidationError
from torch import nn
from torchvision import transforms as T

from dermsynth.config import ClassifierConfig
from dermsynth.errors import DermsynthError
from dermsynth.train import backbones, datasets
from dermsynth.train.backbones import IMAGENET_MEAN, IMAGENET_STD, backbone_info, build_backbone
from dermsynth.train.datasets import TransformSpec, class_balanced_sampler, train_transform
from dermsynth.train.loop import make_optimizer
from dermsynth.train.model import Classifier


@pytest.fixture(scope="module")
def vgg() -> Classifier:
    return Classifier(ClassifierConfig(weights="none"), ["a", "b", "c"])


def test_vgg16_head_is_the_recipe(vgg: Classifier) -> None:
    head = vgg.net.classifier[6]
    assert [type(m) for m in head] == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear, nn.LogSoftmax]
    assert (head[0].in_features, head[0].out_features) == (4096, 256)
    assert head[2].p == pytest.approx(0.4)
    assert (head[3].in_features, head[3].out_features) == (256, 3)
    assert head[4].dim == 1
    # The rest of torchvision's VGG16 is untouched.
    assert len(vgg.net.features) == 31 and len(vgg.net.classifier) == 7
    assert isinstance(vgg.net.classifier[2], nn.Dropout) and isinstance(
        vgg.net.classifier[5], nn.Dropout
    )


def test_every_vgg16_parameter_is_frozen_and_only_the_head_trains(vgg: Classifier) -> None:
    trainable = [n for n, p in vgg.net.named_parameters() if p.requires_grad]
    assert trainable == [
        "classifier.6.0.weight",
        "classifier.6.0.bias",
        "classifier.6.3.weight",
        "classifier.6.3.bias",
    ]
    frozen = sum(p.numel() for p in vgg.net.parameters() if not p.requires_grad)
    assert frozen == 138_357_544 - (4096 * 1000 + 1000)  # VGG16 without its classifier[6]
    assert vgg.saved_keys() == trainable


def test_optimizer_and_scheduler_settings(vgg: Classifier) -> None:
    optimizer, scheduler = make_optimizer(vgg, ClassifierConfig(weights="none"))
    assert isinstance(optimizer, torch.optim.Adam)
    group = optimizer.param_groups[0]
    assert group["lr"] == 1e-3 and group["betas"] == (0.9, 0.999) and group["weight_decay"] == 0
    assert sum(p.numel() for p in group["params"]) == 4096 * 256 + 256 + 256 * 3 + 3
    assert isinstance(scheduler, torch.optim.lr_scheduler.StepLR)
    assert (scheduler.step_size, scheduler.gamma) == (7, 0.1)
    assert nn.NLLLoss  # the loss of the loop (LogSoftmax + NLLLoss)


def test_trunk_then_tail_is_the_network_and_dropout_stays_live(vgg: Classifier) -> None:
    x = torch.randn(2, 3, 64, 64)
    vgg.eval()
    with torch.no_grad():
        assert torch.allclose(vgg.tail(vgg.trunk(x)), vgg.net(x), atol=1e-5)
        assert torch.allclose(vgg(x), vgg.net(x), atol=1e-5)
    vgg.train()
    assert not vgg.trunk.training
    assert vgg.net.classifier[2].training and vgg.net.classifier[5].training  # the recipe's dropout
    assert vgg.net.classifier[6][2].training


def test_transforms_are_the_recipe() -> None:
    spec = TransformSpec(224, 256, IMAGENET_MEAN, IMAGENET_STD, 15.0, (0.8, 1.0))
    train = train_transform(spec).transforms
    assert [type(t) for t in train] == [
        T.RandomResizedCrop,
        T.RandomRotation,
        T.ColorJitter,
        T.RandomHorizontalFlip,
        T.CenterCrop,
        T.ToTensor,
        T.Normalize,
    ]
    assert train[0].size == (256, 256) and train[0].scale == (0.8, 1.0)
    assert train[1].degrees == [-15.0, 15.0]
    assert train[2].brightness is None and train[2].hue is None  # ColorJitter(): no change
    assert train[4].size == (224, 224)
    assert tuple(train[6].mean) == IMAGENET_MEAN and tuple(train[6].std) == IMAGENET_STD
    test = datasets.test_transform(spec).transforms
    assert [type(t) for t in test] == [T.Resize, T.CenterCrop, T.ToTensor, T.Normalize]
    assert test[0].size == 256 and test[1].size == (224, 224)
    built = TransformSpec.build(ClassifierConfig(), backbone_info("vgg16"))
    assert (built.image_size, built.resize) == (224, 256)


def test_uint8_pipeline_matches_to_tensor_and_normalize() -> None:
    from PIL import Image

    spec = TransformSpec(32, 36, IMAGENET_MEAN, IMAGENET_STD, 15.0, (0.8, 1.0))
    image = Image.fromarray(torch.randint(0, 256, (40, 48, 3), dtype=torch.uint8).numpy())
    reference = datasets.test_transform(spec)(image)
    fast = datasets.test_transform(spec, to_float=False)(image)
    assert fast.dtype == torch.uint8
    assert torch.allclose(
        datasets.normalize_batch(fast[None], IMAGENET_MEAN, IMAGENET_STD)[0], reference, atol=1e-6
    )


def test_sampler_weights_are_inverse_class_counts() -> None:
    sampler = class_balanced_sampler([0, 0, 0, 1], 2, torch.Generator().manual_seed(0))
    assert sampler.replacement and sampler.num_samples == 4
    assert sampler.weights.tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 1.0])


def test_registry_sizes_and_widths() -> None:
    widths = {n: backbone_info(n).feature_dim for n in backbones.list_backbones()}
    assert widths == {
        "vgg16": 4096,
        "resnet18": 512,
        "resnet50": 2048,
        "efficientnet_b0": 1280,
        "densenet121": 1024,
        "colour-texture": 249,
    }
    info = backbone_info("resnet18")
    assert (info.input_size, info.resize, info.mean, info.std) == (
        224,
        256,
        IMAGENET_MEAN,
        IMAGENET_STD,
    )


def test_colour_texture_backbone_is_fixed_and_describes_colour() -> None:
    import torch

    model = Classifier(ClassifierConfig(backbone="colour-texture", weights="none"), ["a", "b"])
    assert not any(p.requires_grad for p in model.trunk.parameters())
    trained = {n for n, p in model.net.named_parameters() if p.requires_grad}
    assert trained and all(n.startswith("head.") for n in trained)
    light = torch.full((1, 3, 128, 128), 230, dtype=torch.uint8)
    dark = torch.full((1, 3, 128, 128), 60, dtype=torch.uint8)
    f_light, f_dark = model.features(light), model.features(dark)
    assert f_light.shape == (1, 249)
    assert torch.equal(model.features(light), f_light)  # no randomness: features can be cached
    assert not torch.allclose(f_light, f_dark)
    with pytest.raises(DermsynthError, match="has no learned weights"):
        Classifier(ClassifierConfig(backbone="colour-texture", weights="imagenet"), ["a", "b"])


def test_unknown_backbone_suggests_close_names() -> None:
    with pytest.raises(DermsynthError, match="did you mean resnet18"):
        backbone_info("resnet19")
    with pytest.raises(DermsynthError, match="vgg16"):
        backbone_info("vgg61")


def test_resnet_frozen_keeps_batchnorm_statistics() -> None:
    model = Classifier(ClassifierConfig(backbone="resnet18", weights="none"), ["a", "b"])
    model.train()
    assert not model.net.bn1.training
    trainable = {n.split(".")[0] for n, p in model.net.named_parameters() if p.requires_grad}
    assert trainable == {"fc"}
    full = Classifier(
        ClassifierConfig(backbone="resnet18", weights="none", finetune=True), ["a", "b"]
    )
    assert all(p.requires_grad for p in full.net.parameters())
    full.train()
    assert full.net.bn1.training


def test_weights_none_is_one_fixed_network() -> None:
    a = build_backbone("resnet18", "none", 2, frozen=True)
    b = build_backbone("resnet18", "none", 2, frozen=True)
    assert torch.equal(a.net.conv1.weight, b.net.conv1.weight)


def test_weights_file_loads_and_wrong_architecture_is_named(tmp_path) -> None:  # type: ignore[no-untyped-def]
    source = build_backbone("resnet18", "none", 2, frozen=True).net
    import torchvision

    state = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "r18.pth"
    torch.save(state, path)
    loaded = build_backbone("resnet18", str(path), 2, frozen=True)
    assert torch.equal(loaded.net.conv1.weight, state["conv1.weight"])
    assert not torch.equal(loaded.net.conv1.weight, source.conv1.weight)
    assert backbones.weights_identity(str(path)).startswith("file:")
    with pytest.raises(
        DermsynthError, match=r"does not fit backbone densenet121.*looks like a ResNet"
    ):
        build_backbone("densenet121", str(path), 2, frozen=True)
    with pytest.raises(DermsynthError, match="no such file"):
        build_backbone("resnet18", str(tmp_path / "missing.pth"), 2, frozen=True)


def test_imagenet_offline_names_the_file_and_folder(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def offline(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(DermsynthError) as err:
        build_backbone("resnet18", "imagenet", 2, frozen=True)
    message = str(err.value)
    assert "resnet18-f37072fd.pth" in message and str(tmp_path / "hub" / "checkpoints") in message


def test_config_refuses_inconsistent_options() -> None:
    with pytest.raises(ValidationError, match="validation split"):
        ClassifierConfig(patience=3)
    with pytest.raises(ValidationError, match="frozen backbone"):
        ClassifierConfig(finetune=True, path="features")
    assert not ClassifierConfig(finetune=True).uses_features and ClassifierConfig().uses_features
    assert ClassifierConfig.from_dict(
        ClassifierConfig(classes=("a", "b")).to_dict()
    ) == ClassifierConfig(classes=("a", "b"))
