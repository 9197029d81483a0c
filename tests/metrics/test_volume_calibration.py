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
"""Platt scaling of pooled volume probabilities: the fit, its cross-fitted check, the stored step and its reader."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from monai_transfer.metrics import compute_auc, compute_ece
from monai_transfer.metrics.volume_calibration import (
    VolumePlatt,
    aggregation_key,
    crossfit_platt,
    fit_platt,
    load_volume_platt,
    platt_nll,
    positive_class_ece,
)

__all__: list[str] = []


def _biased(n=2000, slope=0.6, intercept=-1.2, seed=0):
    """Probabilities ``p`` whose true positive rate is ``sigmoid(slope * logit(p) + intercept)``."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.5, 2.0, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(slope * z + intercept)))).astype(int)
    return 1 / (1 + np.exp(-z)), y


def test_fit_platt_is_the_unpenalised_logistic_regression_on_the_logit():
    p, y = _biased()
    a, b = fit_platt(p, y)
    x = np.log(p / (1 - p))[:, None]
    ref = LogisticRegression(C=1e12, tol=1e-10, max_iter=1000).fit(x, y)
    assert a == pytest.approx(ref.coef_[0, 0], abs=1e-4) and b == pytest.approx(ref.intercept_[0], abs=1e-4)
    assert a == pytest.approx(0.6, abs=0.1) and b == pytest.approx(-1.2, abs=0.2)  # the generating values
    assert platt_nll(p, y, a, b) < platt_nll(p, y)  # identity: slope 1, intercept 0


def test_platt_keeps_the_ranking_fixes_the_bias_and_keeps_shapes():
    p, y = _biased()
    platt = VolumePlatt(*fit_platt(p, y), aggregation="mean")
    q = platt(p)
    assert compute_auc(q, y, "binary") == pytest.approx(compute_auc(p, y, "binary"), abs=1e-12)
    assert positive_class_ece(q, y) < 0.03 < 0.1 < positive_class_ece(p, y)
    two = platt(np.stack([1 - p, p], 1))
    assert two.shape == (len(p), 2) and np.allclose(two[:, 1], q) and np.allclose(two.sum(1), 1)
    assert platt(np.array([0.3, 0.7])) == pytest.approx([1 - platt(np.array([0.7]))[0], platt(np.array([0.7]))[0]])
    with pytest.raises(ValueError, match="binary"):
        platt(np.full((3, 3), 1 / 3))
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="slope"):
            VolumePlatt(bad, 0.0, "mean")


def test_positive_class_ece_sees_a_bias_the_top_label_ece_folds_away():
    """Over-called positives at p = 0.15 and at p = 0.85 share the top-label confidence bin 0.8-0.9 with opposite
    errors; the positive-class diagram keeps them apart."""
    p = np.array([0.15] * 100 + [0.85] * 100)
    y = np.array([0] * 100 + [1] * 70 + [0] * 30)  # 0% and 70% positive: both over-called by 15 points
    assert compute_ece(p, y, "binary") == pytest.approx(0.0, abs=1e-12)
    assert positive_class_ece(p, y) == pytest.approx(0.15)


def test_crossfit_platt_scores_each_case_with_a_fit_on_the_others():
    p, y = _biased(n=600, seed=1)
    q = crossfit_platt(p, y, folds=5, seed=0)
    assert q.shape == p.shape and np.all((q > 0) & (q < 1))
    assert platt_nll(q, y) < platt_nll(p, y)  # the bias is real: it survives cross-fitting
    assert platt_nll(q, y) > platt_nll(p, y, *fit_platt(p, y))  # and is scored on unseen cases (higher than in-sample)
    np.testing.assert_array_equal(q, crossfit_platt(p, y, folds=5, seed=0))  # seeded
    with pytest.raises(ValueError, match="at least 5 cases per class"):
        crossfit_platt(p[:10], np.array([0] * 7 + [1] * 3))
    with pytest.raises(ValueError, match="both classes"):
        fit_platt(p[:10], np.zeros(10))


def test_load_volume_platt(tmp_path, caplog):
    path = tmp_path / "calibration.json"
    assert load_volume_platt(None, "mean") is None and load_volume_platt(path, "mean") is None  # no calibration
    path.write_text(json.dumps({"method": "temperature", "temperature": 0.5}))
    assert load_volume_platt(path, "mean") is None  # a temperature only
    entry = {"slope": 0.8, "intercept": -1.0, "aggregation": aggregation_key("topk_mean", 3)}
    path.write_text(json.dumps({"method": "temperature", "temperature": 0.5, "volume_platt": entry}))
    assert load_volume_platt(path, "topk_mean", 3) == VolumePlatt(0.8, -1.0, "topk_mean:3")
    with caplog.at_level(logging.WARNING):
        assert load_volume_platt(path, "topk_mean", 2, where="my writer") is None  # fitted for another pooling
    assert "my writer" in caplog.text and "'topk_mean:3'" in caplog.text and "'topk_mean:2'" in caplog.text
    path.write_text(json.dumps({"temperature": 0.5, "volume_platt": {**entry, "slope": -0.8}}))
    with pytest.raises(ValueError, match=r"calibration.json: invalid 'volume_platt'.*positive 'slope'"):
        load_volume_platt(path, "topk_mean", 3)
    path.write_text(json.dumps({"temperature": 0.5, "volume_platt": {"slope": 1.0}}))
    with pytest.raises(ValueError, match="invalid 'volume_platt'"):
        load_volume_platt(path, "mean")
