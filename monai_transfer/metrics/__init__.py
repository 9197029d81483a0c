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
"""Classification metrics in three layers, like MONAI: functions, a cumulative metric, and Ignite handlers
(:mod:`monai_transfer.handlers.metric_handlers`); plus bootstrap confidence intervals and operating points."""

from __future__ import annotations

from monai_transfer.metrics.bootstrap import BOOTSTRAP_METRICS, bootstrap_ci
from monai_transfer.metrics.calibration import (
    CalibrationWarning,
    apply_temperature,
    calibration_summary,
    fit_temperature,
    load_calibration,
    save_calibration,
)
from monai_transfer.metrics.cumulative import ClassificationMetrics, PredictionBuffer, resolve_threshold
from monai_transfer.metrics.functional import (
    DEFAULT_ECE_BINS,
    UndefinedMetricWarning,
    compute_accuracy,
    compute_auc,
    compute_average_precision,
    compute_balanced_accuracy,
    compute_brier,
    compute_calibration_bins,
    compute_classification_metrics,
    compute_confusion_matrix,
    compute_ece,
    compute_ece_noise_floor,
    compute_f1,
    compute_npv,
    compute_ppv,
    compute_roc_curve,
    compute_sensitivity,
    compute_specificity,
)
from monai_transfer.metrics.prevalence import (
    balance_shift_warning,
    class_balance,
    ppv_npv_at_prevalence,
    training_counts_from_meta,
)
from monai_transfer.metrics.shift import prevalence_indices, score_shift_suite
from monai_transfer.metrics.threshold import (
    load_threshold,
    save_threshold,
    select_shift_robust_threshold,
    select_threshold,
)

__all__ = [
    "score_shift_suite",
    "prevalence_indices",
    "select_shift_robust_threshold",
    "BOOTSTRAP_METRICS",
    "DEFAULT_ECE_BINS",
    "UndefinedMetricWarning",
    "bootstrap_ci",
    "ClassificationMetrics",
    "PredictionBuffer",
    "resolve_threshold",
    "compute_accuracy",
    "compute_auc",
    "compute_average_precision",
    "compute_balanced_accuracy",
    "compute_brier",
    "compute_calibration_bins",
    "compute_classification_metrics",
    "compute_confusion_matrix",
    "compute_ece",
    "compute_ece_noise_floor",
    "compute_f1",
    "compute_npv",
    "compute_ppv",
    "compute_roc_curve",
    "compute_sensitivity",
    "compute_specificity",
    "load_threshold",
    "save_threshold",
    "select_threshold",
    "CalibrationWarning",
    "apply_temperature",
    "calibration_summary",
    "fit_temperature",
    "load_calibration",
    "save_calibration",
    "balance_shift_warning",
    "class_balance",
    "ppv_npv_at_prevalence",
    "training_counts_from_meta",
]
