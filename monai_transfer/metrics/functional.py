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

ROC AUC uses the rank (Mann-Whitney U) formula with average ranks for ties, so tied scores count one half, exactly
like the trapezoidal ROC area. Average precision is the step-wise sum ``sum_n (R_n - R_{n-1}) P_n`` over distinct
score thresholds (no interpolation), the definition scikit-learn uses.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "UndefinedMetricWarning",
    "MODES",
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
    "compute_brier",
    "compute_classification_metrics",
]

MODES = ("binary", "multiclass", "multilabel")
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


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return mode


def default_class_names(mode: str, num_classes: int) -> list[str]:
    """``["negative", "positive"]`` for binary tasks, else ``["class_0", "class_1", ...]``."""
    if _check_mode(mode) == "binary":
        return ["negative", "positive"]
    return [f"class_{i}" for i in range(num_classes)]


def prepare_inputs(y_prob: Any, y_true: Any, mode: str = "binary") -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert inputs to ``(scores, onehot)``, two float/int ``(N, K)`` numpy arrays.

    For ``mode="binary"`` ``K = 1``: the single column holds the positive-class probability and the positive label.

    Args:
        y_prob: probabilities, see the module docstring for the accepted shapes.
        y_true: labels, integers or one-hot.
        mode: ``"binary"``, ``"multiclass"`` or ``"multilabel"``.

    Raises:
        ValueError: on a wrong shape, a length mismatch, NaN probabilities or labels outside the allowed values.
    """
    _check_mode(mode)
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
    if mode == "binary":
        if p.ndim == 1 or (p.ndim == 2 and p.shape[1] == 1):
            p = p.reshape(-1)
        elif p.ndim == 2 and p.shape[1] == 2:
            p = p[:, 1]
        else:
            raise ValueError(
                f"binary y_prob must have shape (N,), (N, 1) or (N, 2), got {p.shape}; for more classes use "
                "mode='multiclass' (one class per case) or mode='multilabel' (independent findings)"
            )
        if y.ndim == 2 and y.shape[1] == 2:
            y = y.argmax(1)
        elif y.ndim > 2 or (y.ndim == 2 and y.shape[1] != 1):
            raise ValueError(f"binary y_true must have shape (N,), (N, 1) or one-hot (N, 2), got {y.shape}")
        y = y.reshape(-1)
        if not np.isin(y, (0, 1)).all():
            raise ValueError(f"binary y_true must hold 0/1 labels, got values {np.unique(y)[:10].tolist()}")
        return p[:, None], y.astype(np.int64)[:, None]
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"{mode} y_prob must have shape (N, K) with K >= 2, got {p.shape}")
    k = p.shape[1]
    if mode == "multiclass":
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


def _binary_auc(score: np.ndarray, label: np.ndarray, name: str = "") -> float:
    """Mann-Whitney AUC with average ranks for ties; NaN + warning when one class is absent."""
    n_pos = int(label.sum())
    n_neg = int(len(label) - n_pos)
    if n_pos == 0 or n_neg == 0:
        _warn(f"ROC AUC{name} is undefined: y_true has {n_pos} positives and {n_neg} negatives; returning NaN")
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    s = score[order]
    # average rank (1-based) for each group of tied scores
    starts = np.r_[0, np.flatnonzero(np.diff(s)) + 1]
    ends = np.r_[starts[1:], len(s)]
    avg = (starts + ends + 1) / 2.0
    ranks = np.empty(len(s), dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[label == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _binary_ap(score: np.ndarray, label: np.ndarray, name: str = "") -> float:
    n_pos = int(label.sum())
    if n_pos == 0:
        _warn(f"average precision{name} is undefined: y_true has no positive sample; returning NaN")
        return float("nan")
    order = np.argsort(-score, kind="mergesort")
    s, lab = score[order], label[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each distinct threshold
    tp = np.cumsum(lab)[last]
    fp = (last + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _class_names_suffix(names: Sequence[str] | None, k: int) -> str:
    return f" for class {names[k]!r}" if names is not None else f" for class {k}"


def _averaged(per_class: np.ndarray, average: str | None, micro: float | None, what: str) -> Any:
    if average in (None, "none"):
        return per_class
    if average == "macro":
        if np.isnan(per_class).all():
            return float("nan")
        if np.isnan(per_class).any():
            _warn(f"macro {what} ignores {int(np.isnan(per_class).sum())} undefined (NaN) class value(s)")
        return float(np.nanmean(per_class))
    if average == "micro":
        return micro
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
    p, y = prepare_inputs(y_prob, y_true, mode)
    if mode == "binary":
        return _binary_auc(p[:, 0], y[:, 0])
    if average == "micro":
        return _binary_auc(p.reshape(-1), y.reshape(-1), " (micro)")
    per = np.array([_binary_auc(p[:, k], y[:, k], _class_names_suffix(None, k)) for k in range(p.shape[1])])
    return _averaged(per, average, None, "ROC AUC")


def compute_roc_curve(y_score: Any, y_true: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve of one binary score: ``(fpr, tpr, thresholds)``, starting at ``(0, 0)`` (threshold ``+inf``).

    A case is positive when ``score >= threshold``; one point per distinct score.

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
    p, y = prepare_inputs(y_prob, y_true, mode)
    if mode == "binary":
        return _binary_ap(p[:, 0], y[:, 0])
    if average == "micro":
        return _binary_ap(p.reshape(-1), y.reshape(-1), " (micro)")
    per = np.array([_binary_ap(p[:, k], y[:, k], _class_names_suffix(None, k)) for k in range(p.shape[1])])
    return _averaged(per, average, None, "average precision")


def _predict(p: np.ndarray, mode: str, threshold: float | Sequence[float]) -> np.ndarray:
    """``(N, K)`` 0/1 predictions: arg-max for multi-class, ``p >= threshold`` otherwise."""
    if mode == "multiclass":
        pred = np.zeros_like(p, dtype=np.int64)
        pred[np.arange(len(p)), p.argmax(1)] = 1
        return pred
    t = np.asarray(threshold, dtype=np.float64).reshape(-1)
    if t.size not in (1, p.shape[1]):
        raise ValueError(f"threshold must be a scalar or hold one value per class ({p.shape[1]}), got {t.size} values")
    return (p >= t[None, :]).astype(np.int64)


def _counts(p: np.ndarray, y: np.ndarray, mode: str, threshold: Any) -> tuple[np.ndarray, ...]:
    """Per-class one-vs-rest ``(tp, fp, tn, fn)``, each ``(K,)``."""
    pred = _predict(p, mode, threshold)
    tp = (pred & y).sum(0)
    fp = (pred & (1 - y)).sum(0)
    fn = ((1 - pred) & y).sum(0)
    tn = ((1 - pred) & (1 - y)).sum(0)
    return tp, fp, tn, fn


def _ratio(num: np.ndarray, den: np.ndarray, what: str) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(num.shape, np.nan)
    ok = den > 0
    out[ok] = num[ok] / den[ok]
    if not ok.all():
        _warn(f"{what} is undefined (zero denominator) for class index(es) {np.flatnonzero(~ok).tolist()}; NaN")
    return out


def _per_class(metric: str, p: np.ndarray, y: np.ndarray, mode: str, threshold: Any) -> np.ndarray:
    tp, fp, tn, fn = _counts(p, y, mode, threshold)
    if metric == "sensitivity":
        return _ratio(tp, tp + fn, "sensitivity")
    if metric == "specificity":
        return _ratio(tn, tn + fp, "specificity")
    if metric == "ppv":
        return _ratio(tp, tp + fp, "PPV")
    if metric == "npv":
        return _ratio(tn, tn + fn, "NPV")
    if metric == "f1":
        return _ratio(2 * tp, 2 * tp + fp + fn, "F1")
    raise ValueError(f"unknown per-class metric {metric!r}")


def _micro(metric: str, p: np.ndarray, y: np.ndarray, mode: str, threshold: Any) -> float:
    """``metric`` of the one-vs-rest counts pooled over classes (scikit-learn's ``average="micro"``)."""
    tp, fp, tn, fn = (np.asarray([c.sum()]) for c in _counts(p, y, mode, threshold))
    num, den = {
        "sensitivity": (tp, tp + fn),
        "specificity": (tn, tn + fp),
        "ppv": (tp, tp + fp),
        "npv": (tn, tn + fn),
        "f1": (2 * tp, 2 * tp + fp + fn),
    }[metric]
    return float(_ratio(num, den, f"micro {metric}")[0])


def _threshold_metric(metric: str, y_prob: Any, y_true: Any, mode: str, threshold: Any, average: str | None) -> Any:
    p, y = prepare_inputs(y_prob, y_true, mode)
    per = _per_class(metric, p, y, mode, threshold)
    if mode == "binary":
        return float(per[0])
    if average == "micro":
        return _micro(metric, p, y, mode, threshold)
    return _averaged(per, average, None, metric)


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
    p, y = prepare_inputs(y_prob, y_true, mode)
    if mode == "multiclass":
        k = p.shape[1]
        cm = np.zeros((k, k), dtype=np.int64)
        np.add.at(cm, (y.argmax(1), p.argmax(1)), 1)
        return cm
    tp, fp, tn, fn = _counts(p, y, mode, threshold)
    cms = np.stack([np.stack([tn, fp], -1), np.stack([fn, tp], -1)], 1)  # (K, 2, 2)
    return cms[0] if mode == "binary" else cms


def compute_accuracy(y_prob: Any, y_true: Any, mode: str = "binary", threshold: Any = 0.5) -> float:
    """Fraction of correct predictions; for multi-label tasks the label-wise mean (``1 - Hamming loss``)."""
    p, y = prepare_inputs(y_prob, y_true, mode)
    if mode == "multiclass":
        return float((p.argmax(1) == y.argmax(1)).mean())
    return float((_predict(p, mode, threshold) == y).mean())


def compute_balanced_accuracy(y_prob: Any, y_true: Any, mode: str = "binary", threshold: Any = 0.5) -> float:
    """Balanced accuracy.

    Binary: ``(sensitivity + specificity) / 2``; multi-class: mean per-class recall (scikit-learn's definition);
    multi-label: mean over labels of the binary balanced accuracy. Undefined classes are ignored (with a warning).
    """
    p, y = prepare_inputs(y_prob, y_true, mode)
    sens = _per_class("sensitivity", p, y, mode, threshold)
    if mode == "multiclass":
        return _averaged(sens, "macro", None, "balanced accuracy")
    per = (sens + _per_class("specificity", p, y, mode, threshold)) / 2.0
    return float(per[0]) if mode == "binary" else _averaged(per, "macro", None, "balanced accuracy")


def _confidence_correct(p: np.ndarray, y: np.ndarray, mode: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Top-label confidence and correctness; one pair per label for multi-label tasks."""
    if mode == "multiclass":
        return [(p.max(1), (p.argmax(1) == y.argmax(1)).astype(np.float64))]
    out = []
    for k in range(p.shape[1]):
        pk = p[:, k]
        out.append((np.maximum(pk, 1.0 - pk), ((pk >= 0.5).astype(np.int64) == y[:, k]).astype(np.float64)))
    return out


def compute_calibration_bins(confidence: Any, correct: Any, n_bins: int = DEFAULT_ECE_BINS) -> dict[str, np.ndarray]:
    """Equal-width reliability bins on ``[0, 1]``: bin ``b`` holds confidences in ``(b/n, (b+1)/n]`` (0 in bin 0).

    Args:
        confidence: ``(N,)`` confidences in [0, 1].
        correct: ``(N,)`` 1 when the prediction was right, else 0.
        n_bins: number of bins.

    Returns:
        dict with ``edges`` ``(n_bins + 1,)``, ``count``, ``confidence`` (mean per bin, NaN when empty) and
        ``accuracy`` (NaN when empty), each ``(n_bins,)``.
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
    return float(np.mean([_ece(c, r, n_bins) for c, r in _confidence_correct(p, y, mode)]))


def compute_brier(y_prob: Any, y_true: Any, mode: str = "binary") -> float:
    """Brier score.

    Binary: ``mean((p - y)^2)`` of the positive class; multi-class: ``mean_i sum_k (p_ik - y_ik)^2`` (Brier's original
    multi-class score, range [0, 2]); multi-label: mean over labels of the binary score.
    """
    p, y = prepare_inputs(y_prob, y_true, mode)
    sq = (p - y) ** 2
    return float(sq.sum(1).mean() if mode == "multiclass" else sq.mean())


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
    p, y = prepare_inputs(y_prob, y_true, mode)
    k = 2 if mode == "binary" else p.shape[1]
    names = list(class_names) if class_names is not None else default_class_names(mode, k)
    if len(names) != k:
        raise ValueError(f"class_names must have {k} entries for this {mode} task, got {len(names)}: {names}")
    out: dict[str, Any] = {"mode": mode, "n_samples": int(len(p)), "class_names": names}
    if mode == "multiclass":
        out["threshold"] = None
    else:
        t = np.asarray(threshold, dtype=np.float64).reshape(-1)
        out["threshold"] = float(t[0]) if t.size == 1 else [float(v) for v in t]
    if mode == "binary":
        support = [int((y[:, 0] == 0).sum()), int(y[:, 0].sum())]
    else:
        support = [int(v) for v in y.sum(0)]
    for n, s in zip(names, support):
        out[f"support/{n}"] = s

    out["auc"] = compute_auc(p if mode != "binary" else p[:, 0], y if mode != "binary" else y[:, 0], mode)
    out["average_precision"] = compute_average_precision(
        p if mode != "binary" else p[:, 0], y if mode != "binary" else y[:, 0], mode
    )
    yp, yt = (p[:, 0], y[:, 0]) if mode == "binary" else (p, y)
    out["accuracy"] = compute_accuracy(yp, yt, mode, threshold)
    out["balanced_accuracy"] = compute_balanced_accuracy(yp, yt, mode, threshold)
    per_class = {m: _per_class(m, p, y, mode, threshold) for m in ("sensitivity", "specificity", "ppv", "npv", "f1")}
    for m, v in per_class.items():
        out[m] = float(v[0]) if mode == "binary" else _averaged(v, "macro", None, m)
    out["ece"] = compute_ece(yp, yt, mode, n_bins)
    out["ece_n_bins"] = int(n_bins)
    out["brier"] = compute_brier(yp, yt, mode)
    cm = compute_confusion_matrix(yp, yt, mode, threshold)
    out["confusion_matrix"] = cm.tolist()
    if mode == "binary":
        (tn, fp), (fn, tp) = cm.tolist()
        out.update(tp=int(tp), fp=int(fp), tn=int(tn), fn=int(fn))
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)  # already warned above for the same classes
        out["auc_micro"] = compute_auc(p, y, mode, average="micro")
        out["average_precision_micro"] = compute_average_precision(p, y, mode, average="micro")
        auc_pc = compute_auc(p, y, mode, average="none")
        ap_pc = compute_average_precision(p, y, mode, average="none")
        for m in per_class:
            out[f"{m}_micro"] = _micro(m, p, y, mode, threshold)
    if mode == "multilabel":
        out["subset_accuracy"] = float((_predict(p, mode, threshold) == y).all(1).mean())
    for i, n in enumerate(names):
        out[f"auc/{n}"] = float(auc_pc[i])
        out[f"average_precision/{n}"] = float(ap_pc[i])
        for m, v in per_class.items():
            out[f"{m}/{n}"] = float(v[i])
    return out
