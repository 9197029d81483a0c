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
"""Ignite metric handlers (thin :class:`monai.handlers.IgniteMetricHandler` wrappers) usable as bundle ``key_metric``.

Bundle example (``evaluate.json``/``train.json`` validator)::

    "key_val_metric": {
        "val_auc": {"_target_": "monai_transfer.handlers.metric_handlers.AUCHandler", "mode": "binary"}
    },
    "additional_metrics": {
        "val_bal_acc": {
            "_target_": "monai_transfer.handlers.metric_handlers.OperatingPointHandler",
            "metric_name": "balanced_accuracy", "threshold": "$@bundle_root + '/models/threshold.json'"
        },
        "val_all": {
            "_target_": "monai_transfer.handlers.metric_handlers.ClassificationMetricsHandler", "prefix": "val_"
        }
    }

The default ``output_transform`` is ``monai.handlers.from_engine(["pred", "label"])``: ``pred`` must hold
probabilities (add ``Activationsd(softmax=True)`` or ``sigmoid=True`` to the evaluator postprocessing).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from monai.handlers import IgniteMetricHandler, from_engine

from monai_transfer.metrics.cumulative import ClassificationMetrics, ThresholdLike
from monai_transfer.metrics.functional import DEFAULT_ECE_BINS
from monai_transfer.utils.task import as_task

__all__ = ["AUCHandler", "OperatingPointHandler", "ClassificationMetricsHandler"]

_AVERAGES = ("macro", "micro")
_OPERATING_POINT_METRICS = ("sensitivity", "specificity", "balanced_accuracy", "accuracy", "ppv", "npv", "f1")


class AUCHandler(IgniteMetricHandler):
    """Epoch-level ROC AUC (for best-checkpoint selection / early stopping on validation AUC).

    Args:
        mode: ``"binary"`` (positive class = column 1 of a softmax output), ``"multiclass"`` (one-vs-rest) or
            ``"multilabel"``.
        average: ``"macro"`` (mean of per-class AUCs) or ``"micro"``; ignored for binary tasks.
        output_transform: maps ``engine.state.output`` to ``(y_pred, y)``; default ``from_engine(["pred", "label"])``.

    A class absent from the epoch's labels gives ``NaN`` (with a warning), which never counts as a new best.
    """

    def __init__(
        self,
        mode: str = "binary",
        average: str = "macro",
        output_transform: Callable = from_engine(["pred", "label"]),
    ) -> None:
        if average not in _AVERAGES:
            raise ValueError(f"average must be one of {_AVERAGES}, got {average!r}")
        name = "auc_micro" if (average == "micro" and not as_task(mode).is_binary) else "auc"
        metric_fn = ClassificationMetrics(mode=mode, metric_name=name)
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=False)


class OperatingPointHandler(IgniteMetricHandler):
    """One threshold-based metric (sensitivity, specificity, balanced accuracy, ...) at a decision threshold.

    Args:
        metric_name: one of ``"sensitivity"``, ``"specificity"``, ``"balanced_accuracy"``, ``"accuracy"``,
            ``"ppv"``, ``"npv"``, ``"f1"`` (macro mean for multi-class/multi-label).
        mode: task mode.
        threshold: a float (default 0.5), a per-label list, a path to a threshold JSON written by
            ``monai_transfer.metrics.save_threshold`` / ``ClassificationReportWriter`` (read at every epoch end), or
            a zero-argument callable. Unused for multi-class (arg-max).
        output_transform: default ``from_engine(["pred", "label"])``.
    """

    def __init__(
        self,
        metric_name: str = "balanced_accuracy",
        mode: str = "binary",
        threshold: ThresholdLike = 0.5,
        output_transform: Callable = from_engine(["pred", "label"]),
    ) -> None:
        if metric_name not in _OPERATING_POINT_METRICS:
            raise ValueError(f"metric_name must be one of {_OPERATING_POINT_METRICS}, got {metric_name!r}")
        metric_fn = ClassificationMetrics(mode=mode, metric_name=metric_name, threshold=threshold)
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=False)


class ClassificationMetricsHandler(IgniteMetricHandler):
    """Every scalar of ``compute_classification_metrics`` into ``engine.state.metrics`` (e.g. for TensorBoard).

    The values are stored flat under ``prefix + key`` (``val_auc``, ``val_sensitivity``, ``val_auc/pneumonia``...);
    the name it is attached under is not used. Not meant as ``key_metric`` (use :class:`AUCHandler`).

    Args:
        mode: task mode.
        threshold: as :class:`OperatingPointHandler`.
        class_names: names for the per-class keys.
        prefix: prepended to every key, e.g. ``"val_"``.
        n_bins: ECE bins.
        output_transform: default ``from_engine(["pred", "label"])``.
    """

    def __init__(
        self,
        mode: str = "binary",
        threshold: ThresholdLike = 0.5,
        class_names: Sequence[str] | None = None,
        prefix: str = "",
        n_bins: int = DEFAULT_ECE_BINS,
        output_transform: Callable = from_engine(["pred", "label"]),
    ) -> None:
        metric_fn = ClassificationMetrics(
            mode=mode, threshold=threshold, class_names=class_names, n_bins=n_bins, scalars_only=True
        )
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=False)
        self.prefix = str(prefix)
        self._metrics_result_mode = "flatten"  # keys go straight into engine.state.metrics, no nested dict

    def compute(self) -> dict[str, float]:
        result = super().compute()
        return {f"{self.prefix}{k}": v for k, v in result.items()}
