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

:class:`PredictionBuffer` is the per-epoch buffer for handlers that need the case ids as well (reports, prediction
files, volume pooling): probabilities, labels and ids, gathered across ranks in rank order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from monai.metrics import CumulativeIterationMetric

from monai_transfer.metrics.functional import DEFAULT_ECE_BINS, compute_classification_metrics
from monai_transfer.metrics.threshold import ThresholdLike, resolve_threshold  # re-exported here
from monai_transfer.utils.task import look_up_mode

__all__ = ["ThresholdLike", "resolve_threshold", "ClassificationMetrics", "PredictionBuffer"]


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
        self.mode = look_up_mode(mode)
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


def _rows(x: Any, name: str) -> torch.Tensor:
    """A batch-first tensor or a list of channel-first tensors -> a float32 CPU ``(B, C)`` tensor."""
    if isinstance(x, (list, tuple)):
        if not x:
            return torch.zeros(0, 1)
        x = torch.stack([torch.as_tensor(v).as_subclass(torch.Tensor).detach().cpu().float() for v in x])
    elif isinstance(x, torch.Tensor):
        x = x.as_subclass(torch.Tensor).detach().cpu().float()
    else:
        try:
            x = torch.as_tensor(x).float()
        except (TypeError, ValueError, RuntimeError) as e:
            raise TypeError(f"{name} must be a tensor, an array or a list of tensors, got {type(x)}") from e
    return x.reshape(x.shape[0], -1)


class PredictionBuffer:
    """Per-epoch buffer of probabilities, labels and case ids, gathered across distributed ranks.

    Unlike MONAI's :class:`~monai.metrics.Cumulative` (which :class:`ClassificationMetrics` uses) it also carries the
    case ids, which are strings, and a rank that saw no case simply contributes nothing (MONAI's buffer would skip
    the collective on that rank and hang the others). Missing ids are named ``case_<n>`` after gathering, with ``n``
    counted over all ranks, so two ranks never produce the same default id.

    Example::

        buf = PredictionBuffer()
        for batch in loader:  # every rank
            buf.add(torch.softmax(model(batch["image"]), 1), batch["label"], batch["image"].meta["filename_or_obj"])
        probs, labels, ids = buf.get_data()  # a collective: call it on every rank

    A handler that runs on ONE rank over the whole split (the bundles' rank-0 ``report#evaluator``) calls
    ``get_data(gather=False)``: no collective, this rank's data only.

    Args:
        with_labels: whether :meth:`add` receives labels (a prediction writer has none).
    """

    def __init__(self, with_labels: bool = True) -> None:
        self.with_labels = bool(with_labels)
        self.reset()

    def reset(self) -> None:
        """Drop everything buffered."""
        self._preds: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []
        self._ids: list[str | None] = []

    def __len__(self) -> int:
        """Number of cases buffered on this rank."""
        return len(self._ids)

    def add(self, y_pred: Any, y: Any = None, ids: Sequence[Any] | None = None) -> None:
        """Buffer one batch.

        Args:
            y_pred: probabilities, ``(B, K)`` or a list of ``(K,)`` tensors.
            y: labels, ``(B,)``, ``(B, L)`` or a list; required when ``with_labels``, else ignored.
            ids: one id per case; ``None`` (or a list of another length, as a collated batch without ids gives)
                names the cases ``case_<n>``.

        Raises:
            ValueError: labels missing, or a different number of labels than predictions.
        """
        p = _rows(y_pred, "y_pred")
        if self.with_labels:
            if y is None:
                raise ValueError(f"{type(self).__name__}(with_labels=True).add needs labels y, got None")
            t = _rows(y, "y")
            if t.shape[0] != p.shape[0]:
                raise ValueError(f"y_pred and y must hold the same number of cases, got {p.shape[0]} and {t.shape[0]}")
            self._labels.append(t)
        self._preds.append(p)
        ids = list(ids) if ids is not None else []
        self._ids.extend([None if i is None else str(i) for i in ids] if len(ids) == p.shape[0] else [None] * len(p))

    def get_data(
        self, gather: bool = True, name_missing: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None, list[str]]:
        """``(probs (N, K), labels (N, L) or None, ids)`` of every rank, in rank order.

        With ``gather`` and an initialised ``torch.distributed`` process group of several ranks this is a collective
        (``all_gather_object``): every rank must call it, and every rank gets the same result.

        Args:
            gather: gather across ranks; ``False`` returns this rank's data only (no collective), for a handler that
                runs on one rank over the whole split.
            name_missing: name a case without id ``case_<n>``; ``False`` leaves it ``None`` (for a caller that
                matches rows by id and falls back to loader order without ids).

        Raises:
            ValueError: no rank buffered anything.
        """
        local = (
            torch.cat(self._preds).numpy() if self._ids else None,
            torch.cat(self._labels).numpy() if self._ids and self.with_labels else None,
            list(self._ids),
        )
        parts = [local]
        if gather and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            parts = [None] * dist.get_world_size()
            dist.all_gather_object(parts, local)
        parts = [q for q in parts if q[0] is not None]
        if not parts:
            raise ValueError(f"{type(self).__name__} has no buffered data: call add() on at least one batch first")
        preds = torch.cat([torch.as_tensor(q[0]) for q in parts])
        labels = torch.cat([torch.as_tensor(q[1]) for q in parts]) if self.with_labels else None
        all_ids = [i for q in parts for i in q[2]]
        ids = [i if i is not None or not name_missing else f"case_{n:05d}" for n, i in enumerate(all_ids)]
        return preds, labels, ids
