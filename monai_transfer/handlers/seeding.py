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
"""Per-epoch reseeding, so that a run resumed from an epoch checkpoint equals an uninterrupted run.

A checkpoint holds the network, optimiser, scheduler and trainer state but not the random generators (Python,
NumPy, torch, the data loader's shuffling generator, the random state of every MONAI ``Randomizable`` transform).
:class:`EpochSeed` reseeds all of them at the start of each epoch from ``(seed, epoch)``; the epoch's shuffling,
augmentations and dropout then depend only on the seed and the epoch number, not on how the process got there.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.data.utils import set_rnd
from monai.utils import MAX_SEED

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["epoch_seed", "EpochSeed"]


def epoch_seed(seed: int, epoch: int) -> int:
    """A well-mixed 32-bit seed derived from ``(seed, epoch)`` (NumPy ``SeedSequence``)."""
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1)[0]) % MAX_SEED


class EpochSeed:
    """Ignite handler reseeding every random generator at ``EPOCH_STARTED`` from ``(seed, epoch)``.

    It reseeds Python ``random``, NumPy's global generator and torch (CPU and CUDA); when ``data_loader`` is given
    also the loader's ``generator``, its sampler's ``generator`` (e.g. a ``WeightedRandomSampler`` built with a
    seeded generator) and, for ``num_workers=0``, the random state of every MONAI randomizable transform of its
    dataset (with workers, MONAI's ``worker_init_fn`` derives the transforms' seeds from the freshly seeded torch
    generator). Ignite creates each epoch's data iterator after ``EPOCH_STARTED``, so shuffling is covered too.

    Resume is exact from epoch boundaries (``CheckpointSaver(..., save_interval=1, epoch_level=True)``); resuming
    from a mid-epoch checkpoint replays that epoch's data order but not its exact random state.

    Args:
        seed: base seed (the run's seed).
        data_loader: the training ``DataLoader``, optional.

    Raises:
        ValueError: when ``seed`` is negative.

    Example::

        {"_target_": "monai_transfer.handlers.seeding.EpochSeed", "seed": "@seed",
         "data_loader": "@train#dataloader"}
    """

    def __init__(self, seed: int = 0, data_loader: Any | None = None) -> None:
        if int(seed) < 0:
            raise ValueError(f"seed must be non-negative, got {seed}.")
        self.seed = int(seed)
        self.data_loader = data_loader

    def attach(self, engine: Engine) -> None:
        """Register on ``Events.EPOCH_STARTED``."""
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def reseed(self, epoch: int) -> int:
        """Reseed everything for ``epoch``; returns the derived seed."""
        s = epoch_seed(self.seed, epoch)
        random.seed(s)
        np.random.seed(s)
        torch.manual_seed(s)  # also seeds every CUDA device
        loader = self.data_loader
        if loader is not None:
            gen = getattr(loader, "generator", None)
            if isinstance(gen, torch.Generator):
                gen.manual_seed(s)
            sampler = getattr(loader, "sampler", None)
            sgen = getattr(sampler, "generator", None)
            if isinstance(sgen, torch.Generator) and sgen is not gen:
                sgen.manual_seed(epoch_seed(s, 1))
            if getattr(loader, "num_workers", 0) == 0 and getattr(loader, "dataset", None) is not None:
                set_rnd(loader.dataset, epoch_seed(s, 2))
        return s

    def __call__(self, engine: Engine) -> None:
        """Reseed for ``engine.state.epoch``."""
        self.reseed(engine.state.epoch)
