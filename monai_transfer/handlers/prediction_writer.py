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
"""Ignite handler writing one prediction per image (no labels needed) to a CSV file at evaluator epoch end.

MONAI's ``ClassificationSaver`` writes raw values without a header and keys rows by file name (duplicates collapse);
this handler writes ``image, file_name, prob_<class>..., prediction, prediction_name, threshold`` with the decision
threshold read from a threshold JSON (``models/threshold.json``) when that file exists. The epoch is buffered in a
:class:`~monai_transfer.metrics.cumulative.PredictionBuffer`, gathered across ranks when the evaluator's data are
sharded (a ``DistributedSampler``), so the file holds every case once, written by ``save_rank``.

Bundle example (``inference.json``)::

    {"_target_": "monai_transfer.handlers.prediction_writer.ClassificationPredictionWriter",
     "output_dir": "@output_dir", "class_names": "@class_names", "threshold": "@threshold_path"}
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from monai.utils import IgniteInfo, min_version, optional_import

from monai_transfer.handlers.report_writer import data_sharded_across_ranks, ids_from_output
from monai_transfer.metrics.cumulative import PredictionBuffer
from monai_transfer.metrics.threshold import ThresholdLike, resolve_task_threshold
from monai_transfer.reports.writer import write_predictions_csv
from monai_transfer.utils.task import Task, apply_threshold, derive_task, look_up_mode

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["ClassificationPredictionWriter"]

logger = logging.getLogger(__name__)


def _preds_from_output(output: Any) -> list[torch.Tensor]:
    """Per-case ``pred`` tensors of a decollated evaluator output (list of dicts) or a collated dict."""
    if isinstance(output, (list, tuple)):
        return [torch.as_tensor(o["pred"]).as_subclass(torch.Tensor).detach().cpu().float().reshape(-1) for o in output]
    if isinstance(output, dict):
        p = torch.as_tensor(output["pred"]).as_subclass(torch.Tensor).detach().cpu().float()
        return list(p.reshape(p.shape[0], -1))
    raise TypeError(f"engine output must be a list of dicts or a dict with 'pred', got {type(output)}")


class ClassificationPredictionWriter:
    """Collect class probabilities and image ids over an evaluator epoch; write ``<output_dir>/<filename>``.

    Kept instead of MONAI's ``ClassificationSaver``, which writes raw values without a header (no class names,
    thresholded prediction or threshold) and keys rows by file name, so cases of one path collapse into one row
    (``tests/handlers/test_handler_prediction_writer.py::
    test_monai_classification_saver_falls_short_of_a_predictions_table``).

    The table is written by :func:`monai_transfer.reports.writer.write_predictions_csv` (the project's one
    predictions writer; label cells and ``correct`` stay empty at inference), followed by the columns ``image`` (the
    path), ``file_name``, (multi-label: ``prediction_names``) and ``threshold``.

    Args:
        output_dir: folder of the CSV (created).
        class_names: class names in label order; default ``class_<k>``.
        threshold: decision threshold of a 2-class output (on the column-1 probability): ``None`` (0.5), a float,
            or a threshold JSON path (``models/threshold.json``); a path that does not exist falls back to 0.5 with
            a warning. With more than 2 classes the prediction is the arg-max.
        filename: CSV file name; default ``"predictions.csv"``.
        pred_transform: ``engine.state.output`` -> list of per-case probability vectors; default reads ``pred``.
        id_transform: ``(engine.state.output, engine.state.batch)`` -> per-case ids (image paths); default
            :func:`~monai_transfer.handlers.report_writer.ids_from_output`.
        save_rank: only this distributed rank writes the file.
        gather_across_ranks: gather the epoch's predictions of every distributed rank before writing (a collective
            at ``EPOCH_COMPLETED``: every rank must run the engine); ``None`` (default) decides per epoch with
            :func:`~monai_transfer.handlers.report_writer.data_sharded_across_ranks`, so an evaluator over a
            ``DistributedSampler`` writes all cases (in rank order) from ``save_rank``, while an evaluator run over
            the whole split on one rank does not wait for the others.
        mode: ``None`` (default: threshold for 2 classes, arg-max for more), ``"binary"``, ``"multiclass"`` (arg-max)
            or ``"multilabel"``: sigmoid probabilities, label ``k`` is predicted when ``p_k >= threshold_k``
            (``threshold`` may hold one value per label, as the ``threshold.json`` of a multi-label training does);
            the CSV then has ``pred_<class>`` columns, ``prediction_names`` (the predicted labels joined by ``;``)
            and ``threshold`` (the per-label values joined by ``;``).
        id_root: the input folder: the ``id`` column names each case by its path relative to it
            (:func:`~monai_transfer.reports.writer.case_id`, as the report and ``python -m monai_transfer.evaluate``
            do; the bundles' ``inference.json`` pass ``@dataset_dir``); ``None``: the full path (also in ``image``).

    Attributes:
        last_path: the CSV written at the last epoch end.
        threshold_used: the numeric threshold of the last written file (``None`` for arg-max; per label for
            ``mode="multilabel"``).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        class_names: Sequence[str] | None = None,
        threshold: ThresholdLike = None,
        filename: str = "predictions.csv",
        pred_transform: Callable[[Any], Sequence[torch.Tensor]] = _preds_from_output,
        id_transform: Callable[[Any, Any], Sequence[str | None]] = ids_from_output,
        save_rank: int = 0,
        mode: str | None = None,
        gather_across_ranks: bool | None = None,
        id_root: str | os.PathLike | None = None,
    ) -> None:
        self.mode = look_up_mode(mode) if mode is not None else None
        if not filename or Path(filename).name != filename:
            raise ValueError(f"filename must be a plain file name, got {filename!r}")
        self.output_dir = Path(output_dir)
        self.class_names = list(class_names) if class_names is not None else None
        self.threshold = threshold
        self.filename = filename
        self.pred_transform = pred_transform
        self.id_transform = id_transform
        self.save_rank = int(save_rank)
        self.gather_across_ranks = gather_across_ranks
        self.id_root = id_root
        self.last_path: Path | None = None
        self.threshold_used: float | None = None
        self.reset()

    def reset(self) -> None:
        """Clear the collected predictions."""
        self._buffer = PredictionBuffer(with_labels=False)

    def attach(self, engine: Engine) -> None:
        """Register on ``EPOCH_STARTED`` (reset), ``ITERATION_COMPLETED`` (collect), ``EPOCH_COMPLETED`` (write)."""
        engine.add_event_handler(Events.EPOCH_STARTED, lambda e: self.reset())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _collect(self, engine: Engine) -> None:
        preds = list(self.pred_transform(engine.state.output))
        # ids of another length than the predictions (a collated batch without paths) become case_<n>
        self._buffer.add(preds, ids=self.id_transform(engine.state.output, getattr(engine.state, "batch", None)))

    def _task(self, names: list[str]) -> Task:
        """The task of the output: ``mode``, else derived from the class count
        (:func:`~monai_transfer.utils.task.derive_task`)."""
        return derive_task(self.mode, class_names=names)

    def _epoch_rows(self, gather: bool) -> tuple[torch.Tensor, list[str]]:
        """``(probs (N, K), ids)`` of the epoch, gathered across ranks when ``gather`` (a collective: every rank).

        A subclass may return other rows (:class:`~monai_transfer.handlers.volume_aggregation.VolumePredictionWriter`
        returns one pooled row per volume).

        Raises:
            RuntimeError: no rank collected a prediction.
        """
        try:
            probs, _, ids = self._buffer.get_data(gather=gather)
        except ValueError as e:
            raise RuntimeError(f"{type(self).__name__}: no predictions were collected in this epoch") from e
        return probs, ids

    def __call__(self, engine: Engine) -> None:
        """Gather the epoch when the data are sharded across ranks (on every rank), then write the CSV on
        ``save_rank`` only with :func:`~monai_transfer.reports.writer.write_predictions_csv` (no label columns
        filled: inference).

        Raises:
            RuntimeError: no prediction was collected (by any rank, when gathered).
            ValueError: the probability vectors do not match ``class_names``.
        """
        gather = data_sharded_across_ranks(engine) if self.gather_across_ranks is None else self.gather_across_ranks
        writes = not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == self.save_rank
        if not (gather or writes):
            return  # this rank's cases are not gathered and it does not write
        probs, ids = self._epoch_rows(bool(gather))
        if writes:
            self._write(probs, ids)

    def _write(self, probs: torch.Tensor, ids: list[str]) -> None:
        """Write ``<output_dir>/<filename>`` for the ``(N, K)`` probabilities ``probs`` of the cases ``ids``."""
        probs = probs.double()  # float64 like the report's metrics
        k = probs.shape[1]
        names = self.class_names if self.class_names is not None else [f"class_{i}" for i in range(k)]
        if len(names) != k:
            raise ValueError(f"class_names has {len(names)} entries ({names}) but the network gives {k} probabilities")
        task = self._task(names)
        # by the rules every reader of a threshold follows (a multi-label file chosen for other class names is
        # refused); a missing file means 0.5 (per label), logged; None for arg-max
        self.threshold_used = resolve_task_threshold(self.threshold, task, missing_ok=True)[0]  # type: ignore[assignment]
        thr = self.threshold_used
        thr_text = "" if thr is None else ";".join(f"{v:.6f}" for v in (thr if isinstance(thr, list) else [thr]))
        extra = {"image": ids, "file_name": [Path(c).name for c in ids]}
        if task.is_multilabel:
            pred = apply_threshold(probs, task, thr)  # type: ignore[arg-type]
            extra["prediction_names"] = [";".join(n for n, v in zip(names, row.tolist()) if v) for row in pred]
        extra["threshold"] = [thr_text] * len(ids)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.last_path = write_predictions_csv(
            self.output_dir / self.filename, probs.numpy(), None, ids=ids, class_names=names, mode=task,
            threshold=0.5 if thr is None else thr, extra_columns=extra, id_root=self.id_root,
        )  # fmt: skip
        logger.info(f"wrote {len(ids)} predictions to {self.last_path}")
