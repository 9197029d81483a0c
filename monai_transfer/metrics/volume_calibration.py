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
"""Platt scaling of POOLED volume probabilities (binary volume bundles).

A slice bundle scores a volume by pooling its slice probabilities (mean, max, top-k mean;
:func:`~monai_transfer.data.volumes.aggregate_volume_probs`). One temperature of the slice logits
(:mod:`monai_transfer.metrics.calibration`) rescales every slice alike; it cannot undo the bias that pooling adds
(the mean of sharpened slice probabilities sits too high for most volumes; the maximum of many slices sits too high
for every volume). A second, volume-level step does: ``q = sigmoid(a * logit(p) + b)`` on the pooled positive-class
probability ``p``, with ``a > 0`` so that the ranking of volumes (their AUC) is unchanged.

It is fitted by the cross-validation workflow (:mod:`monai_transfer.cv.run`) on the out-of-fold volume probabilities
after the temperature, stored in ``models/calibration.json`` under ``"volume_platt"`` with the pooling it was fitted
for, and applied after pooling wherever a slice bundle answers per volume: the validation report
(:class:`~monai_transfer.handlers.volume_aggregation.VolumeReportWriter`), the inference CSV
(:class:`~monai_transfer.handlers.volume_aggregation.VolumePredictionWriter`), ``python -m monai_transfer.evaluate``
and the MONAI Label volume task. A pooling other than the one it was fitted for gets no Platt step (logged).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from monai_transfer.metrics.functional import DEFAULT_ECE_BINS, _ece
from monai_transfer.utils.io import read_json_file

__all__ = [
    "VolumePlatt",
    "aggregation_key",
    "fit_platt",
    "crossfit_platt",
    "platt_nll",
    "positive_class_ece",
    "load_volume_platt",
]

logger = logging.getLogger(__name__)

_EPS = 1e-6


def aggregation_key(method: str, k: int | None = None) -> str:
    """The pooling a Platt step was fitted for, as stored: ``"mean"``, ``"max"`` or ``"topk_mean:<k>"``."""
    return f"topk_mean:{int(k if k is not None else 3)}" if method == "topk_mean" else str(method)


def _logit(p: Any) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(q / (1 - q))


def _sigmoid(s: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * s))  # overflow-free


@dataclass(frozen=True)
class VolumePlatt:
    """``q = sigmoid(slope * logit(p) + intercept)`` on pooled binary volume probabilities.

    Args:
        slope: ``a > 0`` (a non-positive slope would reverse or erase the ranking).
        intercept: ``b``.
        aggregation: the pooling it was fitted for (:func:`aggregation_key`).

    Raises:
        ValueError: a slope that is not a positive finite number, or a non-finite intercept.
    """

    slope: float
    intercept: float
    aggregation: str

    def __post_init__(self) -> None:
        if not (math.isfinite(self.slope) and self.slope > 0):
            raise ValueError(f"volume Platt slope must be a positive finite number, got {self.slope!r}")
        if not math.isfinite(self.intercept):
            raise ValueError(f"volume Platt intercept must be finite, got {self.intercept!r}")

    def __call__(self, probs: Any) -> np.ndarray:
        """Calibrate ``(V,)`` positive-class probabilities or ``(V, 2)`` / ``(2,)`` two-class rows (same shape back).

        Raises:
            ValueError: any other shape (Platt scaling of pooled volumes is for binary tasks).
        """
        p = np.asarray(probs, dtype=np.float64)
        if p.ndim == 2 and p.shape[1] == 2:
            q = _sigmoid(self.slope * _logit(p[:, 1]) + self.intercept)
            return np.stack([1 - q, q], 1)
        if p.ndim == 1 and p.shape == (2,):
            return self(p[None])[0]
        if p.ndim == 1:
            return _sigmoid(self.slope * _logit(p) + self.intercept)
        raise ValueError(f"volume Platt scaling needs binary probabilities (V,) or (V, 2), got shape {p.shape}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly fields (``slope``, ``intercept``, ``aggregation``)."""
        return asdict(self)


def _nll(s: np.ndarray, y: np.ndarray) -> float:
    """Mean NLL of 0/1 ``y`` under ``sigmoid(s)`` (log-sum-exp form: no overflow)."""
    return float(np.mean(np.maximum(s, 0) - y * s + np.log1p(np.exp(-np.abs(s)))))


def platt_nll(probs: Any, labels: Any, slope: float = 1.0, intercept: float = 0.0) -> float:
    """Mean negative log-likelihood of binary ``labels`` under ``sigmoid(slope * logit(probs) + intercept)``."""
    return _nll(slope * _logit(probs) + intercept, np.asarray(labels, dtype=np.float64))


def positive_class_ece(probs: Any, labels: Any, n_bins: int = DEFAULT_ECE_BINS) -> float:
    """ECE of the positive-class reliability diagram: bins of ``p`` against the fraction of positives.

    The top-label ECE (:func:`~monai_transfer.metrics.functional.compute_ece`) folds ``p`` and ``1 - p`` into one
    confidence, so cases over-called positive at ``p = 0.15`` and at ``p = 0.85`` can cancel in one bin; this one
    cannot hide a probability that is too high (or too low) everywhere.
    """
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    return _ece(p, np.asarray(labels, dtype=np.float64).reshape(-1), n_bins)  # confidence p, "correct" = positive


def fit_platt(probs: Any, labels: Any, max_iter: int = 100, tol: float = 1e-10) -> tuple[float, float]:
    """``(slope, intercept)`` minimising :func:`platt_nll` (Newton-Raphson, deterministic, no extra dependency).

    Args:
        probs: ``(N,)`` positive-class probabilities.
        labels: ``(N,)`` 0/1 labels.
        max_iter: Newton steps at most.
        tol: stop when a step moves both parameters by less than this.

    Raises:
        ValueError: different lengths, fewer than 2 cases, a single class, or labels other than 0/1.
    """
    x = _logit(probs).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if len(x) != len(y) or len(y) < 2:
        raise ValueError(f"fit_platt needs as many labels as probabilities (>= 2), got {len(x)} and {len(y)}")
    if not np.isin(y, (0.0, 1.0)).all() or len(np.unique(y)) < 2:
        raise ValueError("fit_platt needs 0/1 labels of both classes")
    X = np.stack([x, np.ones_like(x)], 1)
    w = np.array([1.0, 0.0])
    current = _nll(X @ w, y)
    for _ in range(int(max_iter)):
        q = _sigmoid(X @ w)
        grad = X.T @ (q - y)
        hess = X.T @ (X * (q * (1 - q))[:, None]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        while (new := _nll(X @ (w - step), y)) > current + 1e-12 and np.abs(step).max() > tol:
            step = step / 2  # damped: never increase the NLL (separable data)
        w, current = w - step, new
        if np.abs(step).max() < tol:
            break
    return float(w[0]), float(w[1])


def crossfit_platt(probs: Any, labels: Any, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Platt-scaled probabilities of each case from a fit on the OTHER folds (stratified, seeded): an honest estimate
    of what the Platt step does on cases it was not fitted on.

    Raises:
        ValueError: a class with fewer cases than ``folds``.
    """
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).astype(np.int64).reshape(-1)
    counts = np.bincount(y, minlength=2)
    if counts.min() < folds:
        raise ValueError(f"crossfit_platt: {folds} folds need at least {folds} cases per class, got {counts.tolist()}")
    rng = np.random.default_rng(seed)
    fold = np.zeros(len(y), dtype=np.int64)
    for c in (0, 1):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        fold[idx] = np.arange(len(idx)) % folds
    out = np.empty(len(y))
    for k in range(folds):
        a, b = fit_platt(p[fold != k], y[fold != k])
        out[fold == k] = _sigmoid(max(a, _EPS) * _logit(p[fold == k]) + b)
    return out


def load_volume_platt(
    path: str | os.PathLike | None, method: str, k: int | None = None, where: str = "volume pooling"
) -> VolumePlatt | None:
    """The ``"volume_platt"`` step of a ``calibration.json`` for pooling ``method`` (``k`` for ``"topk_mean"``).

    Returns None (nothing to apply) when ``path`` is None, the file does not exist (no calibration, as
    ``ApplyTemperatured(allow_missing=True)``), the file has no ``"volume_platt"`` entry (a temperature only), or the
    step was fitted for another pooling (logged as a warning naming both: a Platt step fitted on mean-pooled
    probabilities does not fit max-pooled ones).

    Raises:
        ValueError: a ``"volume_platt"`` entry that is not an object with a positive ``slope``, a finite
            ``intercept`` and an ``aggregation``; the message names the file.
    """
    if path is None or not Path(path).is_file():
        return None
    obj = read_json_file(Path(path), "calibration file")
    entry = obj.get("volume_platt") if isinstance(obj, Mapping) else None
    if entry is None:
        return None
    try:
        platt = VolumePlatt(float(entry["slope"]), float(entry["intercept"]), str(entry["aggregation"]))
    except (TypeError, KeyError, ValueError) as e:
        raise ValueError(
            f"calibration file {path}: invalid 'volume_platt' {entry!r:.120} ({e}); it needs a positive 'slope', a "
            "finite 'intercept' and the 'aggregation' it was fitted for"
        ) from e
    wanted = aggregation_key(method, k)
    if platt.aggregation != wanted:
        logger.warning(
            "%s: the volume Platt step of %s was fitted for %r pooling, not %r: pooled probabilities are NOT "
            "Platt-scaled (only the slice temperature applies)", where, path, platt.aggregation, wanted,
        )  # fmt: skip
        return None
    return platt
