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
"""Optional heavy dependencies, imported lazily through MONAI's ``optional_import``.

Nothing here imports torchvision, timm, pydicom or nibabel at module import time: each handle is a
lazy proxy that raises a clear ``OptionalImportError`` naming the missing package on first use.
"""

from __future__ import annotations

from monai.utils import optional_import

__all__ = [
    "torchvision",
    "has_torchvision",
    "timm",
    "has_timm",
    "pydicom",
    "has_pydicom",
    "nibabel",
    "has_nibabel",
    "safetensors_torch",
    "has_safetensors",
    "ignite",
    "has_ignite",
    "IGNITE_MIN_VERSION",
]

IGNITE_MIN_VERSION = "0.4.11"

torchvision, has_torchvision = optional_import("torchvision", "0.17")
timm, has_timm = optional_import("timm", "1.0")
pydicom, has_pydicom = optional_import("pydicom", "2.4")
nibabel, has_nibabel = optional_import("nibabel")
safetensors_torch, has_safetensors = optional_import("safetensors.torch")
ignite, has_ignite = optional_import("ignite", IGNITE_MIN_VERSION)
