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

import numpy as np
import pytest
import torch
from parameterized import parameterized
from sklearn.utils.class_weight import compute_class_weight
from torch import nn

from monai_transfer.engines.losses import (
    ClassificationBCEWithLogitsLoss,
    ClassificationCrossEntropyLoss,
    ClassificationFocalLoss,
    DistributedWeightedSampler,
    build_distributed_sampler,
    build_loss,
    build_sampler,
    class_weights_from_labels,
    labels_from_datalist,
    make_weighted_sampler,
    pos_weight_from_labels,
)

LOGITS = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3], [-1.0, 3.0, 0.0], [0.0, 0.0, 4.0]])
TARGET = torch.tensor([0, 2, 1, 1])


@parameterized.expand([[TARGET], [TARGET[:, None]], [TARGET.float()[:, None]]])
def test_ce_accepts_label_shapes(target):
    loss = ClassificationCrossEntropyLoss()(LOGITS, target)
    torch.testing.assert_close(loss, nn.functional.cross_entropy(LOGITS, TARGET))


def test_ce_rejects_mismatched_labels():
    with pytest.raises(ValueError, match="do not match logits"):
        ClassificationCrossEntropyLoss()(LOGITS, torch.zeros(4, 2, dtype=torch.long))


def test_focal_gamma0_equals_ce_weighted_and_unweighted():
    w = torch.tensor([0.5, 2.0, 1.0])
    for weight in (None, w):
        focal = ClassificationFocalLoss(gamma=0.0, weight=weight)(LOGITS, TARGET[:, None])
        ce = nn.functional.cross_entropy(LOGITS, TARGET, weight=weight)
        torch.testing.assert_close(focal, ce)


def test_focal_down_weights_easy_examples():
    per = ClassificationFocalLoss(gamma=2.0, reduction="none")(LOGITS, TARGET)
    ce = nn.functional.cross_entropy(LOGITS, TARGET, reduction="none")
    p = torch.softmax(LOGITS, 1)[torch.arange(4), TARGET]
    torch.testing.assert_close(per, (1 - p) ** 2 * ce)
    assert (per < ce).all()


def test_focal_multilabel_gamma0_equals_bce():
    logits = torch.tensor([[1.0, -2.0], [0.5, 0.3], [-1.0, 2.0]])
    target = torch.tensor([[1, 0], [0, 1], [1, 1]])
    pw = torch.tensor([2.0, 0.5])
    focal = ClassificationFocalLoss(gamma=0.0, pos_weight=pw, multilabel=True)(logits, target)
    bce = nn.functional.binary_cross_entropy_with_logits(logits, target.float(), pos_weight=pw)
    torch.testing.assert_close(focal, bce)
    focal2 = ClassificationFocalLoss(gamma=2.0, multilabel=True)(logits, target)
    assert focal2 < nn.functional.binary_cross_entropy_with_logits(logits, target.float())


def test_bce_single_logit_with_flat_labels():
    logits = torch.tensor([[0.3], [-1.2], [2.0]])
    labels = torch.tensor([1, 0, 1])
    loss = ClassificationBCEWithLogitsLoss(pos_weight=torch.tensor([3.0]))(logits, labels)
    expected = nn.functional.binary_cross_entropy_with_logits(
        logits, labels[:, None].float(), pos_weight=torch.tensor([3.0])
    )
    torch.testing.assert_close(loss, expected)


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


def test_build_loss_imbalance_modes():
    dl = [{"label": 0}] * 9 + [{"label": 1}] * 3
    weighted = build_loss("ce", num_classes=2, labels=dl, imbalance="weights")
    torch.testing.assert_close(weighted.weight, torch.tensor([12 / 18, 12 / 6]))
    assert build_loss("ce", num_classes=2, labels=dl, imbalance="sampler").weight is None
    assert build_loss("ce", num_classes=2, labels=dl, imbalance="none").weight is None
    focal = build_loss("focal", num_classes=2, labels=dl, class_weights="balanced", gamma=1.0)
    assert isinstance(focal, ClassificationFocalLoss) and focal.gamma == 1.0 and focal.weight is not None
    bce = build_loss("bce", labels=[[1, 0], [0, 0], [0, 1], [0, 1]], imbalance="weights")
    torch.testing.assert_close(bce.pos_weight, torch.tensor([3.0, 1.0]))
    assert build_loss("focal", labels=[[1, 0], [0, 1]]).multilabel
    with pytest.raises(ValueError, match="imbalance"):
        build_loss("ce", imbalance="oversample")
    with pytest.raises(ValueError, match="loss name"):
        build_loss("dice")
    with pytest.raises(ValueError, match="needs `labels`"):
        build_loss("ce", class_weights="balanced")


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


def test_build_loss_multilabel_mode_per_label_pos_weight_equals_torch():
    dl = [{"label": [1, 0, 0]}, {"label": [0, 0, 1]}, {"label": [1, 1, 0]}, {"label": [0, 0, 0]}]
    loss = build_loss("bce", num_classes=3, labels=dl, imbalance="weights", mode="multilabel")
    assert isinstance(loss, ClassificationBCEWithLogitsLoss)
    torch.testing.assert_close(loss.pos_weight, torch.tensor([1.0, 3.0, 3.0]))  # n_neg / n_pos per label
    logits = torch.tensor([[0.3, -1.0, 2.0], [1.5, 0.2, -0.4]])
    target = torch.tensor([[1, 0, 0], [0, 1, 1]])  # integer multi-hot, as the data loader gives them
    ref = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([1.0, 3.0, 3.0]))(logits, target.float())
    torch.testing.assert_close(loss(logits, target), ref)
    assert build_loss("focal", num_classes=3, mode="multilabel").multilabel
    with pytest.raises(ValueError, match="needs 'bce'"):
        build_loss("ce", num_classes=3, labels=dl, mode="multilabel")
    with pytest.raises(ValueError, match="mode must be"):
        build_loss("ce", mode="multi")
    assert isinstance(build_loss("ce", num_classes=3, mode="multiclass"), ClassificationCrossEntropyLoss)


def test_uncertain_entries_are_ignored_by_bce_focal_pos_weight_and_sampler():
    logits = torch.tensor([[0.3, -1.0, 2.0], [1.5, 0.2, -0.4]])
    target = torch.tensor([[1, -1, 0], [0, 1, -1]])  # -1: uncertain, ignored (uncertain="ignore")
    known = target >= 0
    pw = torch.tensor([1.0, 2.0, 0.5])
    full = nn.BCEWithLogitsLoss(pos_weight=pw, reduction="none")(logits, target.clamp(min=0).float())
    loss = ClassificationBCEWithLogitsLoss(pos_weight=pw)
    torch.testing.assert_close(loss(logits, target), full[known].mean())  # mean over the 4 known entries
    torch.testing.assert_close(ClassificationBCEWithLogitsLoss(reduction="sum")(logits, target), full.new_tensor(
        nn.BCEWithLogitsLoss(reduction="none")(logits, target.clamp(min=0).float())[known].sum().item()))  # fmt: skip
    focal = ClassificationFocalLoss(gamma=0.0, pos_weight=pw, multilabel=True)
    torch.testing.assert_close(focal(logits, target), full[known].mean())  # gamma=0 focal == masked BCE
    logits.requires_grad_(True)
    loss(logits, target).backward()
    assert logits.grad[0, 1] == 0 and logits.grad[1, 2] == 0 and logits.grad[0, 0] != 0  # no gradient from -1
    labels = np.array([[1, -1], [0, 1], [0, 0], [-1, 1]])
    torch.testing.assert_close(pos_weight_from_labels(labels), torch.tensor([2.0, 1 / 2]))  # n_neg / n_pos, known
    sampler = make_weighted_sampler(labels, seed=0)
    w = np.asarray(sampler.weights)
    assert w[2] == 1.0 and w[0] == 1.0 and w[1] == pytest.approx(0.5)  # -1 is not a positive


@parameterized.expand([[0.0], [0.1]])
def test_ce_one_hot_probabilities_equal_integer_labels_with_class_weights(label_smoothing):
    """Soft targets (MixUp/CutMix) keep the weighted mean of hard labels: divided by sum_i w_{y_i}."""
    loss = ClassificationCrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 0.5]), label_smoothing=label_smoothing)
    one_hot = nn.functional.one_hot(TARGET, 3).float()
    torch.testing.assert_close(loss(LOGITS, one_hot), loss(LOGITS, TARGET))


def test_ce_mixed_targets_weight_like_their_two_hard_labels():
    """A mixed row's loss is the lam-weighted sum of its two hard losses, normalised by the mixed weights."""
    loss = ClassificationCrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 0.5]))
    perm = [1, 0, 3, 2]
    mixed = 0.7 * nn.functional.one_hot(TARGET, 3).float() + 0.3 * nn.functional.one_hot(TARGET[perm], 3).float()
    per = nn.functional.cross_entropy(LOGITS, TARGET, weight=loss.weight, reduction="none")
    per_other = nn.functional.cross_entropy(LOGITS, TARGET[perm], weight=loss.weight, reduction="none")
    expected = (0.7 * per + 0.3 * per_other).sum() / (0.7 * loss.weight[TARGET] + 0.3 * loss.weight[TARGET[perm]]).sum()
    torch.testing.assert_close(loss(LOGITS, mixed), expected)


def test_focal_multiclass_accepts_class_probabilities():
    w = torch.tensor([0.5, 2.0, 1.0])
    one_hot = nn.functional.one_hot(TARGET, 3).float()
    for weight in (None, w):
        focal = ClassificationFocalLoss(gamma=2.0, weight=weight)
        torch.testing.assert_close(focal(LOGITS, one_hot), focal(LOGITS, TARGET))
    soft = torch.full((4, 3), 1.0 / 3)
    by_class = [ClassificationFocalLoss(gamma=2.0, reduction="none")(LOGITS, torch.full((4,), c)) for c in range(3)]
    expected = torch.stack(by_class, 1).mean(1).mean()
    torch.testing.assert_close(ClassificationFocalLoss(gamma=2.0)(LOGITS, soft), expected)


def test_bce_takes_mixed_multilabel_targets():
    logits = torch.tensor([[0.5, -1.0], [2.0, 0.0]])
    mixed = torch.tensor([[0.7, 0.3], [-1.0, 1.0]])  # -1: ignored entry
    got = ClassificationBCEWithLogitsLoss()(logits, mixed)
    known = nn.functional.binary_cross_entropy_with_logits(logits, mixed.clamp(min=0), reduction="none")
    torch.testing.assert_close(got, known[mixed >= 0].mean())
