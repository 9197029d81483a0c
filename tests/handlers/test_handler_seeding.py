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
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.data import DataLoader, Dataset
from monai.transforms import RandGaussianNoised

from monai_transfer.data.samplers import make_weighted_sampler
from monai_transfer.handlers.seeding import EpochSeed, epoch_seed


def _draws():
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def _loader(sampler=False):
    data = [{"image": np.zeros((1, 2, 2), np.float32), "i": i} for i in range(12)]
    ds = Dataset(data, RandGaussianNoised("image", prob=1.0, std=1.0))
    if sampler:
        return DataLoader(ds, batch_size=4, sampler=make_weighted_sampler(np.arange(12) % 3, seed=0))
    return DataLoader(ds, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(0))


def _epoch(loader):
    batches = list(loader)
    return torch.cat([b["i"] for b in batches]).tolist(), torch.cat([b["image"] for b in batches])


def test_epoch_seed_values():
    assert epoch_seed(0, 1) == epoch_seed(0, 1)
    assert len({epoch_seed(0, e) for e in range(1, 50)} | {epoch_seed(1, 1)}) == 50
    assert 0 <= epoch_seed(2**40, 3) < 2**32


def test_reseed_global_generators():
    h = EpochSeed(seed=5)
    h.reseed(3)
    a = _draws()
    _draws()
    h.reseed(3)
    assert _draws() == a
    h.reseed(4)
    assert _draws() != a
    with pytest.raises(ValueError, match="seed"):
        EpochSeed(-1)


@pytest.mark.parametrize("sampler", [False, True])
def test_reseed_makes_epoch_independent_of_history(sampler):
    """Shuffling (loader or sampler generator) and transform randomness depend only on (seed, epoch)."""
    loader = _loader(sampler)
    h = EpochSeed(seed=1, data_loader=loader)
    h.reseed(2)
    order_a, img_a = _epoch(loader)
    for _ in range(3):  # consume randomness as other epochs would
        _epoch(loader)
    h.reseed(2)
    order_b, img_b = _epoch(loader)
    assert order_a == order_b and torch.equal(img_a, img_b)
    h.reseed(3)
    order_c, img_c = _epoch(loader)
    assert not torch.equal(img_a, img_c)
    if not sampler:
        assert sorted(order_c) == list(range(12)) and order_a != order_c


def test_attached_fires_at_epoch_started():
    seen = []
    engine = Engine(lambda e, b: None)
    EpochSeed(seed=9).attach(engine)
    engine.add_event_handler(Events.EPOCH_STARTED, lambda e: seen.append(float(torch.rand(1))))
    engine.run([0, 1], max_epochs=3)
    expected = []
    for epoch in (1, 2, 3):
        torch.manual_seed(epoch_seed(9, epoch))
        expected.append(float(torch.rand(1)))
    assert seen == expected
