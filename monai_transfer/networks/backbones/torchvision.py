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
a test checks them against torchvision). torchvision itself is imported only when a model is built.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ._registry import BackboneCfg, BackboneFeatures, register_backbone, register_family

__all__ = ["TorchvisionFeatures", "TORCHVISION_BACKBONES", "build_torchvision_model", "torchvision_to_features"]

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
    from torchvision.models import get_model

    return get_model(cfg.arch, weights=None)


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

register_family("torchvision", to_features=torchvision_to_features)
