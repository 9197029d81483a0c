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
from torch import nn

from monai_transfer.data.samplers import make_weighted_sampler, pos_weight_from_labels
from monai_transfer.losses.classification import (
    ClassificationBCEWithLogitsLoss,
    ClassificationCrossEntropyLoss,
    ClassificationFocalLoss,
    build_loss,
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


def test_monai_focal_loss_falls_short_for_classification():
    """Why :class:`ClassificationFocalLoss` is kept (issue #27 reuse): MONAI's ``FocalLoss`` (1) averages over classes
    as well as cases, so ``gamma=0`` is not cross-entropy (weighted or not) and the loss scale changes with the number
    of classes, and (2) has no ignore label: an uncertain ``-1`` multi-label entry (``uncertain="ignore"``) still
    sends a gradient to its logit. Ours gives (weighted) cross-entropy at ``gamma=0`` and no gradient to ``-1``."""
    from monai.losses import FocalLoss

    g = torch.Generator().manual_seed(0)
    logits, y, w = torch.randn(6, 3, generator=g), torch.tensor([0, 1, 2, 1, 0, 2]), torch.tensor([1.0, 2.0, 3.0])
    ce = nn.functional.cross_entropy(logits, y, weight=w)
    theirs = FocalLoss(gamma=0.0, weight=w, use_softmax=True, to_onehot_y=True)(logits, y[:, None])
    assert not torch.isclose(theirs, ce, rtol=1e-3)
    assert torch.isclose(ClassificationFocalLoss(gamma=0.0, weight=w)(logits, y), ce, rtol=1e-5)

    target = torch.tensor([[1.0, 0.0, -1.0], [0.0, 1.0, 1.0]])  # -1: uncertain, ignored
    grads = []
    for loss in (FocalLoss(gamma=2.0, use_softmax=False), ClassificationFocalLoss(gamma=2.0, multilabel=True)):
        x = torch.randn(2, 3, generator=g).requires_grad_(True)
        loss(x, target).backward()
        grads.append(float(x.grad[0, 2].abs()))
    assert grads[0] > 1e-4  # MONAI: the ignored entry still pulls on its logit
    assert grads[1] == 0.0
