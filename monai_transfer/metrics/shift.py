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
"""Scores of a binary classifier under the acquisition-shift suite (``monai_transfer.transforms.shift``).

The suite re-scores held-out predictions made on corrupted copies of the images (one set of probabilities per family
and severity) plus a class-balance shift, which re-samples the clean predictions to other positive fractions
(:func:`prevalence_indices`). Per condition: AUC, sensitivity and specificity at the operating point, balanced
accuracy and ECE; per family: the mean and worst over its severities; over the suite: the worst case (which family,
which severity) and ``suite_auc``, the mean AUC over every corrupted condition, the number the recipe selection
reads from out-of-fold predictions (``scripts/bench/recipe_xray.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from monai_transfer.metrics.functional import compute_auc, compute_ece

__all__ = [
    "PREVALENCE_FAMILY",
    "PREVALENCE_LEVELS",
    "prevalence_indices",
    "positive_scores",
    "score_condition",
    "score_shift_suite",
]

#: the name of the class-balance family in a suite's scores
PREVALENCE_FAMILY = "prevalence"
#: positive-class fractions of the class-balance family, severity 1..5 (PneumoniaMNIST: 74 % of train is pneumonia,
#: 62.5 % of the official test split)
PREVALENCE_LEVELS = (0.6, 0.5, 0.4, 0.3, 0.2)


def positive_scores(y_prob: Any) -> np.ndarray:
    """Positive-class scores ``(N,)`` of binary probabilities ``(N,)``, ``(N, 1)`` or ``(N, 2)`` (column 1)."""
    p = np.asarray(y_prob, dtype=np.float64)
    if p.ndim == 2 and p.shape[1] == 2:
        return p[:, 1]
    if p.ndim == 2 and p.shape[1] == 1 or p.ndim == 1:
        return p.reshape(-1)
    raise ValueError(f"the shift suite scores binary tasks: probabilities (N,), (N, 1) or (N, 2), got shape {p.shape}")


def prevalence_indices(y_true: Any, positive_fraction: float, seed: int = 0) -> np.ndarray:
    """Indices of a subsample of the evaluation set whose positive fraction is ``positive_fraction``: all of the
    limiting class, a random subset (without replacement, ``seed``) of the other; sorted.

    Raises:
        ValueError: ``positive_fraction`` outside (0, 1), labels not 0/1, or a class absent.
    """
    y = np.asarray(y_true).reshape(-1)
    if not 0.0 < float(positive_fraction) < 1.0:
        raise ValueError(f"positive_fraction must be in (0, 1), got {positive_fraction}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"prevalence_indices needs 0/1 labels, got values {sorted(set(np.unique(y).tolist()))[:5]}")
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    if not len(pos) or not len(neg):
        raise ValueError(f"prevalence_indices needs both classes, got {len(pos)} positive and {len(neg)} negative")
    f = float(positive_fraction)
    n_pos = min(len(pos), int(round(len(neg) * f / (1 - f))))
    n_neg = min(len(neg), int(round(n_pos * (1 - f) / f)))
    rng = np.random.default_rng(seed)
    keep = np.r_[rng.choice(pos, max(n_pos, 1), replace=False), rng.choice(neg, max(n_neg, 1), replace=False)]
    return np.sort(keep)


def score_condition(y_prob: Any, y_true: Any, threshold: float) -> dict[str, Any]:
    """AUC, sensitivity, specificity and balanced accuracy at ``threshold`` (``p >= threshold`` is positive), ECE
    and ``n`` of one condition's binary predictions."""
    p, y = positive_scores(y_prob), np.asarray(y_true).reshape(-1).astype(np.int64)
    if len(p) != len(y):
        raise ValueError(f"{len(p)} probabilities for {len(y)} labels")
    pred = p >= float(threshold)
    sens = float(pred[y == 1].mean()) if (y == 1).any() else float("nan")
    spec = float((~pred[y == 0]).mean()) if (y == 0).any() else float("nan")
    return {
        "n": int(len(y)),
        "positive_fraction": float(y.mean()) if len(y) else float("nan"),
        "auc": float(compute_auc(np.c_[1 - p, p], y, "binary")),
        "sensitivity": sens,
        "specificity": spec,
        "balanced_accuracy": (sens + spec) / 2.0,
        "ece": float(compute_ece(np.c_[1 - p, p], y, "binary")),
    }


_WORST = {"auc": min, "sensitivity": min, "specificity": min, "balanced_accuracy": min, "ece": max}


def _family_summary(rows: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"severities": dict(rows)}
    for key, pick in _WORST.items():
        vals = [r[key] for r in rows.values() if np.isfinite(r[key])]
        out[f"mean_{key}"] = float(np.mean(vals)) if vals else float("nan")
        out[f"worst_{key}"] = float(pick(vals)) if vals else float("nan")
    return out


def score_shift_suite(
    y_true: Any,
    clean_prob: Any,
    shifted: Mapping[str, Mapping[int, Any]],
    threshold: float,
    prevalence_levels: tuple[float, ...] | None = PREVALENCE_LEVELS,
    seed: int = 0,
) -> dict[str, Any]:
    """Score clean and shifted predictions of the same cases.

    Args:
        y_true: 0/1 labels ``(N,)``.
        clean_prob: probabilities of the unchanged images.
        shifted: ``{family: {severity: probabilities}}`` of the corrupted copies, in the order of ``y_true``.
        threshold: the operating point (``p >= threshold`` is positive).
        prevalence_levels: positive fractions of the class-balance family (re-sampled clean predictions);
            ``None`` or empty: no such family.
        seed: of the class-balance resampling.

    Returns:
        ``{"threshold", "clean", "families": {family: {"severities": {"1": scores, ...}, "mean_auc", "worst_auc",
        ...}}, "worst": {metric: {"value", "family", "severity"}}, "suite_auc", "worst_family_auc",
        "worst_family_balanced_accuracy"}``; ``suite_auc`` is the mean AUC over the corrupted (image) conditions, the
        worst family is the one with the lowest mean over its severities.

    Raises:
        ValueError: a condition whose number of predictions differs from the labels, non-binary probabilities.
    """
    y = np.asarray(y_true).reshape(-1)
    clean = positive_scores(clean_prob)
    families: dict[str, Any] = {}
    for family, by_sev in shifted.items():
        families[family] = _family_summary({str(s): score_condition(p, y, threshold) for s, p in by_sev.items()})
    image_aucs = [r["auc"] for f in families.values() for r in f["severities"].values() if np.isfinite(r["auc"])]
    if prevalence_levels:
        rows = {}
        for s, f in enumerate(prevalence_levels, start=1):
            idx = prevalence_indices(y, f, seed)
            rows[str(s)] = {**score_condition(clean[idx], y[idx], threshold), "parameter": float(f)}
        families[PREVALENCE_FAMILY] = _family_summary(rows)
    worst: dict[str, Any] = {}
    for key, pick in _WORST.items():
        cands = [(r[key], fam, int(s)) for fam, f in families.items() for s, r in f["severities"].items()]
        cands = [c for c in cands if np.isfinite(c[0])]
        if cands:
            v, fam, s = pick(cands, key=lambda c: c[0])
            worst[key] = {"value": float(v), "family": fam, "severity": s}
    fam_auc = {k: v["mean_auc"] for k, v in families.items() if k != PREVALENCE_FAMILY}
    fam_bacc = {k: v["mean_balanced_accuracy"] for k, v in families.items()}
    return {
        "threshold": float(threshold),
        "clean": score_condition(clean, y, threshold),
        "families": families,
        "worst": worst,
        "suite_auc": float(np.mean(image_aucs)) if image_aucs else float("nan"),
        "worst_family_auc": _argworst(fam_auc, min),
        "worst_family_balanced_accuracy": _argworst(fam_bacc, min),
    }


def _argworst(values: Mapping[str, float], pick: Any) -> dict[str, Any] | None:
    vals = {k: v for k, v in values.items() if np.isfinite(v)}
    if not vals:
        return None
    k = pick(vals, key=vals.get)
    return {"family": k, "value": float(vals[k])}
