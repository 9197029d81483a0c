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
"""Cumulative (epoch-level) classification metric, the middle layer between the functions and the Ignite handlers.

Like :class:`monai.metrics.ROCAUCMetric`, it buffers predictions and labels over iterations (and gathers them across
distributed ranks) and computes everything at :meth:`aggregate`; the result is identical to calling
:func:`~monai_transfer.metrics.functional.compute_classification_metrics` once on all the data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.metrics import CumulativeIterationMetric

from monai_transfer.metrics.functional import DEFAULT_ECE_BINS, MODES, compute_classification_metrics
from monai_transfer.metrics.threshold import ThresholdLike, resolve_threshold  # re-exported here

__all__ = ["ThresholdLike", "resolve_threshold", "ClassificationMetrics"]


class ClassificationMetrics(CumulativeIterationMetric):
    """Epoch-level classification metrics (AUC, sensitivity, specificity, ... see ``compute_classification_metrics``).

    Args:
        mode: ``"binary"``, ``"multiclass"`` or ``"multilabel"``.
        metric_name: key of the ``compute_classification_metrics`` dict to return from :meth:`aggregate`
            (e.g. ``"auc"``, ``"auc_micro"``, ``"balanced_accuracy"``, ``"sensitivity"``); ``None`` returns the
            whole dict.
        threshold: decision threshold, see :func:`resolve_threshold` (a JSON path is read at every aggregate).
        class_names: class names for per-class keys.
        n_bins: bins of the expected calibration error.
        scalars_only: when returning the whole dict, keep only int/float entries (for ``engine.state.metrics``).

    Example::

        metric = ClassificationMetrics(mode="binary", metric_name="auc")
        for batch in loader:
            metric(y_pred=torch.softmax(model(batch["image"]), 1), y=batch["label"])
        auc = metric.aggregate()
        metric.reset()

    ``y_pred`` are probabilities ``(B, K)`` (or a list of ``(K,)`` tensors); ``y`` integer labels ``(B,)``/``(B, 1)``
    or one-hot/multi-hot ``(B, K)``.
    """

    def __init__(
        self,
        mode: str = "binary",
        metric_name: str | None = None,
        threshold: ThresholdLike = 0.5,
        class_names: Sequence[str] | None = None,
        n_bins: int = DEFAULT_ECE_BINS,
        scalars_only: bool = False,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.metric_name = metric_name
        self.threshold = threshold
        self.class_names = list(class_names) if class_names is not None else None
        self.n_bins = int(n_bins)
        self.scalars_only = scalars_only

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None) -> Any:  # type: ignore[override]
        if y is None:
            raise ValueError(f"{type(self).__name__} needs labels y, got None")
        y_pred = y_pred.as_subclass(torch.Tensor).float()
        y = y.as_subclass(torch.Tensor)
        if y_pred.shape[0] != y.shape[0]:
            raise ValueError(f"y_pred and y must have the same batch size, got {y_pred.shape} and {y.shape}")
        if y.ndim == 1:
            y = y[:, None]
        return y_pred, y.float()

    def get_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All buffered ``(y_pred, y)``.

        Raises:
            ValueError: nothing was buffered.
        """
        buf = self.get_buffer()
        if not isinstance(buf, (list, tuple)) or len(buf) != 2:
            raise ValueError(f"{type(self).__name__} has no buffered data: call it on at least one batch first")
        return buf[0], buf[1]

    def aggregate(self) -> Any:  # type: ignore[override]
        """Compute the metric(s) on all buffered data: a float for ``metric_name``, else a dict.

        Raises:
            KeyError: ``metric_name`` is not a key of the metrics dict of this mode (the message lists them).
        """
        y_pred, y = self.get_data()
        threshold = resolve_threshold(self.threshold)
        out = compute_classification_metrics(y_pred, y, self.mode, threshold, self.class_names, self.n_bins)
        if self.metric_name is not None:
            if self.metric_name not in out:
                raise KeyError(
                    f"metric_name {self.metric_name!r} is not computed for mode {self.mode!r}; "
                    f"choose one of {sorted(out)}"
                )
            return out[self.metric_name]
        if self.scalars_only:
            out = {k: v for k, v in out.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        return out
