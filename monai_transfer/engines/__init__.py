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
"""MONAI engines' helpers: device, determinism, batch preparation (``prepare_batch``), rank-aware iteration helpers
(``utils``) and the workflow steps bundle configs call around the trainer and evaluator (``workflow``). Bundles use the
full module paths (``monai_transfer.engines.utils.ChannelsLastPrepareBatch``).

Losses, samplers, optimisers and handlers live in :mod:`monai_transfer.losses`, :mod:`monai_transfer.data.samplers`,
:mod:`monai_transfer.optimizers` and :mod:`monai_transfer.handlers`; their old paths here (``engines.losses``,
``engines.optim``, ``engines.mixing``, ``engines.cv``, ...) still import for one release, with a ``DeprecationWarning``
(:mod:`monai_transfer.deprecated`).
"""

from __future__ import annotations

from typing import Any

from monai_transfer.deprecated import install, moved_attribute

from . import utils, workflow  # noqa: F401  (modules for full dotted paths in bundle configs)
from .utils import (
    ChannelsLastPrepareBatch,
    amp_enabled,
    auto_device,
    configure_cuda_speedups,
    rank_zero_score,
    set_run_determinism,
)

__all__ = [
    "auto_device",
    "amp_enabled",
    "set_run_determinism",
    "configure_cuda_speedups",
    "rank_zero_score",
    "ChannelsLastPrepareBatch",
]


install()  # the old module paths of monai_transfer.deprecated.MOVED, for one release


def __getattr__(name: str) -> Any:
    return moved_attribute(__name__, name)
