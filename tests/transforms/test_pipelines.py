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
"""``monai_transfer.transforms.pipelines``: the transform sequences training and inference share."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose
from PIL import Image

from monai_transfer.networks.backbones import get_backbone_cfg
from monai_transfer.transforms.pipelines import (
    acquisition_shift_augmentation,
    backbone_input_transforms,
    image_loading_transforms,
    mode_activationd,
)


def test_image_loading_gives_an_image_in_0_1_at_the_size(tmp_path):
    arr = (np.arange(30 * 20).reshape(30, 20) % 256).astype(np.uint8)
    Image.fromarray(arr).save(tmp_path / "x.png")
    out = Compose(image_loading_transforms(16, expected_ndim=2))({"image": str(tmp_path / "x.png")})["image"]
    assert out.shape == (1, 16, 16) and 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    unsized = Compose(image_loading_transforms())({"image": str(tmp_path / "x.png")})["image"]
    assert unsized.shape == (1, 30, 20)  # no resize (volume bundles resize the slices)
    assert float(unsized.min()) == 0.0 and float(unsized.max()) == 1.0
    with pytest.raises(Exception) as info:  # MONAI wraps the error of the transform it applies
        Compose(image_loading_transforms(16, expected_ndim=3))({"image": str(tmp_path / "x.png")})
    assert "x.png" in str(info.value.__cause__)


def test_backbone_input_normalises_grey_to_rgb_and_keeps_a_missing_label():
    backbone = "tf_efficientnet_lite0"
    cfg = get_backbone_cfg(backbone)
    img = torch.full((1, 4, 4), 0.5)
    out = Compose(backbone_input_transforms(backbone))({"image": img})
    assert isinstance(out["image"], MetaTensor) and out["image"].shape == (3, 4, 4) and "label" not in out
    expected = torch.tensor([(0.5 - m) / s for m, s in zip(cfg.mean, cfg.std)])
    assert torch.allclose(out["image"][:, 0, 0], expected, atol=1e-6)
    labelled = Compose(backbone_input_transforms(backbone))({"image": img, "label": 1})
    assert isinstance(labelled["label"], torch.Tensor) and int(labelled["label"]) == 1


def test_mode_activation():
    logits = torch.tensor([2.0, 0.0])  # one case, channel first (post-processing runs per case)
    assert torch.allclose(mode_activationd("binary")({"pred": logits})["pred"], torch.softmax(logits, 0))
    assert torch.allclose(mode_activationd("multiclass")({"pred": logits})["pred"], torch.softmax(logits, 0))
    assert torch.allclose(mode_activationd("multilabel")({"pred": logits})["pred"], torch.sigmoid(logits))
    with pytest.raises(ValueError, match="'regression'"):
        mode_activationd("regression")


def test_acquisition_shift_augmentation_kinds_probability_and_output():
    names = [type(t).__name__ for t in acquisition_shift_augmentation()]
    assert names == ["FastRandRicianNoised", "RandGibbsNoised", "FastRandHistogramShiftd", "RandBiasFieldd"]
    assert all(t.prob == 0.3 for t in acquisition_shift_augmentation())
    with pytest.raises(ValueError, match="prob must be in"):
        acquisition_shift_augmentation(prob=1.5)
    image = torch.linspace(0, 1, 32 * 32).reshape(1, 32, 32)
    off = Compose(acquisition_shift_augmentation(prob=0.0))({"image": image.clone()})["image"]
    assert torch.equal(torch.as_tensor(off), image)  # prob 0: the identity
    on = Compose(acquisition_shift_augmentation(prob=1.0)).set_random_state(0)({"image": image.clone()})["image"]
    on = torch.as_tensor(on)
    assert on.shape == image.shape and torch.isfinite(on).all() and not torch.allclose(on, image, atol=1e-3)
