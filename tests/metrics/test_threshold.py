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
"""The one threshold resolver (``resolve_threshold``/``resolve_binary_threshold``) and the ``applies_to`` check."""

from __future__ import annotations

import os

import numpy as np
import pytest

from monai_transfer.metrics.calibration import save_calibration
from monai_transfer.metrics.cumulative import resolve_threshold as reexported
from monai_transfer.metrics.threshold import (
    check_threshold_calibration,
    resolve_binary_threshold,
    resolve_task_threshold,
    resolve_threshold,
    save_threshold,
    select_threshold,
)
from monai_transfer.utils.task import Task

__all__: list[str] = []


def test_resolve_threshold_forms(tmp_path):
    f = save_threshold(tmp_path / "t.json", [0.2, 0.7])
    assert reexported is resolve_threshold
    assert resolve_threshold(None, default=0.3) == 0.3
    assert resolve_threshold(0.4) == 0.4
    assert resolve_threshold(f) == [0.2, 0.7]
    assert resolve_threshold(lambda: 0.6) == 0.6


def test_resolve_binary_threshold_sources_and_errors(tmp_path, caplog):
    f = save_threshold(tmp_path / "t.json", 0.35, method="youden")
    assert resolve_binary_threshold(str(f)) == (0.35, f"file {f}")
    assert resolve_binary_threshold("0.25") == (0.25, "given")
    assert resolve_binary_threshold(None) == (0.5, "default 0.5")
    missing = tmp_path / "none.json"
    value, source = resolve_binary_threshold(missing)
    assert value == 0.5 and str(missing) in source and str(missing) in caplog.text
    with pytest.raises(FileNotFoundError, match="none.json"):
        resolve_binary_threshold(missing, missing_ok=False)
    with pytest.raises(ValueError, match="neither a number nor an existing file"):
        resolve_binary_threshold("abc", missing_ok=False)
    with pytest.raises(ValueError, match=r"in \[0, 1\], got 1.5"):
        resolve_binary_threshold("1.5")
    two = save_threshold(tmp_path / "two.json", [0.2, 0.7])
    with pytest.raises(ValueError, match="holds 2 values"):
        resolve_binary_threshold(two)


def test_check_threshold_calibration(tmp_path):
    cal = tmp_path / "calibration.json"
    calibrated = save_threshold(
        tmp_path / "a.json", 0.4, applies_to=f"probabilities after temperature scaling with {cal}"
    )
    raw = save_threshold(tmp_path / "b.json", 0.4, applies_to="uncalibrated probabilities")
    legacy = save_threshold(tmp_path / "c.json", 0.4)
    with pytest.raises(ValueError, match=f"{os.fspath(calibrated)} applies to probabilities after temperature"):
        check_threshold_calibration(calibrated, cal)  # the calibration file does not exist
    assert check_threshold_calibration(raw, cal) == "uncalibrated probabilities"
    assert check_threshold_calibration(legacy, cal) is None
    save_calibration(cal, 1.7)
    assert check_threshold_calibration(calibrated, cal).startswith("probabilities after temperature scaling")
    with pytest.raises(ValueError, match="applies to uncalibrated probabilities, but calibration"):
        check_threshold_calibration(raw, cal)
    assert check_threshold_calibration(raw, None) == "uncalibrated probabilities"
    assert check_threshold_calibration(0.3, cal) is None  # a number carries no provenance


def test_resolve_multilabel_threshold(tmp_path, caplog):
    from monai_transfer.metrics.threshold import resolve_multilabel_threshold, save_threshold

    names = ["a", "b", "c"]
    assert resolve_multilabel_threshold(None, names) == ([0.5] * 3, "default 0.5")
    assert resolve_multilabel_threshold("0.3", names) == ([0.3] * 3, "given")  # one number: every label
    f = save_threshold(tmp_path / "t.json", [0.1, 0.2, 0.9], mode="multilabel", class_names=names)
    assert resolve_multilabel_threshold(str(f), names) == ([0.1, 0.2, 0.9], f"file {f}")
    missing = tmp_path / "none.json"
    assert resolve_multilabel_threshold(missing, names)[0] == [0.5] * 3 and "not found" in caplog.text
    with pytest.raises(FileNotFoundError, match="none.json"):
        resolve_multilabel_threshold(missing, names, missing_ok=False)
    plain = save_threshold(tmp_path / "plain.json", [0.1, 0.2, 0.9])  # no class_names recorded
    with pytest.raises(ValueError, match=r"plain.json holds 3 values; one or one per label \(2"):
        resolve_multilabel_threshold(plain, names[:2])
    with pytest.raises(ValueError, match=r"t.json is for the labels \['a', 'b', 'c'\], but the class names are"):
        resolve_multilabel_threshold(f, ["x", "y", "z"])
    with pytest.raises(ValueError, match=r"thresholds must be in \[0, 1\], got \[1.5\]"):
        resolve_multilabel_threshold([0.2, 1.5, 0.3], names)


def test_thresholds_dispatch_on_the_task(tmp_path):
    """Reading and choosing thresholds ask the task: one (binary), one per label (multi-label), none (multi-class)."""
    one, per_label = save_threshold(tmp_path / "b.json", 0.3), save_threshold(tmp_path / "m.json", [0.2, 0.6])
    assert resolve_task_threshold(one, "binary") == (0.3, f"file {one}")
    assert resolve_task_threshold(None, Task("binary")) == (0.5, "default 0.5")
    assert resolve_task_threshold(per_label, Task("multilabel", ["x", "y"])) == ([0.2, 0.6], f"file {per_label}")
    assert resolve_task_threshold(0.4, "multilabel", class_names=["x", "y", "z"])[0] == [0.4] * 3
    assert resolve_task_threshold(one, "multiclass") == (None, "arg-max (no threshold)")  # nothing read
    with pytest.raises(ValueError, match="holds 2 values; one is needed for 2 classes"):
        resolve_task_threshold(per_label, "binary")
    with pytest.raises(ValueError, match="need its class names"):
        resolve_task_threshold(per_label, "multilabel")
    p, y = [[0.9, 0.1], [0.4, 0.6], [0.2, 0.8]], [0, 1, 1]
    assert select_threshold(p, y, mode=Task("binary")) == select_threshold(p, y, mode="binary") == 0.6
    with pytest.raises(ValueError, match="mode='multiclass' predicts the arg-max"):
        select_threshold(p, y, mode=Task("multiclass"))


# --- the shift-robust operating point (issue 31) ---


def _shift_case(seed: int = 0):
    """Clean scores separate the classes; a 'bright' family shifts every score up (a threshold at the clean Youden
    point then loses specificity there), a 'noise' family adds noise."""
    rng = np.random.default_rng(seed)
    y = (rng.random(600) < 0.6).astype(int)
    p = np.clip(0.35 + 0.3 * y + rng.normal(0, 0.1, len(y)), 0, 1)
    shifted = {
        "bright": {s: np.clip(p + 0.05 * s, 0, 1) for s in (1, 2, 3, 4, 5)},
        "noise": [np.clip(p + rng.normal(0, 0.03 * s, len(y)), 0, 1) for s in (1, 2, 3, 4, 5)],
    }
    return y, p, shifted


def test_shift_robust_threshold_beats_clean_youden_on_the_worst_family():
    from monai_transfer.metrics.shift import score_condition
    from monai_transfer.metrics.threshold import SHIFT_ROBUST_METHOD, select_shift_robust_threshold

    y, p, shifted = _shift_case()
    t, info = select_shift_robust_threshold(y, p, shifted)
    youden = select_threshold(p, y, "youden")

    def worst_bacc(thr):
        fams = {"clean": [p], "bright": list(shifted["bright"].values()), "noise": shifted["noise"]}
        return min(np.mean([score_condition(q, y, thr)["balanced_accuracy"] for q in qs]) for qs in fams.values())

    assert worst_bacc(t) >= worst_bacc(youden) - 1e-9
    assert t > youden  # the brightened family pushes the operating point up
    assert info["method"] == SHIFT_ROBUST_METHOD and info["families"] == ["clean", "bright", "noise"]
    assert info["n_conditions"] == 11 and info["worst_family_balanced_accuracy"] == pytest.approx(worst_bacc(t))
    assert "worst family's balanced accuracy" in info["rule"] and info["fallback"] is None


def test_shift_robust_threshold_with_a_sensitivity_target():
    from monai_transfer.metrics.threshold import select_shift_robust_threshold

    y, p, shifted = _shift_case(1)
    t, info = select_shift_robust_threshold(y, p, shifted, target_sensitivity=0.95)
    assert min(info["worst_family_sensitivity"], info["clean_sensitivity"]) >= 0.95 - 1e-9
    t_low, _ = select_shift_robust_threshold(y, p, shifted, target_sensitivity=0.99)
    assert t_low <= t  # a stricter target can only lower the threshold
    _, info_all = select_shift_robust_threshold(y, np.zeros(len(y)) + 0.5, {}, target_sensitivity=1.0)
    assert info_all["fallback"] is None  # every threshold at or below 0.5 keeps sensitivity 1


def test_shift_robust_threshold_refuses_bad_inputs():
    from monai_transfer.metrics.threshold import select_shift_robust_threshold

    y, p, shifted = _shift_case()
    with pytest.raises(ValueError, match="both classes"):
        select_shift_robust_threshold(np.ones_like(y), p, shifted)
    with pytest.raises(ValueError, match="shift family 'x': 3 probabilities for 600 labels"):
        select_shift_robust_threshold(y, p, {"x": [p[:3]]})
    with pytest.raises(ValueError, match="target_sensitivity"):
        select_shift_robust_threshold(y, p, shifted, target_sensitivity=0)
    with pytest.raises(ValueError, match="needs predictions under the shift suite: use select_shift_robust_threshold"):
        select_threshold(p, y, method="shift_robust")
    assert select_threshold(p, y, method="youden") == select_threshold(p, y)  # explicit choices keep working


def test_accuracy_threshold_maximises_correct_decisions_at_the_data_prevalence():
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.2).astype(int)  # 20 % positive, as AdrenalMNIST3D
    p = np.clip(0.35 + 0.3 * y + rng.normal(0, 0.15, 400), 0, 1)
    t_acc = select_threshold(p, y, method="accuracy")
    t_j = select_threshold(p, y, method="youden")

    def acc(t):
        return float(np.mean((p >= t) == y))

    grid = np.unique(p)
    assert acc(t_acc) == pytest.approx(max(acc(t) for t in grid))  # the best over every possible cut
    assert acc(t_acc) > acc(t_j) and t_acc > t_j  # at low prevalence, Youden trades accuracy for sensitivity
    assert select_threshold([0.1, 0.4, 0.6, 0.9], [0, 0, 1, 1], method="accuracy") == 0.6  # highest of the ties
