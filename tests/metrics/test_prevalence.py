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
"""Prevalence helpers: PPV/NPV at a stated prevalence (numbers worked out by hand), class balance, shift warning."""

from __future__ import annotations

import logging
import math

import pytest

from monai_transfer.metrics.prevalence import (
    balance_shift_warning,
    class_balance,
    ppv_npv_at_prevalence,
    training_counts_from_meta,
)

NAMES = ["normal", "pneumonia"]


def test_ppv_npv_at_prevalence_by_hand():
    # sens 0.9, spec 0.8, prevalence 0.1: TP 0.09, FP 0.18 -> PPV 1/3; TN 0.72, FN 0.01 -> NPV 72/73
    ppv, npv = ppv_npv_at_prevalence(0.9, 0.8, 0.1)
    assert ppv == pytest.approx(1 / 3, abs=1e-12) and npv == pytest.approx(72 / 73, abs=1e-12)
    # prevalence 0.5, sens 0.8, spec 0.6: PPV = 0.4 / (0.4 + 0.2) = 2/3; NPV = 0.3 / (0.3 + 0.1) = 0.75
    assert ppv_npv_at_prevalence(0.8, 0.6, 0.5) == pytest.approx((2 / 3, 0.75), abs=1e-12)
    ppv0, npv0 = ppv_npv_at_prevalence(0.0, 1.0, 0.3)  # nothing predicted positive: PPV undefined
    assert math.isnan(ppv0) and npv0 == pytest.approx(0.7 / 1.0, abs=1e-12)
    with pytest.raises(ValueError, match="prevalence"):
        ppv_npv_at_prevalence(0.9, 0.8, 1.2)


def test_class_balance_training_counts_and_warning(caplog):
    assert class_balance({"a": 1, "b": 3}) == {"a": 0.25, "b": 0.75}
    assert class_balance([2, 2]) == [0.5, 0.5]
    with pytest.raises(ValueError, match="sum to"):
        class_balance([0, 0])
    meta = {"data": {"train": {"n": 10, "per_class": {"normal": 4, "pneumonia": 6}}}}
    assert training_counts_from_meta(meta, NAMES) == {"normal": 4, "pneumonia": 6}
    assert training_counts_from_meta({"data": {"train": {"per_class": {"0": 4, "1": 6}}}}, NAMES) == {
        "normal": 4,
        "pneumonia": 6,
    }
    assert training_counts_from_meta({"data": None}, NAMES) is None
    assert training_counts_from_meta({"data": {"train": {"per_class": {"cat": 1}}}}, NAMES) is None
    # the PneumoniaMNIST case: 37 % normal in the test split against 26 % in training
    with caplog.at_level(logging.WARNING):
        msg = balance_shift_warning({"normal": 37, "pneumonia": 63}, {"normal": 26, "pneumonia": 74})
    assert msg is not None and "37.0% vs 26.0%" in msg and "0.110" in msg
    assert any("class balance differs" in r.message for r in caplog.records)
    assert balance_shift_warning({"normal": 27, "pneumonia": 73}, {"normal": 26, "pneumonia": 74}) is None
