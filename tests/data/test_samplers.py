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
"""Training labels, class weights and class-balanced samplers (``monai_transfer.data.samplers``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.utils.class_weight import compute_class_weight

from monai_transfer.data.samplers import (
    DistributedWeightedSampler,
    build_distributed_sampler,
    build_sampler,
    class_weights_from_labels,
    labels_from_datalist,
    make_weighted_sampler,
    pos_weight_from_labels,
)


def test_class_weights_match_sklearn_balanced():
    y = np.array([0] * 10 + [1] * 30 + [2] * 5)
    w = class_weights_from_labels(y, num_classes=3)
    np.testing.assert_allclose(w.numpy(), compute_class_weight("balanced", classes=np.arange(3), y=y), rtol=1e-6)
    # average weight per sample is 1
    assert float((w[torch.as_tensor(y)]).mean()) == pytest.approx(1.0)
    # an absent class gets 0; the others are renormalised over the present classes
    w4 = class_weights_from_labels(y, num_classes=4)
    assert w4[3] == 0 and torch.allclose(w4[:3], w)
    with pytest.raises(ValueError, match="out of range"):
        class_weights_from_labels([0, 3], num_classes=2)


def test_pos_weight_from_labels():
    multi = np.array([[1, 0], [1, 1], [0, 0], [1, 0]])
    torch.testing.assert_close(pos_weight_from_labels(multi), torch.tensor([1 / 3, 3.0]))
    torch.testing.assert_close(pos_weight_from_labels([0, 0, 0, 1]), torch.tensor([3.0]))
    with pytest.raises(ValueError, match="0 or 1"):
        pos_weight_from_labels([0, 2])


def test_labels_from_datalist():
    dl = [{"image": "a.png", "label": 1}, {"image": "b.png", "label": [0]}, {"image": "c.png", "label": 0}]
    np.testing.assert_array_equal(labels_from_datalist(dl), [1, 0, 0])
    np.testing.assert_array_equal(labels_from_datalist([{"label": [1, 0]}, {"label": [0, 1]}]), [[1, 0], [0, 1]])
    with pytest.raises(KeyError, match="item 1"):
        labels_from_datalist([{"label": 1}, {"image": "x"}])


def test_weighted_sampler_balances_and_is_seeded():
    y = np.array([0] * 90 + [1] * 10)
    s1 = make_weighted_sampler(y, num_samples=2000, seed=3)
    idx = torch.tensor(list(s1))
    frac1 = float((torch.as_tensor(y)[idx] == 1).float().mean())
    assert 0.4 < frac1 < 0.6
    assert list(make_weighted_sampler(y, seed=3)) == list(make_weighted_sampler(y, seed=3))
    assert list(make_weighted_sampler(y, seed=3)) != list(make_weighted_sampler(y, seed=4))
    assert build_sampler(y, "none") is None and build_sampler(y, "weights") is None
    assert len(build_sampler(y, "sampler")) == 100


def test_distributed_weighted_sampler_splits_one_balanced_draw():
    """Two ranks take alternate positions of the same seeded draw: together one class-balanced draw, no overlap."""
    y = np.array([0] * 90 + [1] * 10)
    ranks = [DistributedWeightedSampler(y, num_replicas=2, rank=r, seed=5) for r in (0, 1)]
    assert [len(s) for s in ranks] == [50, 50] and ranks[0].total_size == 100
    for s in ranks:
        s.set_epoch(1)
    r0, r1 = (list(s) for s in ranks)
    assert len(r0) == len(r1) == 50
    single = torch.Generator().manual_seed(5 + 1)
    whole = torch.multinomial(ranks[0].weights, 100, replacement=True, generator=single).tolist()
    assert r0 == whole[0::2] and r1 == whole[1::2]
    big = DistributedWeightedSampler(y, num_replicas=2, rank=0, num_samples=2000, seed=5)
    assert 0.4 < float((torch.as_tensor(y)[list(big)] == 1).float().mean()) < 0.6  # rare class drawn half the time
    ranks[0].set_epoch(2)
    assert list(ranks[0]) != r0  # a new draw each epoch
    ranks[0].set_epoch(1)
    assert list(ranks[0]) == r0  # and the same draw for the same epoch (resume)
    with pytest.raises(ValueError, match="rank"):
        DistributedWeightedSampler(y, num_replicas=2, rank=2)


def test_build_distributed_sampler_modes(tmp_path):
    import torch.distributed as dist
    from monai.data import DistributedSampler

    y = np.array([0, 1] * 8)
    data = [{"label": int(v)} for v in y]
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        assert isinstance(build_distributed_sampler(data, data, imbalance="sampler"), DistributedWeightedSampler)
        for mode in ("none", "weights"):
            s = build_distributed_sampler(data, data, imbalance=mode)
            assert type(s) is DistributedSampler and sorted(s) == list(range(16))
        with pytest.raises(ValueError, match="imbalance='sampler' needs the training labels"):
            build_distributed_sampler(data, None, imbalance="sampler")
        with pytest.raises(ValueError, match="imbalance must be one of"):
            build_distributed_sampler(data, data, imbalance="oversample")
    finally:
        dist.destroy_process_group()


def test_monai_distributed_weighted_random_sampler_falls_short_of_one_balanced_draw():
    """Why :class:`DistributedWeightedSampler` is kept (issue #27 reuse): MONAI's ``DistributedWeightedRandomSampler``
    draws each rank's samples from that rank's shard only, so a rare class sits on one rank per epoch and the ranks
    together draw it about half as often as a class-balanced sampler should; ours makes one balanced draw over the
    whole data set and deals it out."""
    from monai.data import DistributedWeightedRandomSampler

    labels = np.array([1] + [0] * 99)  # one rare image
    ours = [DistributedWeightedSampler(labels, num_replicas=4, rank=r, seed=0) for r in range(4)]
    weights = ours[0].weights.tolist()
    theirs = [
        DistributedWeightedRandomSampler(
            list(range(100)), weights, num_replicas=4, rank=r, generator=torch.Generator().manual_seed(r)
        )
        for r in range(4)
    ]

    def rare_share(samplers) -> float:
        drawn = []
        for epoch in range(20):
            for s in samplers:
                s.set_epoch(epoch)
                drawn += [labels[i] for i in s]
        return float(np.mean(drawn))

    assert rare_share(ours) == pytest.approx(0.5, abs=0.05)  # every class equally often, as in one process
    assert rare_share(theirs) < 0.3  # about 0.2: only the one rank whose shard holds it can draw it
