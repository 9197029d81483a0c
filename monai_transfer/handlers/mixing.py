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
"""MixUp/CutMix of the trainer's batches (:class:`~monai_transfer.transforms.regularization.BatchMixUpCutMix`), as an
Ignite handler::

    {"_target_": "monai_transfer.handlers.mixing.MixBatchHandler", "seed": "@seed", "mixup_alpha": 0.2,
     "cutmix_alpha": 0.0, "prob": 1.0, "num_classes": "@num_classes", "one_hot": "$@mode != 'multilabel'"}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from monai.utils import CommonKeys

from monai_transfer.transforms.regularization.array import BatchMixUpCutMix

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["MixBatchHandler"]


class MixBatchHandler:
    """Ignite handler mixing the trainer's batch at ``ITERATION_STARTED`` with :class:`BatchMixUpCutMix`.

    The batch (a dict with ``image_key``/``label_key``, or a ``(image, label, ...)`` sequence) is replaced before
    the trainer's ``prepare_batch`` reads it; the validation batches are never touched. Before each batch the
    transform is reseeded from ``(seed, iteration, rank)``.

    Args:
        seed: the run's seed.
        image_key: batch key of the images.
        label_key: batch key of the labels.
        kwargs: :class:`BatchMixUpCutMix` arguments (``mixup_alpha``, ``cutmix_alpha``, ``prob``, ...).
    """

    def __init__(
        self, seed: int = 0, image_key: str = CommonKeys.IMAGE, label_key: str = CommonKeys.LABEL, **kwargs: Any
    ) -> None:
        if int(seed) < 0:
            raise ValueError(f"seed must be non-negative, got {seed}.")
        self.seed = int(seed)
        self.image_key = image_key
        self.label_key = label_key
        self.mixer = BatchMixUpCutMix(**kwargs)

    def attach(self, engine: Engine) -> None:
        """Register on ``Events.ITERATION_STARTED`` (nothing when both alphas are 0)."""
        from ignite.engine import Events

        if self.mixer.enabled:
            engine.add_event_handler(Events.ITERATION_STARTED, self)

    def mix(self, batch: Any, iteration: int) -> Any:
        """``batch`` with its images and labels mixed, reproducibly for ``iteration``."""
        import torch.distributed as dist

        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        self.mixer.set_random_state(
            state=np.random.RandomState(np.random.MT19937(np.random.SeedSequence([self.seed, iteration, rank])))
        )
        if isinstance(batch, Mapping):
            if self.image_key not in batch or self.label_key not in batch:
                raise KeyError(f"mixing needs '{self.image_key}' and '{self.label_key}' in the batch: {sorted(batch)}.")
            out = dict(batch)
            out[self.image_key], out[self.label_key] = self.mixer(batch[self.image_key], batch[self.label_key])
            return out
        image, label = self.mixer(batch[0], batch[1])
        return type(batch)([image, label, *batch[2:]]) if isinstance(batch, list) else (image, label, *batch[2:])

    def __call__(self, engine: Engine) -> None:
        """Mix ``engine.state.batch`` in place of the loaded one."""
        engine.state.batch = self.mix(engine.state.batch, engine.state.iteration)
