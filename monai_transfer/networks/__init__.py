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
"""Networks: backbone registry (``backbones``), MONAI-style nets (``nets``), fine-tuning helpers (``finetune``),
tensor helpers shared with the transforms (``utils``) and the weights record (``checkpoint_record``).

Subpackages load on first use, so ``import monai_transfer.networks`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["backbones", "nets", "finetune", "utils", "checkpoint_record"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
