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
"""ApplyTemperature(d): logits / T from a number or calibration.json, composed before MONAI's softmax."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Activationsd, Compose

from monai_transfer.metrics.calibration import apply_temperature, save_calibration
from monai_transfer.transforms import ApplyTemperature, ApplyTemperatured


def test_array_divides_logits_and_keeps_metatensor():
    x = MetaTensor(torch.tensor([1.0, -2.0, 4.0]), meta={"filename_or_obj": "a.png"})
    out = ApplyTemperature(2.0)(x)
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "a.png"
    torch.testing.assert_close(out.as_tensor(), torch.tensor([0.5, -1.0, 2.0]))
    np.testing.assert_allclose(ApplyTemperature(4.0)(np.array([2.0, 8.0])), [0.5, 2.0])
    assert ApplyTemperature(3.0)(torch.tensor([3, 6])).dtype == torch.float32


def test_dict_from_calibration_file_then_softmax_matches_apply_temperature(tmp_path):
    path = save_calibration(tmp_path / "calibration.json", 1.7)
    post = Compose([ApplyTemperatured("pred", temperature=str(path)), Activationsd("pred", softmax=True)])
    logits = torch.tensor([[0.3, 2.1], [1.5, -0.5], [0.0, 0.0]])
    got = torch.stack([post({"pred": row})["pred"] for row in logits])
    expected = apply_temperature(logits.numpy(), 1.7, "binary")
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert ApplyTemperatured("pred", temperature=path).temperature == 1.7


def test_missing_file_and_bad_values(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.json"):
        ApplyTemperatured("pred", temperature=str(tmp_path / "nothere.json"))
    t = ApplyTemperatured("pred", temperature=str(tmp_path / "nothere.json"), allow_missing=True)
    assert t.temperature == 1.0
    x = torch.tensor([1.0, 2.0])
    torch.testing.assert_close(t({"pred": x})["pred"], x)
    with pytest.raises(ValueError, match="positive"):
        ApplyTemperature(0.0)
    with pytest.raises(KeyError):
        ApplyTemperatured("logits", 2.0)({"pred": x})
    assert "pred" in ApplyTemperatured("logits", 2.0, allow_missing_keys=True)({"pred": x})
