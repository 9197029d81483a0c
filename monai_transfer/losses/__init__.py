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
"""Classification losses (cross-entropy, BCE-with-logits, focal) that take integer, multi-hot or soft targets.
Bundles use the full module paths (``monai_transfer.losses.classification.build_loss``)."""

from __future__ import annotations

from . import classification  # noqa: F401  (module for full dotted paths in bundle configs)
from .classification import (
    ClassificationBCEWithLogitsLoss,
    ClassificationCrossEntropyLoss,
    ClassificationFocalLoss,
    build_loss,
)

__all__ = ["ClassificationCrossEntropyLoss", "ClassificationBCEWithLogitsLoss", "ClassificationFocalLoss", "build_loss"]
