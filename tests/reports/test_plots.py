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
"""``monai_transfer.reports.plots``: what the figures draw, read back from the matplotlib figure."""

from __future__ import annotations

import numpy as np
import pytest

from monai_transfer.metrics.functional import compute_calibration_bins
from monai_transfer.reports import plots
from tests.utils import assert_png


def _under_confident(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Right 90 % of the time at confidences 0.5-0.66 (the ct_slices case: accuracy far above the confidence)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    conf = rng.uniform(0.5, 0.66, n)
    pred = np.where(rng.random(n) < 0.9, y, 1 - y)
    p1 = np.where(pred == 1, conf, 1 - conf)
    return np.stack([1 - p1, p1], 1), y


def test_reliability_bars_read_as_accuracy_with_the_gap_outlined(tmp_path, monkeypatch):
    """Each bin's bar is solid and as high as its accuracy, with the accuracy written on it; the gap to the mean
    confidence is an unfilled hatched box between the two, ending at a tick at the mean confidence (before: a filled
    box over the bar made it seem to end at the confidence)."""
    figures = []
    save = plots.save_figure
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: figures.append(fig) or save(fig, path))
    prob, y = _under_confident()
    path = plots.plot_reliability(tmp_path / "reliability.png", prob, y, "binary", n_bins=10)
    assert_png(path)
    conf = prob.max(1)
    bins = compute_calibration_bins(conf, (prob.argmax(1) == y).astype(float), 10)
    ok = bins["count"] > 0
    ax = figures[0].axes[0]
    acc_bars, gap_boxes = (c for c in ax.containers)
    assert [b.get_height() for b in acc_bars] == pytest.approx(bins["accuracy"][ok])
    assert all(b.get_fill() and b.get_alpha() in (None, 1.0) for b in acc_bars)  # solid
    assert all(not b.get_fill() and b.get_hatch() for b in gap_boxes)  # outlined, hatched
    tops = [max(b.get_y(), b.get_y() + b.get_height()) for b in gap_boxes]
    bottoms = [min(b.get_y(), b.get_y() + b.get_height()) for b in gap_boxes]
    assert tops == pytest.approx(np.maximum(bins["accuracy"], bins["confidence"])[ok])
    assert bottoms == pytest.approx(np.minimum(bins["accuracy"], bins["confidence"])[ok])
    assert (bins["accuracy"][ok] > bins["confidence"][ok] + 0.2).all()  # the case that was misread
    texts = [t.get_text() for t in ax.texts]
    assert texts == [f"{a:.2f}" for a in bins["accuracy"][ok]]
    labels = figures[0].legends[0].get_texts()
    assert {t.get_text() for t in labels} >= {"accuracy (fraction correct)", "mean confidence in bin"}
