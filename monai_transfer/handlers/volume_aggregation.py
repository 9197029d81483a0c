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
"""Ignite handlers for evaluators that run over 2D slices of volumes but must answer per volume.

The evaluator sees slices (each batch item carries its volume's ``source_id``, set by
:class:`~monai_transfer.transforms.ExtractSlicesd`); these handlers group the slice probabilities by ``source_id``
and pool them with :func:`~monai_transfer.data.volumes.aggregate_volume_probs`:

- :class:`VolumeAggregator`: an Ignite ``Metric`` giving a volume-level metric (AUC by default), usable as the
  evaluator's ``key_val_metric`` so that the best checkpoint is chosen per volume (``val_volume_auc``);
- :class:`VolumeReportWriter`: :class:`~monai_transfer.handlers.report_writer.ClassificationReportWriter` with one
  row per volume (``metrics.json``, ``predictions.csv``, plots; threshold selection on volume probabilities);
- :class:`VolumePredictionWriter`: :class:`~monai_transfer.handlers.prediction_writer.ClassificationPredictionWriter`
  with one prediction per volume (inference, no labels).

Bundle example (``train.json`` validator)::

    "key_val_metric": {"val_volume_auc": {
        "_target_": "monai_transfer.handlers.volume_aggregation.VolumeAggregator", "method": "mean"}}

Note:
    every class buffers the epoch in a :class:`~monai_transfer.metrics.cumulative.PredictionBuffer`. Under
    ``torch.distributed`` (``multi_gpu_train.json``) it is gathered across ranks (``all_gather_object``) before
    pooling when the engine's data are sharded by rank
    (:func:`~monai_transfer.handlers.report_writer.data_sharded_across_ranks`), so every rank computes the same
    volume-level metric over the whole validation split. Shard the validation data by VOLUME (a
    ``DistributedSampler`` over the volume dataset with ``even_divisible=False``): a volume split across ranks still
    pools correctly, but a volume repeated by padding would count its slices twice. The bundles run the writers on
    rank 0 over the whole split (a plain ``DataLoader``): no gather there.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.handlers import from_engine
from monai.utils import IgniteInfo, min_version, optional_import

from monai_transfer.data.volumes import AGGREGATION_METHODS, aggregate_by_volume
from monai_transfer.handlers.prediction_writer import ClassificationPredictionWriter
from monai_transfer.handlers.report_writer import ClassificationReportWriter, ids_from_output
from monai_transfer.metrics.cumulative import PredictionBuffer
from monai_transfer.metrics.functional import compute_auc, compute_classification_metrics
from monai_transfer.metrics.volume_calibration import VolumePlatt, load_volume_platt
from monai_transfer.utils.task import as_task

if TYPE_CHECKING:
    from ignite.engine import Engine
    from ignite.metrics import Metric
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")
    Metric, _ = optional_import("ignite.metrics", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Metric", as_type="base")

__all__ = [
    "VolumeAggregator",
    "VolumeReportWriter",
    "VolumePredictionWriter",
    "volume_ids_from_engine",
]

logger = logging.getLogger(__name__)


def volume_ids_from_engine(output: Any, batch: Any = None) -> list[str | None]:
    """Per-slice volume ids of one iteration: the batch's ``source_id``, else :func:`ids_from_output`.

    MONAI evaluators keep non-tensor batch keys (``source_id``) in ``engine.state.batch`` (decollated: a list of
    dicts), not in ``engine.state.output``; the fallback reads ``image.meta["filename_or_obj"]`` (the volume file
    for slices made by ``ExtractSlicesd``).
    """
    if isinstance(batch, (list, tuple)) and batch and all(isinstance(b, dict) and "source_id" in b for b in batch):
        return [str(b["source_id"]) for b in batch]
    if isinstance(batch, dict) and isinstance(batch.get("source_id"), (list, tuple)):
        return [str(v) for v in batch["source_id"]]
    return ids_from_output(output, batch)


def _check_method(method: str, k: int) -> None:
    if method not in AGGREGATION_METHODS:
        raise ValueError(f"method must be one of {AGGREGATION_METHODS}, got {method!r}.")
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}.")


def _aggregate(
    probs: torch.Tensor,
    labels: torch.Tensor | None,
    ids: list[str],
    method: str,
    k: int,
    platt: VolumePlatt | None = None,
) -> dict[str, Any]:
    """Pool the ``(S, K)`` slice probabilities (and ``(S, L)`` labels) of ``PredictionBuffer.get_data`` by volume;
    then the volume Platt step, when there is one."""
    y = None
    if labels is not None:
        y = labels.numpy()
        y = y[:, 0] if y.ndim == 2 and y.shape[1] == 1 else y
    res = aggregate_by_volume(ids, probs.numpy(), y, method=method, k=k)
    if platt is not None:
        res["probs"] = platt(res["probs"])
    return res


class VolumeAggregator(Metric):
    """Volume-level metric of a slice evaluator (Ignite ``Metric``; attach it as ``key_val_metric``).

    Each iteration collects the slice probabilities, labels and volume ids; ``compute`` groups them by volume, pools
    them (``method``) and returns ``metric_name`` over volumes (AUC by default; NaN with a warning when the volumes
    hold one class only, which never counts as a new best checkpoint). The slices are buffered in a
    :class:`~monai_transfer.metrics.cumulative.PredictionBuffer`; under ``torch.distributed`` the slices of all ranks
    are gathered first (:meth:`PredictionBuffer.get_data`), so every rank returns the same value.

    Args:
        method: ``"mean"`` (default), ``"max"`` or ``"topk_mean"``.
        k: slices of ``"topk_mean"``; default 3.
        metric_name: ``"auc"`` (default) or any scalar key of
            :func:`~monai_transfer.metrics.compute_classification_metrics` (e.g. ``"balanced_accuracy"``,
            ``"average_precision"``).
        mode: ``"binary"`` (default), ``"multiclass"`` or ``"multilabel"``.
        threshold: decision threshold of threshold-based metrics; default 0.5.
        output_transform: ``engine.state.output`` -> ``(y_pred, y)``; default ``from_engine(["pred", "label"])``;
            ``pred`` must hold probabilities.
        id_transform: ``(engine.state.output, engine.state.batch)`` -> per-slice volume ids; default
            :func:`volume_ids_from_engine`.
        gather_across_ranks: gather the slices of every distributed rank at ``compute`` (a collective: every rank
            must run the evaluator, each on its shard, as the validator of ``multi_gpu_train.json``); default True.
            Set False for an evaluator that runs on one rank over the whole split.

    Attributes:
        last_result: the ``aggregate_by_volume`` dict of the last ``compute`` (volume ids, probabilities, labels).

    Raises:
        ValueError: bad ``method``/``k``/``mode``; at ``compute``, no slice collected or a volume with mixed labels.
    """

    def __init__(
        self,
        method: str = "mean",
        k: int = 3,
        metric_name: str = "auc",
        mode: str = "binary",
        threshold: float = 0.5,
        output_transform: Callable = from_engine(["pred", "label"]),
        id_transform: Callable[[Any, Any], Sequence[str | None]] = volume_ids_from_engine,
        gather_across_ranks: bool = True,
    ) -> None:
        _check_method(method, k)
        if not callable(id_transform):
            raise TypeError(f"id_transform must be callable, got {type(id_transform)}.")
        self.method = method
        self.k = int(k)
        self.metric_name = str(metric_name)
        self.task = as_task(mode)
        self.mode = self.task.mode
        self.threshold = float(threshold)
        self.id_transform = id_transform
        self.gather_across_ranks = bool(gather_across_ranks)
        self.last_result: dict[str, Any] | None = None
        super().__init__(output_transform=output_transform)

    def reset(self) -> None:
        """Drop the buffered slices (Ignite calls it at every ``EPOCH_STARTED``)."""
        self._buffer = PredictionBuffer(with_labels=True)

    def update(self, output: Sequence[Any]) -> None:
        """Collect one batch: ``output`` is ``(y_pred, y, ids)``."""
        y_pred, y, ids = output
        ids = list(ids)
        n = len(y_pred)
        if len(ids) != n or any(i is None for i in ids):
            raise ValueError(
                f"{type(self).__name__}: every slice needs a volume id ('source_id'); got {ids[:4]}... for {n} slices."
            )
        self._buffer.add(y_pred, y, ids)

    @torch.no_grad()
    def iteration_completed(self, engine: Engine) -> None:
        """Read ``(y_pred, y)`` through ``output_transform`` and the volume ids from the engine state."""
        y_pred, y = self._output_transform(engine.state.output)
        self.update((y_pred, y, self.id_transform(engine.state.output, getattr(engine.state, "batch", None))))

    def compute(self) -> float:
        """The volume-level ``metric_name`` (over the slices of every rank when distributed)."""
        try:
            probs, labels, ids = self._buffer.get_data(gather=self.gather_across_ranks)
        except ValueError as e:
            raise ValueError(f"{type(self).__name__} must have at least one slice before it can be computed.") from e
        res = _aggregate(probs, labels, ids, self.method, self.k)
        self.last_result = res
        p, y = res["probs"], res["labels"]
        if self.metric_name == "auc":
            return float(compute_auc(p, y, self.mode))
        value = compute_classification_metrics(p, y, self.mode, self.threshold)[self.metric_name]
        return float(value)


class _VolumePooling:
    """Shared constructor of the per-volume writers: ``method``/``k`` of the pooling, volume ids from the engine, the
    volume Platt step of ``volume_calibration`` (:func:`~monai_transfer.metrics.volume_calibration.load_volume_platt`:
    none for a missing file, a temperature-only file or another pooling).

    Listed before the writer class in the bases so that ``super().__init__`` reaches the writer.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        method: str = "mean",
        k: int = 3,
        id_transform: Callable[[Any, Any], Sequence[str | None]] = volume_ids_from_engine,
        gather_across_ranks: bool | None = None,
        volume_calibration: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> None:
        _check_method(method, k)
        super().__init__(output_dir, id_transform=id_transform, **kwargs)
        self.gather_across_ranks = gather_across_ranks
        self.method = method
        self.k = int(k)
        self.platt = load_volume_platt(volume_calibration, method, self.k, where=type(self).__name__)
        self.last_volumes: dict[str, Any] | None = None


class VolumeReportWriter(_VolumePooling, ClassificationReportWriter):
    """:class:`~monai_transfer.handlers.report_writer.ClassificationReportWriter` with one row per VOLUME.

    Slices are collected as by the parent; at ``EPOCH_COMPLETED`` they are grouped by volume id and pooled
    (``method``), and the report (``metrics.json``, ``predictions.csv`` with the volume ids, plots) and, with
    ``select_threshold_on``, the threshold are computed on the volume probabilities. ``metrics.json``'s ``meta``
    records the aggregation and the slice count.

    Args:
        method: ``"mean"`` (default), ``"max"`` or ``"topk_mean"``.
        k: slices of ``"topk_mean"``; default 3.
        id_transform: per-slice volume ids; default :func:`volume_ids_from_engine`.
        volume_calibration: a ``calibration.json`` whose ``"volume_platt"`` step (fitted out-of-fold for this
            pooling) is applied to the pooled probabilities before the report and the threshold; default None.
        kwargs: the other arguments of ``ClassificationReportWriter`` (``output_dir``, ``class_names``,
            ``threshold``, ``select_threshold_on``, ``threshold_path``, ``meta``, ``n_bootstrap``, ...).

    Attributes:
        last_volumes: the ``aggregate_by_volume`` dict of the last written epoch.
    """

    def __call__(self, engine: Engine) -> None:
        """Pool the epoch's slices per volume, then write the report (see the parent class)."""
        probs, labels, ids, writes = self._epoch_data(engine)
        res = _aggregate(torch.as_tensor(probs), torch.as_tensor(labels), ids, self.method, self.k, self.platt)
        self.last_volumes = res
        n_slices = len(ids)
        base = self.meta(engine) if callable(self.meta) else dict(self.meta or {})
        base["aggregation"] = {
            "level": "volume",
            "method": self.method,
            "k": self.k if self.method == "topk_mean" else None,
            "n_volumes": len(res["ids"]),
            "n_slices": n_slices,
            "volume_platt": None if self.platt is None else self.platt.to_dict(),
        }
        vol_labels = res["labels"]
        vol_labels = vol_labels[:, None] if vol_labels.ndim == 1 else vol_labels
        vol_probs = torch.as_tensor(res["probs"], dtype=torch.float32).numpy()
        vol_labels = torch.as_tensor(vol_labels, dtype=torch.float32).numpy()
        self._report(engine, vol_probs, vol_labels, list(res["ids"]), writes, meta=base)
        logger.info("volume report: %d volumes from %d slices (%s)", len(res["ids"]), n_slices, self.method)


class VolumePredictionWriter(_VolumePooling, ClassificationPredictionWriter):
    """:class:`~monai_transfer.handlers.prediction_writer.ClassificationPredictionWriter` with one row per VOLUME.

    The slice probabilities of each volume (grouped by ``source_id``, the volume file path for ``ExtractSlicesd``
    without ``source_id_key``) are pooled with ``method`` before the threshold is applied; the ``image`` column holds
    the volume id.

    Args:
        method: ``"mean"`` (default), ``"max"`` or ``"topk_mean"``.
        k: slices of ``"topk_mean"``; default 3.
        id_transform: per-slice volume ids; default :func:`volume_ids_from_engine`.
        volume_calibration: a ``calibration.json`` whose ``"volume_platt"`` step is applied to the pooled
            probabilities before the threshold; default None.
        kwargs: the other arguments of ``ClassificationPredictionWriter`` (``output_dir``, ``class_names``,
            ``threshold``, ``filename``, ...).

    Attributes:
        last_volumes: the ``aggregate_by_volume`` dict of the last written epoch.
    """

    def _epoch_rows(self, gather: bool) -> tuple[torch.Tensor, list[str]]:
        """The parent's epoch data (slices, gathered across ranks when ``gather``) pooled per volume:
        ``(probs (V, K), volume ids)``, the rows of the CSV."""
        probs, ids = super()._epoch_rows(gather)
        res = _aggregate(probs, None, ids, self.method, self.k, self.platt)
        self.last_volumes = res
        rows = [torch.as_tensor(np.atleast_1d(v), dtype=torch.float32) for v in res["probs"]]
        return torch.stack(rows), list(res["ids"])
