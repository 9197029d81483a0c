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
"""Scores of the acquisition-shift suite: per family and severity, worst case, class-balance resampling."""

from __future__ import annotations

import numpy as np
import pytest

from monai_transfer.metrics import score_shift_suite
from monai_transfer.metrics.shift import (
    PREVALENCE_FAMILY,
    PREVALENCE_LEVELS,
    positive_scores,
    prevalence_indices,
    score_condition,
)


def _data(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.7).astype(int)
    p = np.clip(0.5 + (y - 0.5) * 0.6 + rng.normal(0, 0.15, n), 0, 1)
    return y, p


def test_score_condition_matches_hand_counts():
    y = np.array([0, 0, 1, 1, 1])
    p = np.array([0.1, 0.6, 0.4, 0.7, 0.9])
    s = score_condition(p, y, 0.5)
    assert s["sensitivity"] == pytest.approx(2 / 3) and s["specificity"] == pytest.approx(1 / 2)
    assert s["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert s["auc"] == pytest.approx(5 / 6) and s["n"] == 5 and s["positive_fraction"] == pytest.approx(0.6)
    assert 0 <= s["ece"] <= 1
    assert score_condition(np.c_[1 - p, p], y, 0.5) == s  # (N, 2) probabilities: column 1


def test_noisier_conditions_score_lower_and_the_worst_case_is_named():
    y, p = _data()
    rng = np.random.default_rng(1)
    shifted = {
        "noise": {s: np.clip(p + rng.normal(0, 0.1 * s, len(p)), 0, 1) for s in (1, 2, 3, 4, 5)},
        "bias": {s: np.clip(p + 0.08 * s, 0, 1) for s in (1, 2, 3, 4, 5)},
    }
    out = score_shift_suite(y, p, shifted, threshold=0.5)
    noise = out["families"]["noise"]
    aucs = [noise["severities"][str(s)]["auc"] for s in (1, 2, 3, 4, 5)]
    assert aucs[0] > aucs[-1] and noise["worst_auc"] == min(aucs)
    assert out["worst"]["auc"] == {"value": min(aucs), "family": "noise", "severity": int(np.argmin(aucs)) + 1}
    bias = out["families"]["bias"]  # a shift up keeps the ranking and costs specificity at a fixed threshold
    assert bias["mean_auc"] == pytest.approx(out["clean"]["auc"])
    assert bias["severities"]["5"]["specificity"] < out["clean"]["specificity"]
    assert out["worst"]["specificity"]["family"] == "bias"
    expected_suite = np.mean(aucs + [bias["severities"][str(s)]["auc"] for s in (1, 2, 3, 4, 5)])
    assert out["suite_auc"] == pytest.approx(expected_suite)
    assert out["worst_family_auc"]["family"] == "noise"
    prev = out["families"][PREVALENCE_FAMILY]["severities"]
    assert [prev[str(s)]["parameter"] for s in (1, 2, 3, 4, 5)] == list(PREVALENCE_LEVELS)
    for s, f in enumerate(PREVALENCE_LEVELS, start=1):
        assert prev[str(s)]["positive_fraction"] == pytest.approx(f, abs=0.01)
    assert PREVALENCE_FAMILY not in score_shift_suite(y, p, shifted, 0.5, prevalence_levels=None)["families"]


def test_prevalence_indices_are_seeded_and_reach_the_fraction():
    y, _ = _data(1000)
    a, b = prevalence_indices(y, 0.3, seed=4), prevalence_indices(y, 0.3, seed=4)
    np.testing.assert_array_equal(a, b)
    assert y[a].mean() == pytest.approx(0.3, abs=0.005) and len(np.unique(a)) == len(a)
    assert not np.array_equal(a, prevalence_indices(y, 0.3, seed=5))
    with pytest.raises(ValueError, match="positive_fraction must be in"):
        prevalence_indices(y, 1.0)
    with pytest.raises(ValueError, match="both classes"):
        prevalence_indices(np.ones(5, int), 0.5)


def test_bad_inputs_are_named():
    y, p = _data(50)
    with pytest.raises(ValueError, match="49 probabilities for 50 labels"):
        score_condition(p[:49], y, 0.5)
    with pytest.raises(ValueError, match="binary tasks"):
        positive_scores(np.ones((3, 3)))
