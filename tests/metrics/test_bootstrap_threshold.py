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
"""Bootstrap CIs and threshold selection."""

from __future__ import annotations

import json
import tempfile
import unittest
from pathlib import Path

import numpy as np
import pytest
from parameterized import parameterized
from sklearn import metrics as skm

from monai_transfer.metrics import (
    bootstrap_ci,
    compute_auc,
    compute_sensitivity,
    compute_specificity,
    load_threshold,
    save_threshold,
    select_threshold,
)
from tests.metrics.test_functional import make_binary, make_multiclass, make_multilabel


class TestBootstrap(unittest.TestCase):
    @parameterized.expand([("auc",), ("sensitivity",), ("specificity",)])
    def test_contains_estimate_and_narrows(self, metric):
        widths = []
        for n in (100, 1600):
            p, y = make_binary(0, n=n)
            ci = bootstrap_ci(p, y, metric=metric, n_resamples=500, seed=1)
            fn = {"auc": compute_auc, "sensitivity": compute_sensitivity, "specificity": compute_specificity}[metric]
            self.assertAlmostEqual(ci["estimate"], fn(p, y), places=12)
            self.assertLessEqual(ci["lower"], ci["estimate"])
            self.assertGreaterEqual(ci["upper"], ci["estimate"])
            self.assertLess(ci["lower"], ci["upper"])
            widths.append(ci["upper"] - ci["lower"])
        self.assertLess(widths[1], widths[0] * 0.6)  # 16x the data: ~4x narrower in theory

    def test_matches_loop_reference(self):
        """The vectorised counts give the same resample distribution as an explicit per-resample loop."""
        p, y = make_binary(2, n=120, ties=True)
        vec = bootstrap_ci(p, y, "auc", n_resamples=300, seed=5)
        loop = bootstrap_ci(p, y, lambda a, b: skm.roc_auc_score(b, a), n_resamples=300, seed=5)
        self.assertAlmostEqual(vec["estimate"], loop["estimate"], places=12)
        self.assertAlmostEqual(vec["lower"], loop["lower"], delta=0.03)
        self.assertAlmostEqual(vec["upper"], loop["upper"], delta=0.03)

    def test_seed_reproducible_and_alpha(self):
        p, y = make_binary(1)
        a = bootstrap_ci(p, y, "auc", n_resamples=200, seed=3)
        b = bootstrap_ci(p, y, "auc", n_resamples=200, seed=3)
        self.assertEqual(a, b)
        c = bootstrap_ci(p, y, "auc", n_resamples=200, seed=3, alpha=0.5)
        self.assertGreater(a["upper"] - a["lower"], c["upper"] - c["lower"])

    def test_multiclass_and_multilabel(self):
        p, y = make_multiclass(0, k=3)
        ci = bootstrap_ci(p, y, "auc", mode="multiclass", n_resamples=200)
        self.assertAlmostEqual(ci["estimate"], compute_auc(p, y, "multiclass"), places=12)
        np.testing.assert_allclose(ci["per_class"]["estimate"], compute_auc(p, y, "multiclass", average="none"))
        self.assertTrue(all(lo <= hi for lo, hi in zip(ci["per_class"]["lower"], ci["per_class"]["upper"])))
        p, y = make_multilabel(0)
        ci = bootstrap_ci(p, y, "sensitivity", mode="multilabel", n_resamples=200)
        self.assertAlmostEqual(ci["estimate"], compute_sensitivity(p, y, "multilabel"), places=12)
        self.assertLessEqual(ci["lower"], ci["estimate"])

    def test_errors(self):
        p, y = make_binary(0)
        with self.assertRaisesRegex(ValueError, "metric"):
            bootstrap_ci(p, y, "kappa")
        with self.assertRaisesRegex(ValueError, "alpha"):
            bootstrap_ci(p, y, alpha=1.5)


class TestThreshold(unittest.TestCase):
    @parameterized.expand([(s,) for s in range(3)])
    def test_youden_is_optimal(self, seed):
        p, y = make_binary(seed, ties=seed == 1)
        t = select_threshold(p, y, "youden")
        fpr, tpr, thr = skm.roc_curve(y, p, drop_intermediate=False)
        best = np.max(tpr - fpr)
        j = compute_sensitivity(p, y, threshold=t) + compute_specificity(p, y, threshold=t) - 1
        self.assertAlmostEqual(j, best, places=12)
        self.assertIn(t, set(p.tolist()))

    @parameterized.expand([(0.8,), (0.9,), (0.95,)])
    def test_target_sensitivity(self, target):
        p, y = make_binary(0, n=300)
        t = select_threshold(p, y, "sensitivity", target_sensitivity=target)
        self.assertGreaterEqual(compute_sensitivity(p, y, threshold=t), target)
        # the next higher distinct score no longer reaches the target: best specificity at this sensitivity
        higher = np.unique(p[p > t])
        if higher.size:
            self.assertLess(compute_sensitivity(p, y, threshold=higher[0]), target)

    def test_multilabel_and_errors(self):
        p, y = make_multilabel(0)
        ts = select_threshold(p, y, "youden", mode="multilabel")
        self.assertEqual(len(ts), 3)
        for k, t in enumerate(ts):
            self.assertEqual(t, select_threshold(p[:, k], y[:, k], "youden"))
        with self.assertRaisesRegex(ValueError, "both classes"):
            select_threshold(np.random.rand(5), np.ones(5, dtype=int))
        with self.assertRaisesRegex(ValueError, "method"):
            select_threshold(p[:, 0], y[:, 0], "f1max")
        with self.assertRaisesRegex(ValueError, "multiclass"):
            select_threshold(*make_multiclass(0), mode="multiclass")

    def test_save_load_roundtrip(self):
        with tempfile.TemporaryDirectory() as d:
            path = save_threshold(Path(d) / "models" / "threshold.json", 0.4321, method="youden", mode="binary")
            self.assertEqual(load_threshold(path), 0.4321)
            self.assertEqual(json.loads(path.read_text())["method"], "youden")
            save_threshold(path, [0.2, 0.7])
            self.assertEqual(load_threshold(path), [0.2, 0.7])
            (Path(d) / "bad.json").write_text('{"thr": 1}')
            with self.assertRaisesRegex(ValueError, "bad.json"):
                load_threshold(Path(d) / "bad.json")
            with self.assertRaises(FileNotFoundError):
                load_threshold(Path(d) / "missing.json")


if __name__ == "__main__":
    unittest.main()


class TestLoadThresholdRefusesNonProbabilities(unittest.TestCase):
    """A threshold file holding 7.0, NaN, Infinity (Python's JSON reader accepts them) or a bool is refused."""

    def test_refused_naming_file_and_value(self):
        cases = [
            ('{"threshold": 7.0}', r"threshold 7\.0 is not a probability threshold"),
            ('{"threshold": NaN}', r"threshold nan is not a probability threshold"),
            ("-Infinity", r"threshold -inf is not"),
            ('{"threshold": -0.1}', r"threshold -0\.1 is not"),
            ('{"threshold": [0.2, 1.5]}', r"threshold 1\.5 \(entry 1\) is not"),
            ('{"threshold": true}', r"holds no numeric 'threshold' entry"),
        ]
        with tempfile.TemporaryDirectory() as d:
            for i, (text, pattern) in enumerate(cases):
                path = Path(d) / f"threshold_{i}.json"
                path.write_text(text)
                with self.assertRaisesRegex(ValueError, pattern) as ctx:
                    load_threshold(path)
                self.assertIn(str(path), str(ctx.exception))
            path = Path(d) / "edges.json"
            for ok in (0.0, 1.0, [0.0, 1]):
                path.write_text(json.dumps({"threshold": ok}))
                self.assertEqual(load_threshold(path), ok)


def test_multilabel_threshold_keeps_default_for_label_absent_from_data():
    from monai_transfer.metrics.functional import UndefinedMetricWarning
    from monai_transfer.metrics.threshold import DEFAULT_THRESHOLD

    p, y = make_multilabel(1, k=3)
    y[:, 1] = 0  # label 1 has no positive case in these validation data
    with pytest.warns(UndefinedMetricWarning, match="label 1 keeps the default threshold 0.5"):
        ts = select_threshold(p, y, "youden", mode="multilabel")
    assert ts[1] == DEFAULT_THRESHOLD
    for k in (0, 2):  # the other labels are chosen on their own column, as in the binary case
        assert ts[k] == select_threshold(p[:, k], y[:, k], "youden")
