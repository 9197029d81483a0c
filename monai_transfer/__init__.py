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
"""monai-transfer: ImageNet transfer learning for medical images, as a MONAI plugin.

Importing this package is cheap: subpackages (and torchvision/timm behind them) load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: the library layers, lowest first, then the applications on top (``tests/test_layers.py`` holds the layer table).
_SUBPACKAGES = (
    "deprecated",
    "utils",
    "metrics",
    "optimizers",
    "networks",
    "transforms",
    "inferers",
    "data",
    "losses",
    "reports",
    "handlers",
    "engines",
    "label",
    "run_bundle",
    "evaluate",
    "cv",
    "audit",
    "bundle_components",
)

__all__ = ["__version__", *_SUBPACKAGES]


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
