# Copyright (c) monai-transfer contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""torchvision backbones: ResNet-18/34/50, DenseNet-121, EfficientNet-B0..B3, ConvNeXt-Tiny, MobileNetV3-S/L.

The configuration data below mirrors each model's ``DEFAULT`` ImageNet weights (crop size, interpolation, mean/std;
a test checks them against torchvision) so that ``get_backbone_cfg`` needs no torchvision. Any named weights
(``"ResNet50_Weights.IMAGENET1K_V1"``, ``"IMAGENET1K_V2"``, ``"DEFAULT"``) are read from torchvision's weights enum
(:func:`torchvision_weights_cfg`: its ``transforms()`` preset and ``meta``), never copied. torchvision itself is
imported (through :mod:`monai_transfer.utils.deps`) only when a model is built or named weights are looked up.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from monai_transfer.utils import deps

from ._builder import load_weights_file
from ._config import OFFLINE_ENV, TIMM_PREFIX, BackboneCfg, WeightsCfg, WeightsUnavailableError, is_offline
from ._features import BackboneFeatures
from ._registry import register_backbone, register_family

__all__ = [
    "TorchvisionFeatures",
    "TORCHVISION_BACKBONES",
    "build_torchvision_model",
    "torchvision_to_features",
    "torchvision_weights_file",
    "torchvision_weights_cfg",
]

_TV_LICENSE = "BSD-3-Clause (torchvision code); ImageNet-1k weights, see the torchvision model docs for terms"


def _s(*groups) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(str(n) for n in g) for g in groups)


_RESNET_STAGES = _s(("conv1", "bn1", "relu", "maxpool"), ("layer1",), ("layer2",), ("layer3",), ("layer4",))
_EFFNET_STAGES = _s((0,), (1,), (2,), (3,), (4,), (5,), (6,), (7, 8))
_DENSENET_STAGES = _s(
    ("conv0", "norm0", "relu0", "pool0"),
    ("denseblock1", "transition1"),
    ("denseblock2", "transition2"),
    ("denseblock3", "transition3"),
    ("denseblock4", "norm5", "relu5"),
)

# fmt: off
# name: (default weights, feature_dim, input_size, resize_size, interpolation, classifier, first_conv, stages)
_SPECS: dict[str, tuple] = {
    "resnet18": ("ResNet18_Weights.IMAGENET1K_V1", 512, 224, 256, "bilinear", "fc", "conv1", _RESNET_STAGES),
    "resnet34": ("ResNet34_Weights.IMAGENET1K_V1", 512, 224, 256, "bilinear", "fc", "conv1", _RESNET_STAGES),
    "resnet50": ("ResNet50_Weights.IMAGENET1K_V2", 2048, 224, 232, "bilinear", "fc", "conv1", _RESNET_STAGES),
    "densenet121": (
        "DenseNet121_Weights.IMAGENET1K_V1", 1024, 224, 256, "bilinear", "classifier", "conv0", _DENSENET_STAGES,
    ),
    "efficientnet_b0": (
        "EfficientNet_B0_Weights.IMAGENET1K_V1", 1280, 224, 256, "bicubic", "classifier.1", "0.0", _EFFNET_STAGES,
    ),
    "efficientnet_b1": (
        "EfficientNet_B1_Weights.IMAGENET1K_V2", 1280, 240, 255, "bilinear", "classifier.1", "0.0", _EFFNET_STAGES,
    ),
    "efficientnet_b2": (
        "EfficientNet_B2_Weights.IMAGENET1K_V1", 1408, 288, 288, "bicubic", "classifier.1", "0.0", _EFFNET_STAGES,
    ),
    "efficientnet_b3": (
        "EfficientNet_B3_Weights.IMAGENET1K_V1", 1536, 300, 320, "bicubic", "classifier.1", "0.0", _EFFNET_STAGES,
    ),
    "convnext_tiny": (
        "ConvNeXt_Tiny_Weights.IMAGENET1K_V1", 768, 224, 236, "bilinear", "classifier.2", "0.0",
        _s((0,), (1,), (2, 3), (4, 5), (6, 7)),
    ),
    "mobilenet_v3_small": (
        "MobileNet_V3_Small_Weights.IMAGENET1K_V1", 1024, 224, 256, "bilinear", "classifier.3", "0.0",
        _s((0,), (1,), (2, 3), (4, 5, 6, 7, 8), (9, 10, 11, 12)),
    ),
    "mobilenet_v3_large": (
        "MobileNet_V3_Large_Weights.IMAGENET1K_V2", 1280, 224, 232, "bilinear", "classifier.3", "0.0",
        _s((0, 1), (2, 3), (4, 5, 6), (7, 8, 9, 10, 11, 12), (13, 14, 15, 16)),
    ),
}
# fmt: on

TORCHVISION_BACKBONES: tuple[str, ...] = tuple(_SPECS)


class TorchvisionFeatures(BackboneFeatures):
    """torchvision network without its classifier: ``body`` (convolutional trunk) then ``pool`` (the network's own
    global average pooling, with ConvNeXt's LayerNorm or MobileNetV3's pretrained pre-logits layer)."""

    def __init__(self, body: nn.Module, pool: nn.Module, feature_dim: int, stage_names, first_conv: str):
        super().__init__(body, feature_dim, stage_names, first_conv)
        self.pool = pool

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.body(x))


def build_torchvision_model(cfg: BackboneCfg) -> nn.Module:
    """Randomly initialised torchvision ImageNet model ``cfg.arch`` (1000 classes)."""
    return deps.torchvision_models.get_model(cfg.arch, weights=None)


def torchvision_to_features(model: nn.Module, cfg: BackboneCfg) -> tuple[TorchvisionFeatures, BackboneCfg]:
    """Split a torchvision classifier into :class:`TorchvisionFeatures` (its parameters are shared, not copied)."""
    arch = cfg.arch
    gap = [nn.AdaptiveAvgPool2d(1), nn.Flatten(1)]
    if arch.startswith("resnet"):
        names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
        body = nn.Sequential(OrderedDict((n, getattr(model, n)) for n in names))
        pool = nn.Sequential(*gap)
    elif arch.startswith("densenet"):
        body = nn.Sequential(OrderedDict(list(model.features.named_children()) + [("relu5", nn.ReLU(inplace=False))]))
        pool = nn.Sequential(*gap)
    elif arch.startswith("efficientnet"):
        body, pool = model.features, nn.Sequential(*gap)
    elif arch.startswith("convnext"):
        # torchvision pools, then LayerNorm2d, then flattens: keep the pretrained norm
        body, pool = model.features, nn.Sequential(nn.AdaptiveAvgPool2d(1), model.classifier[0], nn.Flatten(1))
    elif arch.startswith("mobilenet_v3"):
        # keep the pretrained pre-logits Linear + Hardswish (576->1024 / 960->1280) like timm's conv_head
        body = model.features
        pool = nn.Sequential(*gap, model.classifier[0], model.classifier[1])
    else:
        raise ValueError(f"no feature layout for torchvision arch {arch!r}.")
    return TorchvisionFeatures(body, pool, cfg.feature_dim or 0, cfg.stage_names, cfg.first_conv), cfg


# ------------------------------------------------------------------------------------------- weights loader
_HASH_REGEX = re.compile(r"-([a-f0-9]*)\.")


def _weights_enum_member(arch: str, spec: str) -> tuple[Any, str]:
    """``(weights_enum_member, "EnumClass.MEMBER")`` for ``spec`` (``"ResNet50_Weights.IMAGENET1K_V2"``,
    ``"IMAGENET1K_V2"`` or ``"DEFAULT"``) of torchvision model ``arch``.

    Raises:
        ValueError: ``spec`` is not a weights name of ``arch``.
    """
    enum_cls = deps.torchvision_models.get_model_weights(arch)
    try:
        w = enum_cls.verify(spec)
    except (KeyError, TypeError, ValueError) as e:
        valid = [f"{enum_cls.__name__}.{m}" for m in enum_cls.__members__]
        raise ValueError(f"weights {spec!r} is not a torchvision weights name of {arch!r}; valid: {valid}.") from e
    return w, f"{enum_cls.__name__}.{w.name}"


def torchvision_weights_cfg(cfg: BackboneCfg, spec: str) -> WeightsCfg:
    """:class:`WeightsCfg` of torchvision weights ``spec``, read from the weights enum (``transforms()``, ``meta``).

    Raises:
        ValueError: ``spec`` is not a weights name of ``cfg.arch``.
    """
    w, enum_name = _weights_enum_member(cfg.arch, spec)
    t = w.transforms()  # torchvision's ImageClassification preset of these weights
    crop, resize = int(t.crop_size[0]), int(t.resize_size[0])
    file_name = os.path.basename(urlparse(w.url).path)
    match = _HASH_REGEX.search(file_name)
    return WeightsCfg(
        backbone=cfg.name,
        tag=enum_name,
        mean=tuple(t.mean),
        std=tuple(t.std),
        input_size=crop,
        resize_size=resize,
        crop_pct=round(crop / resize, 4),
        interpolation=str(t.interpolation.value),
        license=cfg.license,
        source=w.url,
        num_classes=len(w.meta.get("categories") or []) or None,
        sha256=match.group(1) if match else None,
        file_name=file_name,
    )


def torchvision_weights_file(arch: str, spec: str, progress: bool = False) -> tuple[Path, str, str]:
    """Find (cache first) or download torchvision weights.

    Args:
        arch: torchvision model name (``"resnet50"``).
        spec: weights enum name: ``"ResNet50_Weights.IMAGENET1K_V2"``, ``"IMAGENET1K_V2"`` or ``"DEFAULT"``.
        progress: show a download progress bar.

    Returns:
        ``(path, url, enum_name)``; ``path`` is ``torch.hub.get_dir()/checkpoints/<file name in the url>``.

    Raises:
        ValueError: ``spec`` is not a weights name of ``arch``.
        WeightsUnavailableError: the file is not cached and cannot be downloaded; the message names the cache path.
    """
    w, enum_name = _weights_enum_member(arch, spec)
    url = w.url
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
    if path.is_file():
        return path, url, enum_name
    hint = (
        f"download {url} on a machine with internet access and place it at {path} "
        f"(torch.hub.get_dir()/checkpoints; set TORCH_HOME to move the cache), "
        f"or pass weights='/path/to/{path.name}'."
    )
    if is_offline():
        raise WeightsUnavailableError(f"{enum_name} is not in the torch hub cache and {OFFLINE_ENV} is set: {hint}")
    match = _HASH_REGEX.search(path.name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), hash_prefix=match.group(1) if match else None, progress=progress)
    except Exception as e:  # URLError, socket errors, hash mismatch...
        if path.exists():
            path.unlink()
        raise WeightsUnavailableError(f"could not download {enum_name} ({type(e).__name__}: {e}): {hint}") from e
    return path, url, enum_name


def _resolve_torchvision_weights(weights: str, cfg: BackboneCfg) -> tuple[str, str]:
    low = weights.lower()
    if low == "packaged":
        raise ValueError(
            f"weights='packaged' exists only for EfficientNet-Lite backbones, not {cfg.name!r} "
            f"(family {cfg.family!r}); use weights={cfg.weights_source!r} or a local file."
        )
    if low == "timm" or low.startswith(TIMM_PREFIX):
        raise ValueError(
            f"weights={weights!r} needs a timm backbone; {cfg.name!r} is {cfg.family!r} "
            f"(use backbone='timm:{cfg.arch}' for timm's weights)."
        )
    return "torchvision", weights


def _load_torchvision_weights(cfg: BackboneCfg, builder, kind: str, spec: str, sha256: str | None):
    path, url, enum_name = torchvision_weights_file(cfg.arch, spec)
    model, info = load_weights_file(cfg, builder, path, sha256)
    info.update(url=url, resolved=enum_name, license=cfg.license)
    return model, info


for _name, (_w, _dim, _size, _resize, _interp, _cls, _conv, _stages) in _SPECS.items():
    register_backbone(
        _name,
        BackboneCfg(
            name=_name,
            family="torchvision",
            arch=_name,
            input_size=_size,
            interpolation=_interp,
            first_conv=_conv,
            classifier=_cls,
            feature_dim=_dim,
            license=_TV_LICENSE,
            weights_source=_w,
            stage_names=_stages,
            crop_pct=round(_size / _resize, 4),
        ),
    )(build_torchvision_model)

register_family(
    "torchvision",
    to_features=torchvision_to_features,
    resolve_weights=_resolve_torchvision_weights,
    weights_cfg=lambda cfg, kind, spec: torchvision_weights_cfg(cfg, spec),
    load_weights=_load_torchvision_weights,
)
