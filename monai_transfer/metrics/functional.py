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
"""Classification metrics for binary, multi-class and multi-label tasks (numpy/torch only, no scikit-learn).

Input conventions (see ``docs/ARCHITECTURE.md``):

- ``mode="binary"``: ``y_prob`` is ``(N, 2)`` softmax probabilities (positive class = column 1) or ``(N,)`` /
  ``(N, 1)`` positive-class probabilities; ``y_true`` is ``(N,)`` / ``(N, 1)`` integers in {0, 1} or ``(N, 2)`` one-hot.
  A case is predicted positive when ``p_positive >= threshold``.
- ``mode="multiclass"``: ``y_prob`` is ``(N, K)`` probabilities; ``y_true`` is ``(N,)`` integers in ``[0, K)`` or
  ``(N, K)`` one-hot. The prediction is the arg-max (``threshold`` is not used); per-class sensitivity, specificity,
  PPV, NPV and F1 are one-vs-rest, and the headline values are their unweighted (macro) means.
- ``mode="multilabel"``: ``y_prob`` is ``(N, K)`` independent (sigmoid) probabilities, ``y_true`` ``(N, K)`` in {0, 1};
  label ``k`` is predicted when ``p_k >= threshold`` (a scalar or one value per label).

Undefined values (a class absent from ``y_true`` for the AUC, no predicted positives for the PPV, ...) are returned
as ``NaN`` with an :class:`UndefinedMetricWarning`, never an exception; macro averages ignore ``NaN`` classes.

One owner per computation: ROC AUC and average precision are :func:`monai.metrics.compute_roc_auc` and
:func:`monai.metrics.compute_average_precision` (tied scores count one half / step-wise precision-recall sum over
distinct thresholds, both equal to scikit-learn to ~1e-15), the one-vs-rest TP/FP/TN/FN counts are
:func:`monai.metrics.get_confusion_matrix` and the ratios (sensitivity, specificity, PPV, NPV, F1, balanced accuracy)
:func:`monai.metrics.compute_confusion_matrix_metric`. This module owns the input conventions, the validation, the
``NaN`` + warning policy and the macro/micro averaging; it keeps its own code only where MONAI has no equivalent
(ROC curve points, multi-class ``(K, K)`` confusion matrix, Brier score) or computes something else (see
:func:`compute_calibration_bins`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.metrics import (
    compute_average_precision as _monai_average_precision,
)
from monai.metrics import compute_confusion_matrix_metric, compute_roc_auc, get_confusion_matrix

from monai_transfer.utils.task import TASK_MODES, Task, apply_threshold, as_task

__all__ = [
    "UndefinedMetricWarning",
    "MODES",
    "CONFUSION_METRICS",
    "DEFAULT_ECE_BINS",
    "prepare_inputs",
    "default_class_names",
    "compute_auc",
    "compute_roc_curve",
    "compute_average_precision",
    "compute_confusion_matrix",
    "compute_accuracy",
    "compute_balanced_accuracy",
    "compute_sensitivity",
    "compute_specificity",
    "compute_ppv",
    "compute_npv",
    "compute_f1",
    "compute_calibration_bins",
    "compute_ece",
    "compute_ece_noise_floor",
    "compute_brier",
    "compute_classification_metrics",
    "confidence_correct",
]

#: the task modes (:data:`monai_transfer.utils.task.TASK_MODES`).
MODES = TASK_MODES
#: default number of equal-width confidence bins of the expected calibration error and reliability diagram.
DEFAULT_ECE_BINS = 10


class UndefinedMetricWarning(RuntimeWarning):
    """A metric is undefined for the given data (e.g. a class is absent); its value is ``NaN``."""


def _warn(msg: str) -> None:
    warnings.warn(msg, UndefinedMetricWarning, stacklevel=3)


def _to_numpy(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().as_subclass(torch.Tensor).double().numpy()
    if isinstance(x, (list, tuple)) and len(x) > 0 and isinstance(x[0], torch.Tensor):
        return torch.stack([torch.as_tensor(v).detach().cpu().as_subclass(torch.Tensor).double() for v in x]).numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be a numpy array, torch tensor or sequence of numbers, got {type(x)}") from e


def default_class_names(mode: str | Task, num_classes: int) -> list[str]:
    """``["negative", "positive"]`` for binary tasks, else ``["class_0", "class_1", ...]``."""
    if as_task(mode).is_binary:
        return ["negative", "positive"]
    return [f"class_{i}" for i in range(num_classes)]


def prepare_inputs(y_prob: Any, y_true: Any, mode: str | Task = "binary") -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert inputs to ``(scores, onehot)``, two float/int ``(N, K)`` numpy arrays.

    For ``mode="binary"`` ``K = 1``: the single column holds the positive-class probability and the positive label.

    Args:
        y_prob: probabilities, see the module docstring for the accepted shapes.
        y_true: labels, integers or one-hot.
        mode: ``"binary"``, ``"multiclass"`` or ``"multilabel"`` (or a :class:`~monai_transfer.utils.task.Task`).

    Raises:
        ValueError: on a wrong shape, a length mismatch, NaN probabilities or labels outside the allowed values.
    """
    task = as_task(mode)
    p = _to_numpy(y_prob, "y_prob")
    y = _to_numpy(y_true, "y_true")
    if p.ndim == 0 or p.shape[0] == 0:
        raise ValueError(f"y_prob must hold at least one sample, got shape {p.shape}")
    if np.isnan(p).any():
        raise ValueError(f"y_prob contains NaN ({int(np.isnan(p).sum())} values)")
    if p.min() < -1e-6 or p.max() > 1 + 1e-6:
        raise ValueError(
            f"y_prob must hold probabilities in [0, 1], got values in [{p.min():.4g}, {p.max():.4g}]; apply a "
            "softmax/sigmoid first (e.g. monai.transforms.Activationsd in the evaluator postprocessing)"
        )
    if y.shape[0] != p.shape[0]:
        raise ValueError(f"y_prob and y_true must have the same length, got {p.shape[0]} and {y.shape[0]}")
    p = task.positive_scores(p)
    if task.is_binary:
        if y.ndim == 2 and y.shape[1] == 2:
            y = y.argmax(1)
        elif y.ndim > 2 or (y.ndim == 2 and y.shape[1] != 1):
            raise ValueError(f"binary y_true must have shape (N,), (N, 1) or one-hot (N, 2), got {y.shape}")
        y = y.reshape(-1)
        if not np.isin(y, (0, 1)).all():
            raise ValueError(f"binary y_true must hold 0/1 labels, got values {np.unique(y)[:10].tolist()}")
        return p[:, None], y.astype(np.int64)[:, None]
    k = p.shape[1]
    if task.is_multiclass:
        if y.ndim == 2 and y.shape[1] == k and k > 1 and np.isin(y, (0, 1)).all() and (y.sum(1) == 1).all():
            y = y.argmax(1)
        elif y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        elif y.ndim != 1:
            raise ValueError(f"multiclass y_true must have shape (N,), (N, 1) or one-hot (N, {k}), got {y.shape}")
        if not (np.isin(y, np.arange(k))).all():
            bad = np.unique(y)[:10].tolist()
            raise ValueError(f"multiclass y_true must hold integers in [0, {k}), got values {bad}")
        onehot = np.zeros((len(y), k), dtype=np.int64)
        onehot[np.arange(len(y)), y.astype(np.int64)] = 1
        return p, onehot
    if y.shape == p.shape and (y == -1).any():
        raise ValueError(
            f"multilabel y_true holds {int((y == -1).sum())} uncertain (-1) entries: metrics need certain 0/1 labels "
            "(uncertain='ignore' is for training data only)"
        )
    if y.shape != p.shape or not np.isin(y, (0, 1)).all():
        raise ValueError(f"multilabel y_true must be a 0/1 array of shape {p.shape}, got shape {y.shape}")
    return p, y.astype(np.int64)


def _binary_ranking(metric: str, score: np.ndarray, label: np.ndarray, name: str = "") -> float:
    """ROC AUC (``metric="auc"``) or average precision (``"ap"``) of one binary score, computed by MONAI.

    The one-class cases are decided here, before MONAI (which returns NaN with a plain ``UserWarning`` whenever
    ``y`` holds a single value): the AUC is NaN + :class:`UndefinedMetricWarning` without positives or negatives;
    the AP is NaN + warning without positives, but 1.0 without negatives (precision is 1 at every threshold, which
    is also scikit-learn's value; MONAI would return NaN).
    """
    n_pos = int(label.sum())
    n_neg = int(len(label) - n_pos)
    if metric == "auc" and (n_pos == 0 or n_neg == 0):
        _warn(f"ROC AUC{name} is undefined: y_true has {n_pos} positives and {n_neg} negatives; returning NaN")
        return float("nan")
    if metric == "ap" and n_pos == 0:
        _warn(f"average precision{name} is undefined: y_true has no positive sample; returning NaN")
        return float("nan")
    if metric == "ap" and n_neg == 0:
        return 1.0
    fn = compute_roc_auc if metric == "auc" else _monai_average_precision
    return float(fn(torch.from_numpy(np.ascontiguousarray(score)), torch.from_numpy(np.ascontiguousarray(label))))


def _ranking(metric: str, y_prob: Any, y_true: Any, mode: str, average: str | None) -> Any:
    """:func:`compute_auc` / :func:`compute_average_precision`.

    MONAI's per-class loop is used through :func:`_binary_ranking` rather than ``average="macro"`` because MONAI's
    macro mean becomes NaN as soon as one class is absent; ours ignores NaN classes (with a warning).
    """
    p, y = prepare_inputs(y_prob, y_true, mode)
    if as_task(mode).is_binary:
        return _binary_ranking(metric, p[:, 0], y[:, 0])
    if average == "micro":
        return _binary_ranking(metric, p.reshape(-1), y.reshape(-1), " (micro)")
    per = np.array([_binary_ranking(metric, p[:, k], y[:, k], f" for class {k}") for k in range(p.shape[1])])
    return _averaged(per, average, {"auc": "ROC AUC", "ap": "average precision"}[metric])


def _averaged(per_class: np.ndarray, average: str | None, what: str) -> Any:
    """``per_class`` as it is (``average="none"``) or its NaN-ignoring mean (``"macro"``); ``"micro"`` is done by
    the callers on pooled data."""
    if average in (None, "none"):
        return per_class
    if average == "macro":
        if np.isnan(per_class).all():
            return float("nan")
        if np.isnan(per_class).any():
            _warn(f"macro {what} ignores {int(np.isnan(per_class).sum())} undefined (NaN) class value(s)")
        return float(np.nanmean(per_class))
    raise ValueError(f"average must be 'macro', 'micro' or 'none', got {average!r}")


def compute_auc(y_prob: Any, y_true: Any, mode: str = "binary", average: str | None = "macro") -> Any:
    """Area under the ROC curve.

    Args:
        y_prob: probabilities (module docstring conventions).
        y_true: labels.
        mode: ``"binary"``, ``"multiclass"`` (one-vs-rest) or ``"multilabel"``.
        average: for multi-class/multi-label: ``"macro"`` (mean of per-class AUCs, NaN classes ignored), ``"micro"``
            (AUC of the flattened one-hot labels and scores) or ``"none"`` (per-class ``(K,)`` array). Ignored for
            binary tasks, which return the positive-class AUC.

    Returns:
        a float, or a ``(K,)`` array for ``average="none"``; NaN (with an :class:`UndefinedMetricWarning`) when a
        class is absent from ``y_true``.
    """
    return _ranking("auc", y_prob, y_true, mode, average)


def compute_roc_curve(y_score: Any, y_true: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve of one binary score: ``(fpr, tpr, thresholds)``, starting at ``(0, 0)`` (threshold ``+inf``).

    A case is positive when ``score >= threshold``; one point per distinct score. (MONAI has no ROC curve, only FROC.)

    Args:
        y_score: ``(N,)`` scores of the positive class.
        y_true: ``(N,)`` 0/1 labels.
    """
    s = _to_numpy(y_score, "y_score").reshape(-1)
    y = _to_numpy(y_true, "y_true").reshape(-1)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp = np.r_[0.0, np.cumsum(y)[last]]
    fp = np.r_[0.0, (last + 1) - tp[1:]]
    n_pos, n_neg = tp[-1], fp[-1]
    tpr = tp / n_pos if n_pos > 0 else np.full_like(tp, np.nan)
    fpr = fp / n_neg if n_neg > 0 else np.full_like(fp, np.nan)
    return fpr, tpr, np.r_[np.inf, s[last]]


def compute_average_precision(y_prob: Any, y_true: Any, mode: str = "binary", average: str | None = "macro") -> Any:
    """Average precision (area under the step-wise precision-recall curve).

    Args:
        y_prob: probabilities.
        y_true: labels.
        mode: task mode.
        average: ``"macro"``, ``"micro"`` or ``"none"`` for multi-class/multi-label (as :func:`compute_auc`).

    Returns:
        a float or a ``(K,)`` array; NaN with a warning for a class without positive samples.
    """
    return _ranking("ap", y_prob, y_true, mode, average)


#: our metric names -> the names of :func:`monai.metrics.compute_confusion_matrix_metric`
CONFUSION_METRICS = {
    "sensitivity": "sensitivity",
    "specificity": "specificity",
    "ppv": "precision",
    "npv": "negative predictive value",
    "f1": "f1 score",
    "balanced_accuracy": "balanced accuracy",
    "accuracy": "accuracy",
}


def _counts(p: np.ndarray, y: np.ndarray, mode: str, threshold: Any) -> torch.Tensor:
    """Per-class one-vs-rest ``[TP, FP, TN, FN]`` counts ``(K, 4)`` (float64), by MONAI's ``get_confusion_matrix``.

    The ``N`` cases are passed as the spatial axis of a single ``(1, K, N)`` sample, so MONAI sums over the cases.
    MONAI counts in float32, which is exact up to 2**24 (16.7 million) cases.
    """
    pred = apply_threshold(p, mode, threshold)
    cm = get_confusion_matrix(torch.from_numpy(pred.T[None].copy()), torch.from_numpy(y.T[None].copy()))
    return cm[0].double()


def _confusion_metric(metric: str, counts: torch.Tensor, what: str = "") -> np.ndarray:
    """``metric`` (a :data:`CONFUSION_METRICS` key) of ``counts`` ``(K, 4)`` or pooled ``(4,)``, by MONAI.

    MONAI returns NaN silently for a zero denominator; we add the :class:`UndefinedMetricWarning` of this module.
    """
    out = compute_confusion_matrix_metric(CONFUSION_METRICS[metric], counts).reshape(-1).numpy()
    if np.isnan(out).any():
        bad = np.flatnonzero(np.isnan(out)).tolist()
        what = what or {"ppv": "PPV", "npv": "NPV", "f1": "F1"}.get(metric, metric.replace("_", " "))
        _warn(f"{what} is undefined (zero denominator) for class index(es) {bad}; NaN")
    return out


def _threshold_metric(metric: str, y_prob: Any, y_true: Any, mode: str, threshold: Any, average: str | None) -> Any:
    p, y = prepare_inputs(y_prob, y_true, mode)
    counts = _counts(p, y, mode, threshold)
    if as_task(mode).is_binary:
        return float(_confusion_metric(metric, counts)[0])
    if average == "micro":  # counts pooled over classes (scikit-learn's average="micro")
        return float(_confusion_metric(metric, counts.sum(0), f"micro {metric}")[0])
    return _averaged(_confusion_metric(metric, counts), average, metric)


def compute_sensitivity(y_prob: Any, y_true: Any, mode: str = "binary", threshold: Any = 0.5, average: str = "macro"):
    """Sensitivity (recall, true-positive rate) ``TP / (TP + FN)``.

    Args:
        y_prob: probabilities.
        y_true: labels.
        mode: task mode.
        threshold: decision threshold on the positive-class probability (binary/multi-label).
        average: ``"macro"``, ``"micro"`` (counts pooled over classes) or ``"none"`` (per class, one-vs-rest) for
            multi-class/multi-label.
    """
    return _threshold_metric("sensitivity", y_prob, y_true, mode, threshold, average)


def compute_specificity(y_prob: Any, y_true: Any, mode: str = "binary", threshold: Any = 0.5, average: str = "macro"):
    """Specificity (true-negative rate) ``TN / (TN + FP)``; arguments as :func:`compute_sensitivity`."""
    return _threshold_metric("specificity", y_prob, y_true, mode, threshold, average)


def compute_ppv(y_prob: Any, y_true: Any, mode: str = "binary", threshold: Any = 0.5, average: str = "macro"):
    """Positive predictive value (precision) ``TP / (TP + FP)``; arguments as :func:`compute_sensitivity`."""
    return _threshold_metric("ppv", y_prob, y_true, mode, threshold, average)


def compute_npv(y_prob: Any, y_true: Any, mode: str = "binary", threshold: Any = 0.5, average: str = "macro"):
    """Negative predictive value ``TN / (TN + FN)``; arguments as :func:`compute_sensitivity`."""
    return _threshold_metric("npv", y_prob, y_true, mode, threshold, average)


def compute_f1(y_prob: Any, y_true: Any, mode: str = "binary", threshold: Any = 0.5, average: str = "macro"):
    """F1 score ``2 TP / (2 TP + FP + FN)``; arguments as :func:`compute_sensitivity`."""
    return _threshold_metric("f1", y_prob, y_true, mode, threshold, average)


def compute_confusion_matrix(y_prob: Any, y_true: Any, mode: str = "binary", threshold: Any = 0.5) -> np.ndarray:
    """Confusion matrix, rows = true class, columns = predicted class (scikit-learn's layout).

    Returns:
        binary: ``[[TN, FP], [FN, TP]]``; multi-class: ``(K, K)``; multi-label: ``(K, 2, 2)``, one binary matrix per
        label (like ``sklearn.metrics.multilabel_confusion_matrix``).
    """
    task = as_task(mode)
    p, y = prepare_inputs(y_prob, y_true, task)
    if task.is_multiclass:  # MONAI only has the one-vs-rest counts, not the (K, K) matrix
        k = p.shape[1]
        cm = np.zeros((k, k), dtype=np.int64)
        np.add.at(cm, (y.argmax(1), p.argmax(1)), 1)
        return cm
    tp, fp, tn, fn = _counts(p, y, task, threshold).long().numpy().T
    cms = np.stack([np.stack([tn, fp], -1), np.stack([fn, tp], -1)], 1)  # (K, 2, 2)
    return cms[0] if task.is_binary else cms


def compute_accuracy(y_prob: Any, y_true: Any, mode: str = "binary", threshold: Any = 0.5) -> float:
    """Fraction of correct predictions; for multi-label tasks the label-wise mean (``1 - Hamming loss``)."""
    p, y = prepare_inputs(y_prob, y_true, mode)
    counts = _counts(p, y, mode, threshold)
    if as_task(mode).is_multiclass:  # top-1 accuracy: the one-vs-rest true positives add up to the correct cases
        return float(counts[:, 0].sum()) / len(p)
    return float(_confusion_metric("accuracy", counts).mean())


def compute_balanced_accuracy(y_prob: Any, y_true: Any, mode: str = "binary", threshold: Any = 0.5) -> float:
    """Balanced accuracy.

    Binary: ``(sensitivity + specificity) / 2``; multi-class: mean per-class recall (scikit-learn's definition, not
    the mean of the one-vs-rest balanced accuracies); multi-label: mean over labels of the binary balanced accuracy.
    Undefined classes are ignored (with a warning).
    """
    task = as_task(mode)
    p, y = prepare_inputs(y_prob, y_true, task)
    counts = _counts(p, y, task, threshold)
    if task.is_multiclass:
        return _averaged(_confusion_metric("sensitivity", counts), "macro", "balanced accuracy")
    per = _confusion_metric("balanced_accuracy", counts)
    return float(per[0]) if task.is_binary else _averaged(per, "macro", "balanced accuracy")


def confidence_correct(p: np.ndarray, y: np.ndarray, mode: str | Task) -> list[tuple[np.ndarray, np.ndarray]]:
    """Top-label confidence and correctness (the prediction at 0.5 / the arg-max, whatever the operating
    threshold); one pair per label for binary and multi-label tasks."""
    pred = apply_threshold(p, mode, 0.5)
    if as_task(mode).is_multiclass:
        return [(p.max(1), (pred == y).all(1).astype(np.float64))]
    return [(np.maximum(p[:, k], 1.0 - p[:, k]), (pred[:, k] == y[:, k]).astype(np.float64)) for k in range(p.shape[1])]


def compute_calibration_bins(confidence: Any, correct: Any, n_bins: int = DEFAULT_ECE_BINS) -> dict[str, np.ndarray]:
    """Equal-width reliability bins on ``[0, 1]``: bin ``b`` holds confidences in ``(b/n, (b+1)/n]`` (0 in bin 0).

    Args:
        confidence: ``(N,)`` confidences in [0, 1].
        correct: ``(N,)`` 1 when the prediction was right, else 0.
        n_bins: number of bins.

    Returns:
        dict with ``edges`` ``(n_bins + 1,)``, ``count``, ``confidence`` (mean per bin, NaN when empty) and
        ``accuracy`` (NaN when empty), each ``(n_bins,)``.

    Not :func:`monai.metrics.calibration_binning`: it bins the same way with ``right=True`` (same counts), but sums in
    float32 (an ECE differing by up to ~1e-7 from the float64 value, measured on 500-case sets), and MONAI's
    ``CalibrationErrorMetric`` is class-wise on one-hot channels, not the top-label ECE of :func:`compute_ece`.
    """
    if int(n_bins) < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins}")
    conf = _to_numpy(confidence, "confidence").reshape(-1)
    corr = _to_numpy(correct, "correct").reshape(-1)
    idx = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / count
        acc = np.bincount(idx, weights=corr, minlength=n_bins) / count
    return {"edges": np.linspace(0.0, 1.0, n_bins + 1), "count": count, "confidence": mean_conf, "accuracy": acc}


def _ece(conf: np.ndarray, corr: np.ndarray, n_bins: int) -> float:
    b = compute_calibration_bins(conf, corr, n_bins)
    ok = b["count"] > 0
    return float(np.sum(b["count"][ok] / len(conf) * np.abs(b["accuracy"][ok] - b["confidence"][ok])))


def compute_ece(y_prob: Any, y_true: Any, mode: str = "binary", n_bins: int = DEFAULT_ECE_BINS) -> float:
    """Expected calibration error (top-label, Guo et al. 2017) with ``n_bins`` equal-width bins on [0, 1].

    ``ECE = sum_b |B_b| / N * |accuracy(B_b) - mean confidence(B_b)|``. The confidence is the probability of the
    predicted class: ``max(p, 1 - p)`` with the prediction ``p >= 0.5`` for binary tasks (independent of any operating
    threshold), ``max_k p_k`` with the arg-max for multi-class tasks; multi-label tasks average the binary ECE of each
    label.

    Args:
        y_prob: probabilities.
        y_true: labels.
        mode: task mode.
        n_bins: number of equal-width bins (default :data:`DEFAULT_ECE_BINS` = 10).
    """
    p, y = prepare_inputs(y_prob, y_true, mode)
    return float(np.mean([_ece(c, r, n_bins) for c, r in confidence_correct(p, y, mode)]))


def compute_ece_noise_floor(
    y_prob: Any, n_bins: int = DEFAULT_ECE_BINS, n_draws: int = 1000, seed: int = 0
) -> dict[str, float]:
    """The ECE that sampling alone gives a PERFECTLY calibrated binary model with these probabilities on this many
    cases: labels drawn ``Bernoulli(p)`` ``n_draws`` times, :func:`compute_ece` of each draw.

    The binned ECE is biased upwards on small sets (each bin's accuracy is noisy), so an observed ECE is read against
    this floor: one at or below its 95th percentile is what a calibrated model shows on a set of this size.

    Args:
        y_prob: ``(N,)`` positive-class probabilities (or ``(N, 2)`` / ``(N, 1)``, as :func:`compute_ece` accepts).
        n_bins: the ECE's bins.
        n_draws: label draws.
        seed: seed of the draws (the same seed gives the same floor).

    Returns:
        ``{"mean", "p95", "n", "n_draws"}``.
    """
    p, _ = prepare_inputs(y_prob, np.zeros(len(np.asarray(y_prob)), dtype=np.int64), "binary")
    rng = np.random.default_rng(seed)  # p: (N, 1), the positive class
    draws = ((rng.random(p.shape) < p).astype(np.float64) for _ in range(n_draws))
    eces = np.array([_ece(*confidence_correct(p, y, "binary")[0], n_bins) for y in draws])
    mean, p95 = float(eces.mean()), float(np.percentile(eces, 95))
    return {"mean": mean, "p95": p95, "n": int(len(p)), "n_draws": int(n_draws)}


def compute_brier(y_prob: Any, y_true: Any, mode: str = "binary") -> float:
    """Brier score.

    Binary: ``mean((p - y)^2)`` of the positive class; multi-class: ``mean_i sum_k (p_ik - y_ik)^2`` (Brier's original
    multi-class score, range [0, 2]); multi-label: mean over labels of the binary score.
    """
    p, y = prepare_inputs(y_prob, y_true, mode)
    sq = (p - y) ** 2
    return float(sq.sum(1).mean() if as_task(mode).is_multiclass else sq.mean())


def compute_classification_metrics(
    y_prob: Any,
    y_true: Any,
    mode: str = "binary",
    threshold: float | Sequence[float] = 0.5,
    class_names: Sequence[str] | None = None,
    n_bins: int = DEFAULT_ECE_BINS,
) -> dict[str, Any]:
    """All classification metrics in one flat, JSON-friendly dict.

    Keys (all modes): ``mode``, ``n_samples``, ``class_names``, ``threshold`` (``None`` for multi-class),
    ``support/<class>``, ``auc``, ``average_precision``, ``accuracy``, ``balanced_accuracy``, ``sensitivity``,
    ``specificity``, ``ppv``, ``npv``, ``f1``, ``ece``, ``ece_n_bins``, ``brier``, ``confusion_matrix`` (nested list).
    Binary tasks add ``tp``, ``fp``, ``tn``, ``fn`` (headline values are those of the positive class).
    Multi-class/multi-label tasks give macro means as headline values and add ``auc_micro``,
    ``average_precision_micro``, ``sensitivity_micro``, ``specificity_micro``, ``ppv_micro``, ``npv_micro``,
    ``f1_micro`` (one-vs-rest counts pooled over classes, scikit-learn's ``average="micro"``) and per-class
    ``<metric>/<class>`` for auc, average_precision, sensitivity, specificity, ppv, npv, f1; multi-label adds
    ``subset_accuracy`` (exact match).

    Args:
        y_prob: probabilities (module docstring conventions).
        y_true: labels.
        mode: ``"binary"``, ``"multiclass"`` or ``"multilabel"``.
        threshold: decision threshold (binary: on the positive class; multi-label: scalar or per label).
        class_names: names used in per-class keys; default :func:`default_class_names`.
        n_bins: ECE bins.

    Returns:
        dict of floats/ints/strings/lists; undefined values are ``float("nan")`` (written as ``null`` by
        :func:`monai_transfer.utils.io.atomic_write_json`).
    """
    task = as_task(mode)
    p, y = prepare_inputs(y_prob, y_true, task)
    out = _metrics_header(p, y, task, threshold, class_names)
    names = out["class_names"]

    # binary: the (N, 1) positive-class column; per-class values once, then their NaN-ignoring macro mean
    auc_pc = compute_auc(p, y, task, average="none")
    ap_pc = compute_average_precision(p, y, task, average="none")
    out["auc"] = float(auc_pc) if task.is_binary else _averaged(auc_pc, "macro", "ROC AUC")
    out["average_precision"] = float(ap_pc) if task.is_binary else _averaged(ap_pc, "macro", "average precision")
    out["accuracy"] = compute_accuracy(p, y, task, threshold)
    out["balanced_accuracy"] = compute_balanced_accuracy(p, y, task, threshold)
    counts = _counts(p, y, task, threshold)
    per_class = {m: _confusion_metric(m, counts) for m in ("sensitivity", "specificity", "ppv", "npv", "f1")}
    for m, v in per_class.items():
        out[m] = float(v[0]) if task.is_binary else _averaged(v, "macro", m)
    out["ece"] = compute_ece(p, y, task, n_bins)
    out["ece_n_bins"] = int(n_bins)
    out["brier"] = compute_brier(p, y, task)
    cm = compute_confusion_matrix(p, y, task, threshold)
    out["confusion_matrix"] = cm.tolist()
    if task.is_binary:
        (tn, fp), (fn, tp) = cm.tolist()
        out.update(tp=int(tp), fp=int(fp), tn=int(tn), fn=int(fn))
        return out
    out.update(_micro_and_per_class(p, y, task, threshold, names, counts, per_class, auc_pc, ap_pc))
    return out


def _metrics_header(
    p: np.ndarray, y: np.ndarray, task: Task, threshold: Any, class_names: Sequence[str] | None
) -> dict[str, Any]:
    """``mode``, ``n_samples``, ``class_names`` (checked against the outputs), ``threshold`` and ``support/<class>``."""
    k = task.class_probabilities(p).shape[1]  # binary: 2 classes for the one positive-class column
    names = list(class_names) if class_names is not None else default_class_names(task, k)
    if len(names) != k:
        raise ValueError(f"class_names must have {k} entries for this {task.mode} task, got {len(names)}: {names}")
    out: dict[str, Any] = {"mode": task.mode.value, "n_samples": int(len(p)), "class_names": names}
    if task.uses_threshold:
        t = np.asarray(threshold, dtype=np.float64).reshape(-1)
        out["threshold"] = float(t[0]) if t.size == 1 else [float(v) for v in t]
    else:
        out["threshold"] = None
    if task.is_binary:
        support = [int((y[:, 0] == 0).sum()), int(y[:, 0].sum())]
    else:
        support = [int(v) for v in y.sum(0)]
    for n, s in zip(names, support):
        out[f"support/{n}"] = s
    return out


def _micro_and_per_class(
    p: np.ndarray,
    y: np.ndarray,
    task: Task,
    threshold: Any,
    names: list[str],
    counts: np.ndarray,
    per_class: dict[str, np.ndarray],
    auc_pc: np.ndarray,
    ap_pc: np.ndarray,
) -> dict[str, Any]:
    """Multi-class/multi-label: ``<metric>_micro``, ``subset_accuracy`` (multi-label) and ``<metric>/<class>``."""
    out: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)  # already warned above for the same classes
        out["auc_micro"] = compute_auc(p, y, task, average="micro")
        out["average_precision_micro"] = compute_average_precision(p, y, task, average="micro")
        for m in per_class:
            out[f"{m}_micro"] = float(_confusion_metric(m, counts.sum(0))[0])
    if task.is_multilabel:
        out["subset_accuracy"] = float((apply_threshold(p, task, threshold) == y).all(1).mean())
    for i, n in enumerate(names):
        out[f"auc/{n}"] = float(auc_pc[i])
        out[f"average_precision/{n}"] = float(ap_pc[i])
        for m, v in per_class.items():
            out[f"{m}/{n}"] = float(v[i])
    return out
