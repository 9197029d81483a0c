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
"""The acquisition-shift suite: every family changes the image more at each severity, keeps shape, dtype, type and
range, and is reproducible from its seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_transfer.transforms import AcquisitionShiftd as ExportedShiftd
from monai_transfer.transforms.shift import (
    MEDMNISTC_FAMILIES,
    PROJECT_FAMILIES,
    SEVERITIES,
    SHIFT_FAMILIES,
    AcquisitionShift,
    AcquisitionShiftD,
    AcquisitionShiftd,
    shift_parameter,
)

FAMILIES = sorted(SHIFT_FAMILIES)
RANDOM_FAMILIES = ("gaussian_noise", "speckle_noise", "impulse_noise", "shot_noise")


def _image(size: int = 64, channels: int = 1) -> torch.Tensor:
    """A smooth radiograph-like image in [0.05, 0.95]: lobes, a bright blob, a darker band, fine texture."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    blob = torch.exp(-((xx - 0.4) ** 2 + (yy - 0.6) ** 2) / 0.02)
    x = 0.5 + 0.25 * torch.sin(6 * xx) * torch.cos(5 * yy) + 0.2 * blob
    x = x - 0.1 * (yy > 0.7).float() + 0.05 * torch.sin(40 * xx * yy)
    x = (x - x.min()) / (x.max() - x.min()) * 0.9 + 0.05
    return x[None].repeat(channels, 1, 1).float()


def test_the_suite_lists_medmnistc_and_project_families():
    assert set(MEDMNISTC_FAMILIES) == {
        "pixelate", "jpeg", "gaussian_noise", "speckle_noise", "impulse_noise", "shot_noise", "gaussian_blur",
        "brightness_up", "brightness_down", "contrast_up", "contrast_down", "gamma_up", "gamma_down",
    }  # fmt: skip
    assert set(PROJECT_FAMILIES) == {"resolution", "windowing", "exposure"}
    assert all(len(f.params) == len(SEVERITIES) for f in SHIFT_FAMILIES.values())


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_changes_the_image_more_at_each_severity(family):
    x = _image()
    dist = [float((AcquisitionShift(family, s, seed=0)(x) - x).abs().mean()) for s in SEVERITIES]
    assert dist[0] > 0, f"{family} severity 1 leaves the image unchanged"
    assert all(b > a for a, b in zip(dist, dist[1:])), f"{family}: distances {dist} not increasing in severity"


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_each_family_keeps_shape_dtype_and_range(family, dtype):
    x = _image(48, channels=3).to(dtype)
    out = AcquisitionShift(family, 5, seed=1)(x)
    assert isinstance(out, torch.Tensor) and out.shape == x.shape and out.dtype == dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    arr = AcquisitionShift(family, 3, seed=1)(x.numpy().astype(np.float32))
    assert isinstance(arr, np.ndarray) and arr.shape == tuple(x.shape) and arr.dtype == np.float32


def test_metatensor_metadata_survives():
    x = MetaTensor(_image(), meta={"filename_or_obj": "a.png"})
    out = AcquisitionShift("jpeg", 2)(x)
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "a.png"


@pytest.mark.parametrize("family", RANDOM_FAMILIES)
def test_seeded_random_families_are_reproducible(family):
    x = _image()
    a, b = AcquisitionShift(family, 3, seed=7), AcquisitionShift(family, 3, seed=7)
    first_a, first_b = a(x), b(x)
    torch.testing.assert_close(first_a, first_b)
    assert not torch.equal(a(x), first_a), "each call draws the next image's noise"
    assert not torch.equal(AcquisitionShift(family, 3, seed=8)(x), first_a)


def test_set_random_state_restarts_the_sequence():
    x, t = _image(), AcquisitionShift("gaussian_noise", 2, seed=3)
    first = t(x)
    t.set_random_state(seed=3)
    torch.testing.assert_close(t(x), first)


def test_dictionary_version_matches_the_array_version_and_aliases():
    x = _image()
    d = AcquisitionShiftd(keys=("image", "other"), family="shot_noise", severity=4, seed=2)
    out = d({"image": x, "other": x.clone(), "label": 1})
    torch.testing.assert_close(out["image"], AcquisitionShift("shot_noise", 4, seed=2)(x))
    torch.testing.assert_close(out["image"], out["other"])  # the same draw for every key
    assert out["label"] == 1 and AcquisitionShiftD is AcquisitionShiftd and ExportedShiftd is AcquisitionShiftd
    d.set_random_state(seed=2)
    torch.testing.assert_close(d({"image": x, "other": x})["image"], out["image"])
    with pytest.raises(KeyError):
        d({"label": 0})
    assert AcquisitionShiftd("image", "jpeg", allow_missing_keys=True)({"label": 0}) == {"label": 0}


def test_errors_name_the_bad_value():
    with pytest.raises(ValueError, match="unknown shift family 'fog'"):
        AcquisitionShift("fog")
    with pytest.raises(ValueError, match="severity must be one of .* got 6"):
        AcquisitionShift("jpeg", 6)
    with pytest.raises(ValueError, match=r"needs a \(C, H, W\) image, got shape \(64, 64\)"):
        AcquisitionShift("jpeg")(torch.rand(64, 64))
    assert shift_parameter("jpeg", 1) == 50.0 and shift_parameter("gaussian_blur", 5) == 11.0
