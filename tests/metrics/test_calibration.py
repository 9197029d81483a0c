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
"""Temperature scaling: closed-form optima, recovery of a known temperature, probs == logits, file round trip."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from monai_transfer.metrics.calibration import (
    CalibrationWarning,
    apply_temperature,
    calibration_summary,
    fit_temperature,
    golden_section_bracket,
    load_calibration,
    save_calibration,
    scores_to_logits,
    temperature_nll,
)


def _constant_binary(z: float, n_pos: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    logits = np.tile([0.0, z], (n, 1))
    labels = np.array([1] * n_pos + [0] * (n - n_pos))
    return logits, labels


def test_binary_closed_form_optimum():
    """Every case has logits (0, z) and a fraction q is positive: the NLL optimum has sigmoid(z / T) = q exactly."""
    z, q = 2.0, 0.7
    logits, labels = _constant_binary(z, 70, 100)
    expected = z / math.log(q / (1 - q))  # 2.3604...
    t = fit_temperature(logits, labels, "binary")
    assert t == pytest.approx(expected, rel=1e-5)
    # one positive-class logit (sigmoid link) gives the same answer
    assert fit_temperature(logits[:, 1] - logits[:, 0], labels, "binary") == pytest.approx(expected, rel=1e-5)
    # calibrated probability equals the observed frequency
    assert apply_temperature(logits, t)[:, 1] == pytest.approx(np.full(100, q), abs=1e-5)
    # the fitted T is the minimum of the NLL
    nll = temperature_nll(logits, labels, t)
    assert nll < temperature_nll(logits, labels, t * 1.01) and nll < temperature_nll(logits, labels, t / 1.01)
    assert nll == pytest.approx(-(q * math.log(q) + (1 - q) * math.log(1 - q)), rel=1e-9)


def test_multiclass_closed_form_optimum():
    """Logits (0, 0, z), class 2 with frequency q, rest split evenly: T = z / log(2q / (1 - q))."""
    z, n = 3.0, 60
    logits = np.tile([0.0, 0.0, z], (n, 1))
    labels = np.array([2] * 36 + [0] * 12 + [1] * 12)  # q = 0.6
    expected = z / math.log(2 * 0.6 / 0.4)
    assert fit_temperature(logits, labels, "multiclass") == pytest.approx(expected, rel=1e-5)
    onehot = np.eye(3)[labels]
    assert fit_temperature(torch.as_tensor(logits), onehot, "multiclass") == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("true_t", [0.5, 2.5])
def test_recovers_known_temperature_from_generated_data(true_t):
    rng = np.random.default_rng(0)
    n, k = 20000, 3
    logits = rng.normal(0, 3.0, size=(n, k))
    p = apply_temperature(logits, true_t, "multiclass")
    labels = np.array([rng.choice(k, p=row) for row in p])
    t = fit_temperature(logits, labels, "multiclass")
    assert t == pytest.approx(true_t, rel=0.05)
    s = calibration_summary(logits, labels, t, "multiclass")
    assert s["nll_after"] < s["nll_before"] and s["ece_after"] < s["ece_before"]
    assert s["ece_after"] < 0.02


def test_binary_sigmoid_recovery_and_probabilities_give_same_t():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 4.0, size=8000)
    y = (rng.random(8000) < 1 / (1 + np.exp(-z / 3.0))).astype(int)
    t_logit = fit_temperature(z, y, "binary")
    assert t_logit == pytest.approx(3.0, rel=0.06)
    probs = 1 / (1 + np.exp(-z))
    assert fit_temperature(probs, y, "binary", inputs="probs") == pytest.approx(t_logit, rel=1e-6)
    # softmax probabilities (N, 2): log p is the logits up to a per-case constant -> identical T
    logits2 = np.stack([np.zeros_like(z), z], 1)
    soft = torch.softmax(torch.as_tensor(logits2), 1).numpy()
    assert fit_temperature(soft, y, "binary", inputs="probs") == pytest.approx(t_logit, rel=1e-6)
    assert fit_temperature(logits2 + 5.0, y, "binary") == pytest.approx(t_logit, rel=1e-6)  # shift invariance


def test_multilabel_shared_temperature():
    rng = np.random.default_rng(2)
    z = rng.normal(0, 3.0, size=(5000, 3))
    y = (rng.random(z.shape) < 1 / (1 + np.exp(-z / 0.6))).astype(int)
    assert fit_temperature(z, y, "multilabel") == pytest.approx(0.6, rel=0.06)


def test_separable_data_warns_at_bound_and_bad_inputs():
    logits, labels = _constant_binary(2.0, 10, 10)  # every case positive, logit 2: T -> lower bound
    with pytest.warns(CalibrationWarning, match="bound"):
        t = fit_temperature(logits, labels, "binary", bounds=(0.1, 10.0))
    assert t == pytest.approx(0.1, rel=1e-5)
    with pytest.raises(ValueError, match="probabilities"):
        fit_temperature(np.array([0.2, 1.5]), [0, 1], inputs="probs")
    with pytest.raises(ValueError, match="finite"):
        fit_temperature(np.array([0.2, np.inf]), [0, 1])
    with pytest.raises(ValueError, match="same length"):
        fit_temperature(np.zeros((3, 2)), [0, 1])
    with pytest.raises(ValueError, match="integers in"):
        fit_temperature(np.zeros((2, 2)), [0, 2])
    with pytest.raises(ValueError, match="bounds"):
        fit_temperature(np.zeros((2, 2)), [0, 1], bounds=(2.0, 1.0))
    with pytest.raises(ValueError, match="mode"):
        scores_to_logits(np.zeros((2, 2)), "regression")


def test_save_load_round_trip_and_errors(tmp_path):
    path = save_calibration(tmp_path / "calibration.json", 1.75, fitted_on="out-of-fold", n_samples=10)
    assert load_calibration(path) == 1.75
    obj = json.loads(path.read_text())
    assert obj["method"] == "temperature" and obj["fitted_on"] == "out-of-fold"
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_calibration(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"temperature": -1}')
    with pytest.raises(ValueError, match="bad.json"):
        load_calibration(bad)
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_calibration(bad)
    with pytest.raises(ValueError, match="positive finite"):
        save_calibration(tmp_path / "x.json", 0.0)


def test_golden_section_bracket_finds_the_minimum_of_a_unimodal_function():
    calls = []

    def f(x: float) -> float:
        calls.append(x)
        return (x - 0.3) ** 2

    a, b = golden_section_bracket(f, -2.0, 3.0, 1e-6)
    assert 0 < b - a <= 1e-6 and a <= 0.3 <= b
    assert len(calls) < 40  # one new evaluation per step: log(5e6) / log(1.618) ~ 32
