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
"""Every metric of monai_transfer.metrics.functional cross-checked against scikit-learn (and a direct ECE loop)."""

from __future__ import annotations

import unittest
import warnings

import numpy as np
import torch
from monai.metrics import compute_average_precision as monai_average_precision
from monai.metrics import compute_roc_auc
from parameterized import parameterized
from sklearn import metrics as skm

from monai_transfer.metrics import (
    UndefinedMetricWarning,
    compute_accuracy,
    compute_auc,
    compute_average_precision,
    compute_balanced_accuracy,
    compute_brier,
    compute_classification_metrics,
    compute_confusion_matrix,
    compute_ece,
    compute_f1,
    compute_npv,
    compute_ppv,
    compute_roc_curve,
    compute_sensitivity,
    compute_specificity,
)

SEEDS = [0, 1, 2]


def make_binary(seed: int, n: int = 200, ties: bool = False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(0.3 * y + 0.7 * rng.random(n), 0, 1)
    if ties:
        p = np.round(p, 1)  # many tied scores
    return p, y


def make_multiclass(seed: int, n: int = 240, k: int = 4):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += 1.0
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return p, y


def make_multilabel(seed: int, n: int = 200, k: int = 3):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, (n, k))
    return np.clip(0.3 * y + 0.7 * rng.random((n, k)), 0, 1), y


def ece_reference(conf: np.ndarray, correct: np.ndarray, n_bins: int) -> float:
    """Direct loop implementation: bins (lo, hi], the first bin also holds 0."""
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        sel = (conf > lo) & (conf <= hi) if b > 0 else (conf >= lo) & (conf <= hi)
        if sel.any():
            total += sel.sum() / len(conf) * abs(correct[sel].mean() - conf[sel].mean())
    return total


class TestBinaryAgainstSklearn(unittest.TestCase):
    @parameterized.expand([(s, t, thr) for s in SEEDS for t in (False, True) for thr in (0.5, 0.35)])
    def test_binary(self, seed, ties, thr):
        p, y = make_binary(seed, ties=ties)
        pred = (p >= thr).astype(int)
        probs2 = np.stack([1 - p, p], 1)  # (N, 2) softmax convention gives the same numbers
        for yp in (p, probs2, torch.as_tensor(probs2)):
            self.assertAlmostEqual(compute_auc(yp, y), skm.roc_auc_score(y, p), places=12)
        self.assertAlmostEqual(compute_average_precision(p, y), skm.average_precision_score(y, p), places=12)
        self.assertAlmostEqual(compute_accuracy(p, y, threshold=thr), skm.accuracy_score(y, pred), places=12)
        self.assertAlmostEqual(
            compute_balanced_accuracy(p, y, threshold=thr), skm.balanced_accuracy_score(y, pred), places=12
        )
        self.assertAlmostEqual(compute_sensitivity(p, y, threshold=thr), skm.recall_score(y, pred), places=12)
        self.assertAlmostEqual(
            compute_specificity(p, y, threshold=thr), skm.recall_score(y, pred, pos_label=0), places=12
        )
        self.assertAlmostEqual(compute_ppv(p, y, threshold=thr), skm.precision_score(y, pred), places=12)
        self.assertAlmostEqual(compute_npv(p, y, threshold=thr), skm.precision_score(y, pred, pos_label=0), places=12)
        self.assertAlmostEqual(compute_f1(p, y, threshold=thr), skm.f1_score(y, pred), places=12)
        np.testing.assert_array_equal(compute_confusion_matrix(p, y, threshold=thr), skm.confusion_matrix(y, pred))
        self.assertAlmostEqual(compute_brier(p, y), skm.brier_score_loss(y, p), places=12)
        conf = np.maximum(p, 1 - p)
        correct = ((p >= 0.5).astype(int) == y).astype(float)
        for n_bins in (5, 10, 15):
            self.assertAlmostEqual(compute_ece(p, y, n_bins=n_bins), ece_reference(conf, correct, n_bins), places=12)
        # one-hot labels and the all-in-one dict agree with the single functions
        onehot = np.eye(2)[y]
        d = compute_classification_metrics(probs2, onehot, "binary", threshold=thr)
        self.assertAlmostEqual(d["auc"], skm.roc_auc_score(y, p), places=12)
        self.assertAlmostEqual(d["specificity"], skm.recall_score(y, pred, pos_label=0), places=12)
        (tn, fp), (fn, tp) = skm.confusion_matrix(y, pred).tolist()
        self.assertEqual((d["tn"], d["fp"], d["fn"], d["tp"]), (tn, fp, fn, tp))
        self.assertEqual(d["support/positive"], int(y.sum()))

    @parameterized.expand([(s,) for s in SEEDS])
    def test_roc_curve(self, seed):
        p, y = make_binary(seed, ties=True)
        fpr, tpr, thr = compute_roc_curve(p, y)
        fpr_s, tpr_s, _ = skm.roc_curve(y, p, drop_intermediate=False)
        np.testing.assert_allclose(fpr, fpr_s)
        np.testing.assert_allclose(tpr, tpr_s)
        self.assertAlmostEqual(float(np.trapezoid(tpr, fpr)), skm.roc_auc_score(y, p), places=12)


class TestMulticlassAgainstSklearn(unittest.TestCase):
    @parameterized.expand([(s, k) for s in SEEDS for k in (3, 5)])
    def test_multiclass(self, seed, k):
        p, y = make_multiclass(seed, k=k)
        pred = p.argmax(1)
        onehot = np.eye(k)[y]
        mc = "multiclass"
        self.assertAlmostEqual(compute_auc(p, y, mc), skm.roc_auc_score(y, p, multi_class="ovr"), places=12)
        self.assertAlmostEqual(
            compute_auc(p, y, mc, average="micro"), skm.roc_auc_score(onehot, p, average="micro"), places=12
        )
        np.testing.assert_allclose(compute_auc(p, y, mc, average="none"), skm.roc_auc_score(onehot, p, average=None))
        self.assertAlmostEqual(
            compute_average_precision(p, y, mc), skm.average_precision_score(onehot, p, average="macro"), places=12
        )
        self.assertAlmostEqual(
            compute_average_precision(p, y, mc, average="micro"),
            skm.average_precision_score(onehot, p, average="micro"),
            places=12,
        )
        self.assertAlmostEqual(compute_accuracy(p, y, mc), skm.accuracy_score(y, pred), places=12)
        self.assertAlmostEqual(compute_balanced_accuracy(p, y, mc), skm.balanced_accuracy_score(y, pred), places=12)
        self.assertAlmostEqual(compute_sensitivity(p, y, mc), skm.recall_score(y, pred, average="macro"), places=12)
        self.assertAlmostEqual(compute_ppv(p, y, mc), skm.precision_score(y, pred, average="macro"), places=12)
        self.assertAlmostEqual(compute_f1(p, y, mc), skm.f1_score(y, pred, average="macro"), places=12)
        cm = skm.confusion_matrix(y, pred, labels=range(k))
        np.testing.assert_array_equal(compute_confusion_matrix(p, y, mc), cm)
        # one-vs-rest specificity / NPV from the multilabel confusion matrices
        mcm = skm.multilabel_confusion_matrix(y, pred, labels=range(k))
        spec = mcm[:, 0, 0] / (mcm[:, 0, 0] + mcm[:, 0, 1])
        npv = mcm[:, 0, 0] / (mcm[:, 0, 0] + mcm[:, 1, 0])
        np.testing.assert_allclose(compute_specificity(p, y, mc, average="none"), spec)
        np.testing.assert_allclose(compute_npv(p, y, mc, average="none"), npv)
        self.assertAlmostEqual(compute_brier(p, y, mc), skm.brier_score_loss(y, p, scale_by_half=False), places=12)
        conf, correct = p.max(1), (pred == y).astype(float)
        self.assertAlmostEqual(compute_ece(p, y, mc, n_bins=10), ece_reference(conf, correct, 10), places=12)
        d = compute_classification_metrics(torch.as_tensor(p), torch.as_tensor(onehot), mc)
        self.assertAlmostEqual(d["auc"], skm.roc_auc_score(y, p, multi_class="ovr"), places=12)
        self.assertAlmostEqual(d["auc_micro"], skm.roc_auc_score(onehot, p, average="micro"), places=12)
        self.assertAlmostEqual(d["auc/class_1"], skm.roc_auc_score(y == 1, p[:, 1]), places=12)
        self.assertEqual(d["confusion_matrix"], cm.tolist())
        self.assertIsNone(d["threshold"])


class TestMultilabelAgainstSklearn(unittest.TestCase):
    @parameterized.expand([(s, t) for s in SEEDS for t in (0.5, [0.3, 0.5, 0.7])])
    def test_multilabel(self, seed, thr):
        p, y = make_multilabel(seed)
        pred = (p >= np.asarray(thr)).astype(int)
        ml = "multilabel"
        self.assertAlmostEqual(compute_auc(p, y, ml), skm.roc_auc_score(y, p, average="macro"), places=12)
        self.assertAlmostEqual(
            compute_auc(p, y, ml, average="micro"), skm.roc_auc_score(y, p, average="micro"), places=12
        )
        self.assertAlmostEqual(compute_average_precision(p, y, ml), skm.average_precision_score(y, p), places=12)
        self.assertAlmostEqual(compute_accuracy(p, y, ml, thr), 1 - skm.hamming_loss(y, pred), places=12)
        self.assertAlmostEqual(
            compute_sensitivity(p, y, ml, thr), skm.recall_score(y, pred, average="macro"), places=12
        )
        self.assertAlmostEqual(compute_ppv(p, y, ml, thr), skm.precision_score(y, pred, average="macro"), places=12)
        self.assertAlmostEqual(compute_f1(p, y, ml, thr), skm.f1_score(y, pred, average="macro"), places=12)
        np.testing.assert_array_equal(compute_confusion_matrix(p, y, ml, thr), skm.multilabel_confusion_matrix(y, pred))
        bal = np.mean([skm.balanced_accuracy_score(y[:, k], pred[:, k]) for k in range(3)])
        self.assertAlmostEqual(compute_balanced_accuracy(p, y, ml, thr), bal, places=12)
        brier = np.mean([skm.brier_score_loss(y[:, k], p[:, k]) for k in range(3)])
        self.assertAlmostEqual(compute_brier(p, y, ml), brier, places=12)
        ece = np.mean(
            [
                ece_reference(np.maximum(p[:, k], 1 - p[:, k]), ((p[:, k] >= 0.5) == y[:, k]).astype(float), 10)
                for k in range(3)
            ]
        )
        self.assertAlmostEqual(compute_ece(p, y, ml), ece, places=12)
        d = compute_classification_metrics(p, y, ml, threshold=thr, class_names=["a", "b", "c"])
        self.assertAlmostEqual(d["subset_accuracy"], skm.accuracy_score(y, pred), places=12)
        self.assertAlmostEqual(d["sensitivity/b"], skm.recall_score(y[:, 1], pred[:, 1]), places=12)


class TestEdgeCases(unittest.TestCase):
    def test_class_absent_binary(self):
        p = np.linspace(0.1, 0.9, 20)
        y = np.ones(20, dtype=int)
        with self.assertWarns(UndefinedMetricWarning):
            self.assertTrue(np.isnan(compute_auc(p, y)))
        with self.assertWarns(UndefinedMetricWarning):
            self.assertTrue(np.isnan(compute_specificity(p, y)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            d = compute_classification_metrics(p, y)
        self.assertTrue(np.isnan(d["auc"]))
        self.assertEqual(d["sensitivity"], skm.recall_score(y, (p >= 0.5).astype(int)))

    def test_class_absent_multiclass(self):
        p, y = make_multiclass(0, k=4)
        y = np.where(y == 3, 0, y)  # class 3 absent
        with self.assertWarns(UndefinedMetricWarning):
            per = compute_auc(p, y, "multiclass", average="none")
        self.assertTrue(np.isnan(per[3]))
        expected = [skm.roc_auc_score(y == c, p[:, c]) for c in range(3)]
        np.testing.assert_allclose(per[:3], expected)
        with self.assertWarns(UndefinedMetricWarning):
            self.assertAlmostEqual(compute_auc(p, y, "multiclass"), float(np.mean(expected)), places=12)

    def test_all_one_predictions(self):
        _, y = make_binary(3)
        p = np.ones(len(y))
        pred = np.ones(len(y), dtype=int)
        self.assertAlmostEqual(compute_auc(p, y), skm.roc_auc_score(y, p))  # all tied -> 0.5
        self.assertEqual(compute_auc(p, y), 0.5)
        self.assertEqual(compute_sensitivity(p, y), 1.0)
        self.assertEqual(compute_specificity(p, y), 0.0)
        self.assertAlmostEqual(compute_ppv(p, y), skm.precision_score(y, pred))
        with self.assertWarns(UndefinedMetricWarning):
            self.assertTrue(np.isnan(compute_npv(p, y)))
        self.assertAlmostEqual(compute_average_precision(p, y), skm.average_precision_score(y, p))
        self.assertAlmostEqual(compute_brier(p, y), skm.brier_score_loss(y, p))
        self.assertAlmostEqual(compute_ece(p, y), 1.0 - y.mean())

    def test_perfect_and_inverted(self):
        y = np.array([0, 0, 1, 1, 0, 1])
        self.assertEqual(compute_auc(y * 0.8 + 0.1, y), 1.0)
        self.assertEqual(compute_auc(1 - (y * 0.8 + 0.1), y), 0.0)

    def test_invalid_inputs(self):
        with self.assertRaisesRegex(ValueError, "same length"):
            compute_auc(np.random.rand(5), np.array([0, 1, 0]))
        with self.assertRaisesRegex(ValueError, r"\[0, 1\]"):
            compute_auc(np.array([-2.0, 3.0]), np.array([0, 1]))
        with self.assertRaisesRegex(ValueError, "0/1"):
            compute_auc(np.array([0.2, 0.3]), np.array([0, 2]))
        with self.assertRaisesRegex(ValueError, "mode"):
            compute_auc(np.array([0.2, 0.3]), np.array([0, 1]), mode="ordinal")
        with self.assertRaisesRegex(ValueError, "class_names"):
            compute_classification_metrics(np.array([0.2, 0.8]), np.array([0, 1]), class_names=["a"])


class TestUncertainAndMicro(unittest.TestCase):
    def test_uncertain_labels_are_refused_by_metrics(self):
        p, y = make_multilabel(0, n=20)
        y[3, 1] = -1  # an ignored (uncertain) entry must never be scored as a 0 or a 1
        with self.assertRaisesRegex(ValueError, "1 uncertain \\(-1\\) entries: metrics need certain 0/1 labels"):
            compute_classification_metrics(p, y, "multilabel")

    def test_micro_threshold_metrics_equal_sklearn(self):
        p, y = make_multilabel(4, n=80, k=4)
        m = compute_classification_metrics(p, y, "multilabel", [0.4, 0.5, 0.6, 0.5])
        pred = (p >= [0.4, 0.5, 0.6, 0.5]).astype(int)
        self.assertAlmostEqual(m["sensitivity_micro"], skm.recall_score(y, pred, average="micro"), places=12)
        self.assertAlmostEqual(m["ppv_micro"], skm.precision_score(y, pred, average="micro"), places=12)
        self.assertAlmostEqual(m["f1_micro"], skm.f1_score(y, pred, average="micro"), places=12)
        pc, yc = make_multiclass(2)
        mc = compute_classification_metrics(pc, yc, "multiclass")
        self.assertAlmostEqual(mc["sensitivity_micro"], skm.accuracy_score(yc, pc.argmax(1)), places=12)


class TestWhereWeDifferFromMonai(unittest.TestCase):
    """The numbers come from ``monai.metrics``; these are the cases where this module deliberately decides first."""

    def test_average_precision_without_negatives_is_one_like_sklearn(self):
        p, y = np.linspace(0.1, 0.9, 12), np.ones(12, dtype=int)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # defined: no warning at all
            self.assertEqual(compute_average_precision(p, y), skm.average_precision_score(y, p))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.assertTrue(np.isnan(monai_average_precision(torch.as_tensor(p), torch.as_tensor(y))))

    def test_macro_ignores_an_absent_class_and_only_our_warning_is_raised(self):
        p, y = make_multilabel(5, n=60, k=3)
        y[:, 1] = 0  # label 1 has no positive case
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            auc = compute_auc(p, y, "multilabel")
            ap = compute_average_precision(p, y, "multilabel")
        self.assertTrue(caught)
        self.assertTrue(all(issubclass(w.category, UndefinedMetricWarning) for w in caught), caught)
        present = [0, 2]
        self.assertAlmostEqual(auc, skm.roc_auc_score(y[:, present], p[:, present]), places=12)
        self.assertAlmostEqual(ap, skm.average_precision_score(y[:, present], p[:, present]), places=12)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.assertTrue(np.isnan(compute_roc_auc(torch.as_tensor(p), torch.as_tensor(y), average="macro")))

    def test_micro_threshold_metrics_are_defined_when_one_class_is_not(self):
        p, y = make_multilabel(6, n=60, k=3)
        y[:, 2] = 1  # label 2 has no negative case: its specificity is undefined, the pooled one is not
        pred = (p >= 0.5).astype(int)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            spec = compute_specificity(p, y, "multilabel", average="micro")
        tn, fp = ((1 - pred) * (1 - y)).sum(), (pred * (1 - y)).sum()
        self.assertAlmostEqual(spec, skm.recall_score(1 - y.ravel(), 1 - pred.ravel()), places=12)
        self.assertAlmostEqual(spec, tn / (tn + fp), places=12)
        with self.assertWarns(UndefinedMetricWarning):
            per = compute_specificity(p, y, "multilabel", average="none")
        self.assertTrue(np.isnan(per[2]))


def test_ece_noise_floor_is_what_a_calibrated_model_shows_and_shrinks_with_the_set():
    """Labels drawn from the probabilities themselves (a perfectly calibrated model): the floor's mean is about their
    average ECE, it shrinks as the set grows, it is seeded, and (N, 2) inputs give the (N,) result."""
    from monai_transfer.metrics.functional import compute_ece, compute_ece_noise_floor

    rng = np.random.default_rng(3)
    small, large = rng.random(100), rng.random(3000)
    f_small, f_large = compute_ece_noise_floor(small), compute_ece_noise_floor(large)
    assert f_small == compute_ece_noise_floor(small) and f_small["n"] == 100 and f_small["n_draws"] == 1000
    assert f_large["mean"] < f_small["mean"] / 3 and f_small["mean"] < f_small["p95"]
    assert compute_ece_noise_floor(np.stack([1 - small, small], 1)) == f_small
    draws = [compute_ece(small, (rng.random(100) < small).astype(int)) for _ in range(400)]
    assert abs(np.mean(draws) - f_small["mean"]) < 0.1 * f_small["mean"]
    assert 0.9 <= np.mean(np.asarray(draws) <= f_small["p95"]) <= 0.99
    # a miscalibrated model (probabilities pushed to the extremes) sits far above the floor
    sharp = np.clip((small - 0.5) * 3 + 0.5, 0, 1)
    assert compute_ece(sharp, (rng.random(100) < small).astype(int)) > f_small["p95"]


if __name__ == "__main__":
    unittest.main()
