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
"""Windowing presets, multi-window channels, percentile rescale, z-score and backbone normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from pydicom.data import get_testdata_file

from monai_transfer.transforms import (
    WINDOW_PRESETS,
    BackboneNormalize,
    BackboneNormalized,
    GreyToRGB,
    LoadMedicalImaged,
    MultiWindowStack,
    PercentileRescale,
    PercentileRescaled,
    WindowIntensity,
    WindowIntensityd,
    ZScoreNormalize,
    ZScoreNormalized,
)

HU = MetaTensor(torch.arange(-2000.0, 2001.0).reshape(1, 1, -1))


def _at(out: torch.Tensor, hu: float) -> float:
    return float(out[0, 0, int(hu) + 2000])


@pytest.mark.parametrize("preset", sorted(WINDOW_PRESETS))
def test_window_presets_map_window_to_unit_range(preset):
    center, width = WINDOW_PRESETS[preset]
    out = WindowIntensity(preset)(HU)
    assert float(out.min()) == 0.0 and float(out.max()) == 1.0
    assert _at(out, center - width / 2) == pytest.approx(0.0)
    assert _at(out, center) == pytest.approx(0.5)
    assert _at(out, center + width / 2) == pytest.approx(1.0)


@pytest.mark.parametrize("b_range", [(0.0, 1.0), (-1.0, 1.0), (0.0, 255.0)])
def test_window_tensor_path_matches_monai_and_keeps_meta(b_range):
    """The in-place tensor path gives MONAI ScaleIntensityRange's values and keeps the MetaTensor's metadata."""
    from monai.transforms import ScaleIntensityRange

    img = MetaTensor(torch.arange(-2000, 2001, dtype=torch.int16).reshape(1, 1, -1), meta={"Modality": "CT"})
    out = WindowIntensity("lung", b_min=b_range[0], b_max=b_range[1])(img)
    ref = ScaleIntensityRange(-1350.0, 150.0, b_range[0], b_range[1], clip=True)(img.float())
    assert isinstance(out, MetaTensor) and out.meta["Modality"] == "CT" and out.dtype == torch.float32
    torch.testing.assert_close(out.as_tensor(), ref.as_tensor(), rtol=0, atol=1e-5 * (b_range[1] - b_range[0]))
    assert float(img[0, 0, 0]) == -2000.0  # the input is not modified in place
    np_out = WindowIntensity("lung", b_min=b_range[0], b_max=b_range[1])(img.numpy().astype(np.float32))
    np.testing.assert_allclose(np_out, out.numpy(), atol=1e-5 * (b_range[1] - b_range[0]))


def test_window_values_cited():
    assert WINDOW_PRESETS["lung"] == (-600.0, 1500.0) and WINDOW_PRESETS["bone"] == (400.0, 1800.0)
    assert WINDOW_PRESETS["brain"] == (40.0, 80.0) and WINDOW_PRESETS["mediastinum"] == (50.0, 350.0)
    assert WINDOW_PRESETS["abdomen"] == (50.0, 400.0)


def test_window_explicit_and_errors():
    out = WindowIntensity(center=0, width=100)(HU)
    assert _at(out, -50) == 0 and _at(out, 25) == pytest.approx(0.75) and _at(out, 60) == 1
    with pytest.raises(ValueError, match="unknown window preset 'liverish'"):
        WindowIntensity("liverish")
    with pytest.raises(ValueError, match="width must be > 0"):
        WindowIntensity(center=0, width=0)
    with pytest.raises(ValueError, match="either a preset"):
        WindowIntensity("lung", center=0, width=10)


def test_window_on_real_ct():
    path = get_testdata_file("CT_small.dcm", download=False)
    d = WindowIntensityd("image", preset="mediastinum")(LoadMedicalImaged("image")({"image": path}))
    img = d["image"]
    assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0 and float(img.max()) == 1.0
    assert isinstance(img, MetaTensor) and img.meta["Modality"] == "CT"


def test_multi_window_stack():
    out = MultiWindowStack(("lung", "mediastinum", (400, 1800)))(HU)
    assert out.shape == (3, 1, 4001)
    torch.testing.assert_close(out[0:1], WindowIntensity("lung")(HU))
    torch.testing.assert_close(out[1:2], WindowIntensity("mediastinum")(HU))
    torch.testing.assert_close(out[2:3], WindowIntensity("bone")(HU))
    assert MultiWindowStack([{"center": 40, "width": 80}])(HU).shape == (1, 1, 4001)
    with pytest.raises(ValueError, match="1 to 3 windows"):
        MultiWindowStack(("lung", "bone", "brain", "abdomen"))
    with pytest.raises(ValueError, match="one-channel"):
        MultiWindowStack()(torch.zeros(2, 4, 4))


def test_percentile_rescale():
    x = torch.cat([torch.arange(1000.0), torch.tensor([1e6])]).reshape(1, 1, -1)  # one outlier
    out = PercentileRescale(lower=1, upper=99)(x)
    assert float(out.min()) == 0.0 and float(out.max()) == 1.0
    assert float((out == 1.0).sum()) >= 11  # the outlier and the top 1 % are clipped
    with pytest.raises(ValueError, match="percentiles"):
        PercentileRescale(lower=50, upper=10)


def test_zscore_channel_wise():
    g = torch.Generator().manual_seed(0)
    x = torch.stack([torch.randn(8, 8, generator=g) * 5 + 3, torch.randn(8, 8, generator=g) * 0.1 - 7])
    out = ZScoreNormalize()(x)
    np.testing.assert_allclose(out.mean(dim=(1, 2)).numpy(), [0, 0], atol=1e-5)
    np.testing.assert_allclose(out.std(dim=(1, 2), unbiased=False).numpy(), [1, 1], atol=1e-4)


def test_percentile_and_zscore_are_monai_transforms_with_our_defaults():
    """Reuse (issue #27): the pairs are MONAI's transforms; only the defaults (and the lower < upper check) differ."""
    from monai.transforms import (
        NormalizeIntensity,
        NormalizeIntensityd,
        ScaleIntensityRangePercentiles,
        ScaleIntensityRangePercentilesd,
    )

    g = torch.Generator().manual_seed(1)
    x = torch.stack([torch.randn(6, 6, generator=g) * 4 + 2, torch.randn(6, 6, generator=g) * 0.5 - 3])
    assert isinstance(PercentileRescale(), ScaleIntensityRangePercentiles)
    assert isinstance(ZScoreNormalize(), NormalizeIntensity)
    want = ScaleIntensityRangePercentiles(0.5, 99.5, 0.0, 1.0, clip=True, channel_wise=True)(x)
    np.testing.assert_allclose(PercentileRescale()(x), want)
    np.testing.assert_allclose(PercentileRescaled(keys="image")({"image": x})["image"], want)
    want = NormalizeIntensity(channel_wise=True)(x)
    np.testing.assert_allclose(ZScoreNormalize()(x), want)
    np.testing.assert_allclose(ZScoreNormalized(keys="image")({"image": x})["image"], want)
    assert isinstance(PercentileRescaled(keys="image"), ScaleIntensityRangePercentilesd)
    assert isinstance(ZScoreNormalized(keys="image"), NormalizeIntensityd)
    with pytest.raises(ValueError, match="lower < upper"):
        PercentileRescaled(keys="image", lower=60, upper=40)


def test_backbone_normalize_explicit_stats():
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    x = torch.full((3, 2, 2), 0.5)
    out = BackboneNormalize(mean=mean, std=std)(x)
    np.testing.assert_allclose(out[:, 0, 0].numpy(), [(0.5 - m) / s for m, s in zip(mean, std)], rtol=1e-5)
    grey = torch.full((1, 2, 2), 0.5)
    with pytest.raises(ValueError, match="repeat_channels=True"):
        BackboneNormalize(mean=mean, std=std)(grey)
    rep = BackboneNormalize(mean=mean, std=std, repeat_channels=True)(grey)
    torch.testing.assert_close(rep, out)
    # repeat_channels=True is GreyToRGB then BackboneNormalize, exactly (grey is replicated, then normalised)
    ramp = torch.linspace(0, 1, 12).reshape(1, 3, 4)
    composed = BackboneNormalize(mean=mean, std=std)(GreyToRGB()(ramp))
    assert torch.equal(BackboneNormalize(mean=mean, std=std, repeat_channels=True)(ramp), composed)
    one = BackboneNormalize(mean=0.5, std=0.25)(grey)  # single-value stats apply to any channel count
    assert float(one.abs().max()) == 0.0
    with pytest.raises(ValueError, match="both mean and std"):
        BackboneNormalize(mean=mean)
    with pytest.raises(ValueError, match="std values must be > 0"):
        BackboneNormalize(mean=(0.5,), std=(0.0,))
    with pytest.raises(ValueError, match="backbone"):
        BackboneNormalize()


def test_backbone_normalize_reads_registry():
    from monai_transfer.networks.backbones import get_backbone_cfg

    cfg = get_backbone_cfg("tf_efficientnet_lite0")
    t = BackboneNormalized("image", backbone="tf_efficientnet_lite0", repeat_channels=True)
    out = t({"image": torch.ones(1, 2, 2)})["image"]
    assert out.shape == (3, 2, 2)
    expected = [(1.0 - m) / s for m, s in zip(cfg.mean, cfg.std)]
    np.testing.assert_allclose(out[:, 0, 0].numpy(), expected, rtol=1e-6)
    assert t.t.stats == (tuple(cfg.mean), tuple(cfg.std))


def test_backbone_normalize_reads_the_weights_config():
    """mean/std follow the weights (``weights=``), default: the backbone's default weights, from data."""
    from monai_transfer.networks.backbones import WeightsCfg, get_backbone_cfg, get_weights_cfg

    img = torch.full((1, 2, 2), 0.25)
    lite = BackboneNormalize(backbone="tf_efficientnet_lite0", weights="packaged", repeat_channels=True)
    assert lite.stats == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)) and torch.allclose(lite(img), torch.full((3, 2, 2), -0.5))
    v1 = get_weights_cfg("resnet50", "ResNet50_Weights.IMAGENET1K_V1")  # torchvision's enum
    t = BackboneNormalized("image", backbone="resnet50", weights="ResNet50_Weights.IMAGENET1K_V1")
    assert t.t.stats == (v1.mean, v1.std)
    default = BackboneNormalize(backbone="resnet50")  # unchanged behaviour: the registry's default weights
    assert default.stats == (get_backbone_cfg("resnet50").mean, get_backbone_cfg("resnet50").std)
    assert BackboneNormalize(backbone="resnet50", weights="none").stats == default.stats
    own = WeightsCfg(backbone="mine", tag="radimagenet", mean=(0.2, 0.3, 0.4), std=(0.1, 0.2, 0.4))
    out = BackboneNormalize(weights=own)(torch.ones(3, 1, 1))  # a WeightsCfg needs no backbone name
    np.testing.assert_allclose(out[:, 0, 0].numpy(), [8.0, 3.5, 1.5], rtol=1e-6)
    with pytest.raises(ValueError, match="packaged"):  # weights that do not fit the backbone, on first use
        _ = BackboneNormalize(backbone="resnet18", weights="packaged").stats


def test_fast_rand_histogram_shift_equals_monai_for_the_same_draws():
    from monai.transforms import RandHistogramShift

    from monai_transfer.transforms.intensity.array import FastRandHistogramShift

    x = torch.rand(1, 40, 30) * 3 - 1
    for seed in range(10):
        ref = RandHistogramShift(num_control_points=(5, 10), prob=1.0).set_random_state(seed)
        fast = FastRandHistogramShift(num_control_points=(5, 10), prob=1.0).set_random_state(seed)
        assert torch.allclose(torch.as_tensor(fast(x.clone())), torch.as_tensor(ref(x.clone())), atol=1e-5)


def test_fast_rand_rician_noise_distribution_and_reproducibility():
    from monai_transfer.transforms.intensity.dictionary import FastRandRicianNoised

    sigma = 0.05
    t = FastRandRicianNoised(keys="image", prob=1.0, std=sigma, sample_std=False).set_random_state(0)
    out = torch.as_tensor(t({"image": torch.zeros(1, 300, 300)})["image"])
    assert out.dtype == torch.float32 and bool((out >= 0).all())
    assert float(out.mean()) == pytest.approx(sigma * np.sqrt(np.pi / 2), rel=0.02)  # Rayleigh mean on a zero image
    again = FastRandRicianNoised(keys="image", prob=1.0, std=sigma, sample_std=False).set_random_state(0)
    assert torch.equal(torch.as_tensor(again({"image": torch.zeros(1, 300, 300)})["image"]), out)
    x = torch.rand(1, 8, 8)
    assert torch.equal(torch.as_tensor(FastRandRicianNoised(keys="image", prob=0.0)({"image": x})["image"]), x)
