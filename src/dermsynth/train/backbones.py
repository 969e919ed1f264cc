"""Backbones by name: torchvision's five and any timm model, with their weights.

Each backbone is split in two at the last deterministic layer before the classifier:
``trunk`` (frozen in the recipe; on the fast path it runs once per image view and its output is
cached) and ``tail`` (what follows the split: for VGG16 the frozen ``classifier[2:6]`` with its
two dropout layers, then the recipe head). Splitting after the dropout-free part keeps the fast
path the same model as the slow one: dropout still acts on every epoch.

Weights: ``imagenet`` (torchvision's file, downloaded into the torch cache where a network
exists), a local state-dict file, or ``none`` (random init from a fixed seed, so that features
are the same in every run and can be cached).
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import hashlib
import importlib.util
import os
import socket
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from dermsynth.errors import DermsynthError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NONE_INIT_SEED = 0  # weights='none': one fixed random init, so its features can be shared
DOWNLOAD_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class BackboneInfo:
    """What a run needs to know about a backbone before building it."""

    name: str
    input_size: int
    resize: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    feature_dim: int  # width of the trunk's output (the cached feature)
    head_in: int  # width entering the recipe head (4096 for VGG16)
    source: str  # 'torchvision' or 'timm'


@dataclass
class Backbone:
    """A built network with the recipe head attached, and its two halves (sharing modules)."""

    info: BackboneInfo
    net: nn.Module
    trunk: nn.Module
    tail: nn.Module


def recipe_head(
    in_features: int, n_classes: int, hidden: int = 256, dropout: float = 0.4
) -> nn.Sequential:
    """The head that replaces VGG16's ``classifier[6]`` (and any backbone's classifier)."""
    return nn.Sequential(
        nn.Linear(in_features, hidden),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, n_classes),
        nn.LogSoftmax(dim=1),
    )


# The splitters take ``Any``: torchvision's networks are untyped and their layers are reached by
# attribute name, which ``nn.Module`` types as ``Tensor | Module``.
def _vgg16(net: Any, head: nn.Module) -> tuple[nn.Module, nn.Module]:
    net.classifier[6] = head
    c = net.classifier
    return nn.Sequential(net.features, net.avgpool, nn.Flatten(1), c[0], c[1]), nn.Sequential(
        *c[2:]
    )


def _resnet(net: Any, head: nn.Module) -> tuple[nn.Module, nn.Module]:
    net.fc = head
    trunk = nn.Sequential(
        net.conv1,
        net.bn1,
        net.relu,
        net.maxpool,
        net.layer1,
        net.layer2,
        net.layer3,
        net.layer4,
        net.avgpool,
        nn.Flatten(1),
    )
    return trunk, nn.Sequential(head)


def _efficientnet(net: Any, head: nn.Module) -> tuple[nn.Module, nn.Module]:
    net.classifier[1] = head
    return nn.Sequential(net.features, net.avgpool, nn.Flatten(1)), nn.Sequential(*net.classifier)


def _densenet(net: Any, head: nn.Module) -> tuple[nn.Module, nn.Module]:
    net.classifier = head
    trunk = nn.Sequential(net.features, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
    return trunk, nn.Sequential(head)


Splitter = Callable[[nn.Module, nn.Module], tuple[nn.Module, nn.Module]]
# name -> (trunk output width, head input width, splitter)
_TORCHVISION: dict[str, tuple[int, int, Splitter]] = {
    "vgg16": (4096, 4096, _vgg16),
    "resnet18": (512, 512, _resnet),
    "resnet50": (2048, 2048, _resnet),
    "efficientnet_b0": (1280, 1280, _efficientnet),
    "densenet121": (1024, 1024, _densenet),
}


def timm_available() -> bool:
    """True when the optional ``timm`` package is installed."""
    return importlib.util.find_spec("timm") is not None


COLOUR_TEXTURE = "colour-texture"


def list_backbones() -> list[str]:
    """The built-in names (every timm model name works too where timm is installed)."""
    return [*_TORCHVISION, COLOUR_TEXTURE]


def backbone_info(name: str) -> BackboneInfo:
    """Input size, normalization and feature width of a backbone; unknown names are refused."""
    if name in _TORCHVISION:
        width, head_in, _ = _TORCHVISION[name]
        return BackboneInfo(
            name, 224, 256, IMAGENET_MEAN, IMAGENET_STD, width, head_in, "torchvision"
        )
    if name == COLOUR_TEXTURE:
        from dermsynth.train.colour_texture import FEATURE_DIM, VERSION

        return BackboneInfo(
            name,
            128,
            146,
            IMAGENET_MEAN,
            IMAGENET_STD,
            FEATURE_DIM,
            FEATURE_DIM,
            f"builtin-v{VERSION}",
        )
    if timm_available():
        import timm

        if name in timm.list_models():
            model = timm.create_model(name, pretrained=False, num_classes=0)
            cfg = timm.data.resolve_model_data_config(model)
            size = int(cfg["input_size"][-1])
            resize = round(size / float(cfg.get("crop_pct", 0.875)))
            width = int(model.num_features)
            return BackboneInfo(
                name,
                size,
                resize,
                tuple(cfg["mean"]),
                tuple(cfg["std"]),
                width,
                width,
                "timm",
            )
    close = difflib.get_close_matches(name, list_backbones(), n=3, cutoff=0.4)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    more = (
        "" if timm_available() else " (install timm for its models: pip install 'dermsynth[timm]')"
    )
    raise DermsynthError(
        f"unknown backbone {name!r}{hint} Known: {', '.join(list_backbones())}{more}"
    )


def _file_sha256(path: Path) -> str:
    stat = path.stat()
    return _sha256_cached(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    # Keyed by size and mtime too: a rewritten file is hashed again.
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_identity(weights: str) -> str:
    """A string that changes whenever the weights would: the file hash, or source + version."""
    if weights in ("imagenet", "none"):
        return f"{weights}@torchvision-{torchvision.__version__}"
    path = Path(weights)
    if not path.is_file():
        raise DermsynthError(
            f"weights {weights!r}: no such file; give 'imagenet', 'none' or a state-dict file"
        )
    return f"file:{_file_sha256(path)}"


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    # torch.hub downloads without a timeout; offline, a blocked connection would hang forever.
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def _imagenet_state_dict(name: str) -> dict[str, torch.Tensor]:
    enum = torchvision.models.get_model_weights(name).DEFAULT
    url = enum.url
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    filename = os.path.basename(url)
    try:
        with _socket_timeout(DOWNLOAD_TIMEOUT_S):
            return torch.hub.load_state_dict_from_url(url, progress=False, check_hash=False)
    except Exception as exc:  # noqa: BLE001 - any download failure means the same fix
        raise DermsynthError(
            f"ImageNet weights for {name} are not on this machine and cannot be downloaded "
            f"({type(exc).__name__}: {exc}). Place {filename} (from {url}) in {folder}/ "
            f"(or set TORCH_HOME), or give a local state-dict file (--weights PATH; in a study "
            "config, classifier: {weights: PATH})"
        ) from None


def _guess_architecture(keys: set[str]) -> str:
    if any(k.startswith("layer4.") for k in keys):
        return "a ResNet"
    if any(k.startswith("features.denseblock") for k in keys):
        return "a DenseNet"
    if "classifier.6.weight" in keys:
        return "a VGG"
    if any(k.startswith("features.") and ".block." in k for k in keys):
        return "an EfficientNet"
    return "another architecture"


def _load_file(net: nn.Module, name: str, path: Path) -> None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a bad file is a user error, whatever the cause
        raise DermsynthError(
            f"weights file {path}: not a readable torch state dict ({exc})"
        ) from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise DermsynthError(
            f"weights file {path}: holds a {type(state).__name__}, not a state dict"
        )
    state = OrderedDict((k.removeprefix("module."), v) for k, v in state.items())
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state
        and hasattr(state[k], "shape")
        and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s) ({', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) ({', '.join(unexpected[:3])})")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es) ({'; '.join(shapes[:3])})")
        raise DermsynthError(
            f"weights file {path} does not fit backbone {name}: {', '.join(parts)}; "
            f"the file looks like {_guess_architecture(set(state))}"
        )
    net.load_state_dict(state, assign=True)


def _build_net(info: BackboneInfo, weights: str) -> nn.Module:
    if info.source == "timm":
        import timm

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(NONE_INIT_SEED)
            net = timm.create_model(info.name, pretrained=weights == "imagenet", num_classes=0)
        if weights not in ("imagenet", "none"):
            _load_file(net, info.name, Path(weights))
        return net
    if weights == "none":
        # Random init from a fixed seed: 'none' is one network, not a new one per run.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(NONE_INIT_SEED)
            return torchvision.models.get_model(info.name, weights=None)
    # Built without storage, then the loaded tensors are adopted: no random init to overwrite.
    with torch.device("meta"):
        net = torchvision.models.get_model(info.name, weights=None)
    if weights == "imagenet":
        net.load_state_dict(_imagenet_state_dict(info.name), assign=True)
    else:
        _load_file(net, info.name, Path(weights))
    return net


def build_backbone(
    name: str,
    weights: str,
    n_classes: int,
    *,
    frozen: bool,
    hidden: int = 256,
    dropout: float = 0.4,
) -> Backbone:
    """Build ``name`` with ``weights``, freeze it if asked, attach the recipe head, split it.

    Freezing happens before the head is attached, so exactly the pretrained parameters are
    frozen and exactly the head's are trained.
    """
    info = backbone_info(name)
    if info.source.startswith("builtin"):
        return _builtin_backbone(info, weights, n_classes, hidden, dropout)
    if weights not in ("imagenet", "none") and not Path(weights).is_file():
        raise DermsynthError(
            f"weights {weights!r}: no such file; give 'imagenet', 'none' or a state-dict file"
        )
    net = _build_net(info, weights)
    if frozen:
        net.requires_grad_(False)
    head = recipe_head(info.head_in, n_classes, hidden, dropout)
    tail: nn.Module
    if info.source == "timm":
        trunk, tail = net, nn.Sequential(head)
        net = nn.Sequential(OrderedDict(backbone=net, head=head))
    else:
        trunk, tail = _TORCHVISION[name][2](net, head)
    return Backbone(info, net, trunk, tail)


def _builtin_backbone(
    info: BackboneInfo, weights: str, n_classes: int, hidden: int, dropout: float
) -> Backbone:
    from dermsynth.train.colour_texture import ColourTexture

    if weights != "none":
        raise DermsynthError(
            f"backbone {info.name} has no learned weights; use weights 'none' (got {weights!r})"
        )
    trunk = ColourTexture(info.mean, info.std).requires_grad_(False)
    head = recipe_head(info.head_in, n_classes, hidden, dropout)
    tail = nn.Sequential(head)
    return Backbone(info, nn.Sequential(OrderedDict(backbone=trunk, head=head)), trunk, tail)
