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

import pytest
import torch
from monai.data import MetaTensor

from monai_transfer.transforms.regularization.array import (
    BatchMixUpCutMix,
    cutmix,
    cutmix_box,
    mix_targets,
    mixup,
    soft_targets,
)

IMAGES = torch.arange(4 * 1 * 4 * 4, dtype=torch.float32).reshape(4, 1, 4, 4)
LABELS = torch.tensor([0, 1, 1, 0])
PERM = torch.tensor([1, 0, 3, 2])


def test_soft_targets_layouts():
    one_hot = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    torch.testing.assert_close(soft_targets(LABELS, 2), one_hot)
    torch.testing.assert_close(soft_targets(MetaTensor(LABELS[:, None]), 2), one_hot)
    multi_hot = torch.tensor([[1, 0, 1], [0, 0, -1]])
    torch.testing.assert_close(soft_targets(multi_hot, 3, one_hot=False), multi_hot.float())
    torch.testing.assert_close(soft_targets(LABELS[:, None], 1), LABELS[:, None].float())  # one-logit BCE
    with pytest.raises(ValueError, match=r"not class indices in \[0, 2\)"):
        soft_targets(torch.tensor([0, 2]), 2)
    with pytest.raises(ValueError, match="do not give 3 target"):
        soft_targets(torch.zeros(2, 2), 3, one_hot=False)


def test_mixup_closed_form():
    targets = soft_targets(LABELS, 2)
    images, mixed = mixup(IMAGES, targets, 0.7, PERM)
    torch.testing.assert_close(images, 0.7 * IMAGES + 0.3 * IMAGES[PERM])
    torch.testing.assert_close(images[0], 0.7 * IMAGES[0] + 0.3 * IMAGES[1])
    expected = torch.tensor([[0.7, 0.3], [0.3, 0.7], [0.3, 0.7], [0.7, 0.3]])
    torch.testing.assert_close(mixed, expected)


def test_cutmix_closed_form_and_clipped_box():
    assert cutmix_box((4, 4), 0.75, (2, 2)) == (slice(1, 3), slice(1, 3))  # side 4 * sqrt(0.25) = 2
    assert cutmix_box((4, 4), 0.75, (0, 3)) == (slice(0, 1), slice(2, 4))  # clipped at the border
    box = cutmix_box((4, 4), 0.75, (0, 3))
    images, targets, lam = cutmix(IMAGES, soft_targets(LABELS, 2), box, PERM)
    assert lam == pytest.approx(1 - 2 / 16)  # the area actually pasted, not the drawn 0.75
    expected = IMAGES.clone()
    expected[0, :, 0:1, 2:4] = IMAGES[1, :, 0:1, 2:4]
    expected[2, :, 0:1, 2:4] = IMAGES[3, :, 0:1, 2:4]
    torch.testing.assert_close(images[[0, 2]], expected[[0, 2]])
    torch.testing.assert_close(targets[0], torch.tensor([lam, 1 - lam]))
    assert (images != IMAGES).sum() == 4 * 2  # two pixels in each of the four images


def test_mix_targets_keeps_ignored_entries():
    targets = torch.tensor([[1.0, -1.0], [0.0, 1.0]])
    mixed = mix_targets(targets, torch.tensor([1, 0]), 0.6)
    torch.testing.assert_close(mixed, torch.tensor([[0.6, -1.0], [0.4, -1.0]]))


def test_off_is_a_no_op_and_prob0_only_encodes():
    off = BatchMixUpCutMix()
    images, labels = off(IMAGES, LABELS)
    assert images is IMAGES and labels is LABELS and not off.enabled
    images, targets = BatchMixUpCutMix(mixup_alpha=1.0, prob=0.0)(IMAGES, LABELS)
    torch.testing.assert_close(images, IMAGES)
    torch.testing.assert_close(targets, soft_targets(LABELS, 2))


def test_invalid_arguments():
    with pytest.raises(ValueError, match="must be >= 0"):
        BatchMixUpCutMix(mixup_alpha=-0.1)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        BatchMixUpCutMix(mixup_alpha=0.2, prob=1.5)


def test_timm_mixup_falls_short_for_our_batches():
    """Why :class:`BatchMixUpCutMix` is kept (issue #27 reuse): timm's ``Mixup`` refuses an odd batch (the last
    batch of an epoch without ``drop_last``) and turns an uncertain ``-1`` multi-label entry into a negative soft
    target (e.g. ``-0.4``) that no loss can ignore; ours mixes any batch size and keeps ``-1`` where either image
    has it."""
    import numpy as np
    from timm.data import Mixup

    np.random.seed(0)  # timm draws from NumPy's global generator
    timm_mix = Mixup(mixup_alpha=0.2, prob=1.0, num_classes=3, label_smoothing=0.0, multi_label=True)
    labels = torch.tensor([[1.0, 0.0, -1.0], [0.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    with pytest.raises(AssertionError, match="even"):
        timm_mix(torch.rand(3, 1, 8, 8), labels[:3])
    _, theirs = timm_mix(torch.rand(4, 1, 8, 8), labels)
    assert bool(((theirs < 0) & (theirs != -1)).any())  # a partly ignored entry: neither a target nor ignored

    ours = BatchMixUpCutMix(mixup_alpha=0.2, prob=1.0, num_classes=3, one_hot=False)
    ours.set_random_state(0)
    _, mixed = ours(torch.rand(3, 1, 8, 8), labels[:3])
    assert mixed.shape == (3, 3)
    assert bool(((mixed >= 0) | (mixed == -1)).all())  # every entry a soft target in [0, 1] or ignored
