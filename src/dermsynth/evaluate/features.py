"""Image feature extractors by name, for the synthetic-set metrics (KID, FID, PRDC, CAS, copies).

One name picks one extractor; each turns a list of RGB images into one vector per image:

* ``colour-texture`` (default): dermsynth's weight-free colour, texture and blob descriptor
  (:mod:`dermsynth.train.colour_texture`). Works offline, in seconds on a CPU; the extractor of
  the demo and the tests. Its numbers are comparable only with numbers from the same extractor.
* ``backbone:NAME`` or ``backbone:NAME@WEIGHTS``: the pooled trunk of a backbone of
  :mod:`dermsynth.train.backbones` (``resnet50``, ``vgg16``, any timm model ...), weights
  ``imagenet`` (default; torchvision's file, downloaded where a network exists), ``none`` or a
  state-dict file.
* ``classifier:RUN_DIR``: the trunk of a finished ``dermsynth train`` run (its own backbone,
  weights and input size), e.g. a classifier trained on the real data.
* ``inception`` or ``inception:FILE``: the InceptionV3 of torch-fidelity that torchmetrics' FID
  and KID use by default (2048 pooled features): the numbers other papers report. It needs the
  torch-fidelity package and its weights file on disk; nothing is downloaded here.
* ``dinov2:FOLDER_OR_HUB_ID`` and ``clip:FOLDER_OR_HUB_ID``: a DINOv2 (pooled CLS) or CLIP
  (projected image embedding) model through transformers, from a local folder (as
  ``save_pretrained`` writes it) or a hub id found in the Hugging Face cache or downloadable.

Every image is resized to the extractor's input (shorter side, then a centre square), so sets
of different image sizes are compared at one size.
"""

from __future__ import annotations

import importlib.util
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import numpy as np
import torch
from PIL import Image

from dermsynth.errors import DermsynthError

DEFAULT_FEATURES = "colour-texture"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = (
    f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"
)
INCEPTION_SIZE = 299
HF_KINDS: tuple[str, ...] = ("dinov2", "clip")
HUB_PROBE_TIMEOUT_S = 5.0
FEATURE_NAMES: tuple[str, ...] = (
    "colour-texture",
    "backbone:NAME[@WEIGHTS]",
    "classifier:RUN_DIR",
    "inception[:FILE]",
    "dinov2:FOLDER_OR_HUB_ID",
    "clip:FOLDER_OR_HUB_ID",
)
_HF_FILES = (
    "config.json, model.safetensors and preprocessor_config.json, as save_pretrained writes them"
)


class FeatureExtractor(Protocol):
    """Anything mapping RGB images to one feature vector each (rows of a 2-D array)."""

    name: str

    @property
    def input_size(self) -> int | None:
        """Side of the square the images are resized to (None: the model's processor decides)."""

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray: ...


def square_uint8(image: Image.Image, size: int) -> torch.Tensor:
    """Shorter side to ``size``, centre square, as a uint8 CHW tensor."""
    import torchvision.transforms.functional as TF

    resized = TF.center_crop(TF.resize(image, size), [size, size])
    return TF.pil_to_tensor(resized)


@dataclass
class TorchExtractor:
    """A torch network fed uint8 batches at ``input_size``; ``forward`` does its normalization."""

    name: str
    input_size: int
    forward: Callable[[torch.Tensor], torch.Tensor]
    device: torch.device

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, 0))
        batch = torch.stack([square_uint8(image, self.input_size) for image in images])
        with torch.inference_mode():
            feats = self.forward(batch.to(self.device))
        return feats.reshape(feats.shape[0], -1).double().cpu().numpy()


@dataclass
class HFExtractor:
    """A transformers vision model and its image processor (DINOv2 or CLIP)."""

    name: str
    input_size: int | None
    model: Any
    processor: Any
    device: torch.device

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, 0))
        pixels = self.processor(images=list(images), return_tensors="pt")["pixel_values"]
        pixels = pixels.to(self.device)
        with torch.inference_mode():
            if hasattr(self.model, "get_image_features"):
                out = self.model.get_image_features(pixel_values=pixels)
            else:
                out = self.model(pixel_values=pixels)
        feats = _pooled(out)
        return feats.reshape(feats.shape[0], -1).double().cpu().numpy()


def _pooled(out: Any) -> torch.Tensor:
    # Feature getters return a tensor, or (in newer transformers) an output object.
    if isinstance(out, torch.Tensor):
        return out
    for attr in ("image_embeds", "pooler_output"):
        got = getattr(out, attr, None)
        if got is not None:
            return got
    return out.last_hidden_state[:, 0]


def make_feature_extractor(
    spec: str = DEFAULT_FEATURES, *, device: str = "cpu"
) -> FeatureExtractor:
    """The extractor a name stands for (see the module docstring); unknown names are refused."""
    spec = spec.strip()
    kind, _, ref = spec.partition(":")
    torch_device = _device(device)
    if spec == DEFAULT_FEATURES:
        return backbone_extractor(DEFAULT_FEATURES, "none", torch_device)
    if kind == "backbone" and ref:
        name, _, weights = ref.partition("@")
        default = "none" if name == DEFAULT_FEATURES else "imagenet"
        return backbone_extractor(name, weights or default, torch_device)
    if kind == "classifier" and ref:
        return classifier_extractor(ref, torch_device)
    if kind == "inception":
        return inception_extractor(ref or None, torch_device)
    if kind in HF_KINDS and ref:
        return hf_extractor(kind, ref, torch_device)
    raise DermsynthError(
        f"unknown feature extractor {spec!r}; use one of {', '.join(FEATURE_NAMES)}"
    )


def _device(name: str) -> torch.device:
    from dermsynth.train.predict import pick_device

    return pick_device(name)


def backbone_extractor(name: str, weights: str, device: torch.device) -> TorchExtractor:
    """The pooled trunk of a dermsynth backbone (``colour-texture`` needs weights ``none``)."""
    from dermsynth.train.backbones import build_backbone
    from dermsynth.train.datasets import normalize_batch

    built = build_backbone(name, weights, 2, frozen=True)
    info = built.info
    trunk = built.trunk.eval().to(device)

    def forward(batch: torch.Tensor) -> torch.Tensor:
        return trunk(normalize_batch(batch, info.mean, info.std))

    label = name if name == DEFAULT_FEATURES else f"backbone:{name}@{weights}"
    return TorchExtractor(label, info.input_size, forward, device)


def classifier_extractor(run_dir: str, device: torch.device) -> TorchExtractor:
    """The trunk of a finished training run, at the run's own input size."""
    from dermsynth.train.predict import load_run

    if not Path(run_dir).is_dir():
        raise DermsynthError(
            f"classifier:{run_dir}: no such run folder; give a finished `dermsynth train` run"
        )
    scorer = load_run(run_dir, device=str(device))
    model = scorer.model.to(device).eval()
    return TorchExtractor(f"classifier:{run_dir}", scorer.spec.image_size, model.features, device)


def inception_extractor(weights: str | None, device: torch.device) -> TorchExtractor:
    """torch-fidelity's InceptionV3 (2048 pooled features), from a weights file on disk."""
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    path = Path(weights) if weights else folder / INCEPTION_FILE
    place = (
        f"place {INCEPTION_FILE} (from {INCEPTION_URL}) in {folder}/ (or set TORCH_HOME), or "
        f"pass inception:/path/to/{INCEPTION_FILE}; offline without it, use --features "
        f"{DEFAULT_FEATURES} or backbone:NAME"
    )
    if importlib.util.find_spec("torch_fidelity") is None:
        raise DermsynthError(
            "inception features need the torch-fidelity package (pip install torch-fidelity), "
            f"whose InceptionV3 torchmetrics uses, and its weights: {place}"
        )
    if not path.is_file():
        raise DermsynthError(f"inception weights not found at {path}: {place}")
    from torchmetrics.image.fid import NoTrainInceptionV3

    net = NoTrainInceptionV3(
        name="inception-v3-compat",
        features_list=["2048"],
        feature_extractor_weights_path=str(path),
    )
    net = net.eval().to(device)
    return TorchExtractor("inception", INCEPTION_SIZE, net, device)


def hf_extractor(kind: str, ref: str, device: torch.device) -> HFExtractor:
    """A DINOv2 or CLIP model from a local folder or a hub id (cache first, then download)."""
    local = Path(ref).expanduser()
    if local.exists() or ref.startswith(("/", ".", "~")):
        if not local.is_dir():
            raise DermsynthError(
                f"{kind}:{ref}: no such folder; place the model folder there ({_HF_FILES})"
            )
        source = str(local)
    else:
        source = ref if _hub_reachable() else _cached_snapshot(kind, ref)
    if importlib.util.find_spec("transformers") is None:
        raise DermsynthError(f"{kind} features need transformers: pip install transformers")
    from transformers import AutoImageProcessor, AutoModel

    try:
        model = AutoModel.from_pretrained(source).eval().to(device)
        processor = AutoImageProcessor.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise DermsynthError(_hf_missing(kind, ref, exc)) from None
    return HFExtractor(f"{kind}:{ref}", _processor_size(processor), model, processor, device)


def _hub_reachable() -> bool:
    # Offline, transformers retries for most of a minute before giving up: probe once, briefly.
    if os.environ.get("HF_HUB_OFFLINE", "").strip() not in ("", "0"):
        return False
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=HUB_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def _cached_snapshot(kind: str, ref: str) -> str:
    """The hub id's folder in the Hugging Face cache; offline, a lookup would retry for a minute."""
    from huggingface_hub import snapshot_download

    try:
        return str(snapshot_download(ref, local_files_only=True))
    except Exception as exc:  # noqa: BLE001 - every lookup failure means the same fix
        raise DermsynthError(_hf_missing(kind, ref, exc)) from None


def _hf_missing(kind: str, ref: str, exc: Exception) -> str:
    from huggingface_hub import constants

    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return (
        f"{kind} model {ref!r} is not on this machine and cannot be downloaded ({reason}); "
        f"place its folder ({_HF_FILES}) on disk and pass {kind}:/path/to/folder, or put the "
        f"model in the Hugging Face cache ({constants.HF_HUB_CACHE})"
    )


def _processor_size(processor: Any) -> int | None:
    for attr in ("crop_size", "size"):
        value = getattr(processor, attr, None)
        if isinstance(value, dict):
            for key in ("height", "shortest_edge"):
                if value.get(key):
                    return int(value[key])
        elif isinstance(value, int):
            return value
    return None
