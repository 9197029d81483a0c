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
"""Stratified percentile bootstrap confidence intervals, vectorised over resamples.

Each resample draws, with replacement, the same number of cases from every stratum (every distinct label row, i.e.
every class for binary/multi-class tasks), so all classes stay present and the per-class positive counts are fixed.
A resample is represented by a count vector ``w`` (how often each case was drawn); the built-in metrics are
computed for a whole block of resamples at once from these counts (weighted confusion counts turned into ratios by
:func:`monai.metrics.compute_confusion_matrix_metric`, weighted Mann-Whitney AUC), which is orders of magnitude
faster than re-running a metric function per resample.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from monai.metrics import compute_confusion_matrix_metric

from monai_transfer.metrics.functional import CONFUSION_METRICS, _to_numpy, prepare_inputs
from monai_transfer.utils.task import Task, apply_threshold, as_task

__all__ = ["BOOTSTRAP_METRICS", "bootstrap_ci"]

BOOTSTRAP_METRICS = ("auc", "sensitivity", "specificity", "balanced_accuracy", "ppv", "npv", "f1", "accuracy")
_BLOCK_ELEMENTS = 2_000_000  # resamples x cases held in memory at once


def _weighted_auc(score: np.ndarray, label: np.ndarray, w: np.ndarray) -> np.ndarray:
    """AUC (ties count 1/2) of one class for every row of the count matrix ``w`` ``(B, N)``.

    Kept here: MONAI's ``compute_roc_auc`` has no case weights and loops in Python over the cases of one resample.
    """
    order = np.argsort(score, kind="mergesort")
    s = score[order]
    starts = np.r_[0, np.flatnonzero(np.diff(s)) + 1]
    wo = w[:, order]
    lab = label[order].astype(np.float64)
    pos = np.add.reduceat(wo * lab, starts, axis=1)
    neg = np.add.reduceat(wo * (1.0 - lab), starts, axis=1)
    neg_below = np.cumsum(neg, axis=1) - neg
    n_pos, n_neg = pos.sum(1), neg.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos * (neg_below + 0.5 * neg)).sum(1) / (n_pos * n_neg)


def _block_values(metric: str, p: np.ndarray, y: np.ndarray, pred: np.ndarray, w: np.ndarray, task: Task) -> np.ndarray:
    """``(B, K)`` per-class values of ``metric`` for the count matrix ``w`` ``(B, N)``."""
    if metric == "auc":
        return np.stack([_weighted_auc(p[:, k], y[:, k], w) for k in range(p.shape[1])], 1)
    if metric == "accuracy":
        if task.is_multiclass:
            correct = (pred.argmax(1) == y.argmax(1)).astype(np.float64)[:, None]
        else:
            correct = (pred == y).astype(np.float64)
        return (w @ correct) / w.sum(1, keepdims=True)
    if metric not in CONFUSION_METRICS:
        raise ValueError(f"metric must be one of {BOOTSTRAP_METRICS} or a callable, got {metric!r}")
    if metric == "balanced_accuracy" and task.is_multiclass:
        metric = "sensitivity"  # multi-class balanced accuracy = mean recall, averaged by the caller
    yf, pf = y.astype(np.float64), pred.astype(np.float64)
    # weighted one-vs-rest [TP, FP, TN, FN] (B, K, 4); the ratios are MONAI's (NaN for a zero denominator)
    counts = np.stack([w @ (pf * yf), w @ (pf * (1 - yf)), w @ ((1 - pf) * (1 - yf)), w @ ((1 - pf) * yf)], -1)
    return compute_confusion_matrix_metric(CONFUSION_METRICS[metric], torch.from_numpy(counts)).numpy()


def _stratified_counts(rng: np.random.Generator, strata: list[np.ndarray], n: int, b: int) -> np.ndarray:
    w = np.zeros((b, n), dtype=np.float64)
    rows = np.arange(b)[:, None]
    for idx in strata:
        m = len(idx)
        draws = rng.integers(0, m, size=(b, m))
        w[:, idx] = np.bincount((draws + rows * m).ravel(), minlength=b * m).reshape(b, m)
    return w


def _percentiles(values: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(invalid="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN column -> NaN bound
            lo = np.nanpercentile(values, 100 * alpha / 2, axis=0)
            hi = np.nanpercentile(values, 100 * (1 - alpha / 2), axis=0)
    return lo, hi


def _nanmean_rows(v: np.ndarray) -> np.ndarray:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(v, axis=1)


def _check_bootstrap_args(metric: Any, n_resamples: int, alpha: float) -> None:
    """``ValueError`` naming the value for ``n_resamples < 1``, ``alpha`` outside (0, 1) or an unknown metric."""
    if int(n_resamples) < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples}")
    if not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if not callable(metric) and metric not in BOOTSTRAP_METRICS:
        raise ValueError(f"metric must be one of {BOOTSTRAP_METRICS} or a callable, got {metric!r}")


def _strata(y: np.ndarray) -> list[np.ndarray]:
    """Indices of each distinct label row (the strata the bootstrap resamples within)."""
    _, inverse = np.unique(y, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    return [np.flatnonzero(inverse == s) for s in range(inverse.max() + 1)]


def _resampled_values(
    metric: str,
    p: np.ndarray,
    y: np.ndarray,
    pred: np.ndarray,
    task: Task,
    rng: np.random.Generator,
    strata: list[np.ndarray],
    n_resamples: int,
) -> np.ndarray:
    """``(n_resamples, K)`` metric values of stratified resamples, computed in blocks of resample-count weights."""
    n = len(p)
    block = max(1, _BLOCK_ELEMENTS // max(n, 1))
    chunks = []
    for start in range(0, n_resamples, block):
        w = _stratified_counts(rng, strata, n, min(block, n_resamples - start))
        chunks.append(_block_values(metric, p, y, pred, w, task))
    return np.concatenate(chunks, 0)


def bootstrap_ci(
    y_prob: Any,
    y_true: Any,
    metric: str | Callable[[np.ndarray, np.ndarray], float] = "auc",
    mode: str = "binary",
    threshold: Any = 0.5,
    n_resamples: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, Any]:
    """Stratified percentile bootstrap confidence interval of a classification metric.

    Args:
        y_prob: probabilities (see :mod:`monai_transfer.metrics.functional`).
        y_true: labels.
        metric: one of :data:`BOOTSTRAP_METRICS` (vectorised; multi-class/multi-label give the macro mean plus
            per-class intervals) or a callable ``metric(y_prob, y_true) -> float`` on the resampled original inputs
            (evaluated once per resample, slower).
        mode: task mode.
        threshold: decision threshold of the threshold-based metrics (binary/multi-label).
        n_resamples: number of bootstrap resamples (default 1000).
        alpha: 1 - confidence level (default 0.05 for a 95% interval).
        seed: seed of the ``numpy.random.Generator``; the same seed gives the same interval.

    Returns:
        dict with ``metric``, ``estimate`` (value on the full data), ``lower``, ``upper``, ``alpha``, ``n_resamples``
        and ``method``; for a built-in metric in multi-class/multi-label mode also ``per_class`` with ``estimate``,
        ``lower`` and ``upper`` lists. Resamples where the metric is undefined are ignored.

    Raises:
        ValueError: ``n_resamples < 1``, ``alpha`` outside (0, 1) or an unknown metric name.
    """
    _check_bootstrap_args(metric, n_resamples, alpha)
    task = as_task(mode)
    p, y = prepare_inputs(y_prob, y_true, task)
    n = len(p)
    strata = _strata(y)
    rng = np.random.default_rng(seed)
    info = {"metric": metric if isinstance(metric, str) else getattr(metric, "__name__", "callable")}
    info.update(alpha=float(alpha), n_resamples=int(n_resamples), method="stratified percentile bootstrap")

    if callable(metric):
        yp, yt = _to_numpy(y_prob, "y_prob"), _to_numpy(y_true, "y_true")
        vals = np.empty(n_resamples)
        for i in range(n_resamples):
            idx = np.concatenate([s[rng.integers(0, len(s), len(s))] for s in strata])
            vals[i] = float(metric(yp[idx], yt[idx]))
        lo, hi = _percentiles(vals[:, None], alpha)
        return {**info, "estimate": float(metric(yp, yt)), "lower": float(lo[0]), "upper": float(hi[0])}

    pred = apply_threshold(p, task, threshold)
    est = _block_values(metric, p, y, pred, np.ones((1, n)), task)  # (1, K)
    vals = _resampled_values(metric, p, y, pred, task, rng, strata, int(n_resamples))  # (n_resamples, K)
    if task.is_binary or vals.shape[1] == 1:
        lo, hi = _percentiles(vals[:, :1], alpha)
        return {**info, "estimate": float(est[0, 0]), "lower": float(lo[0]), "upper": float(hi[0])}
    lo_c, hi_c = _percentiles(vals, alpha)
    lo, hi = _percentiles(_nanmean_rows(vals)[:, None], alpha)
    info["per_class"] = {"estimate": est[0].tolist(), "lower": lo_c.tolist(), "upper": hi_c.tolist()}
    return {**info, "estimate": float(_nanmean_rows(est)[0]), "lower": float(lo[0]), "upper": float(hi[0])}
