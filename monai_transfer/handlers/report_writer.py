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
"""Ignite handler that writes the classification report when an evaluator epoch completes.

Typical use, two evaluation runs of a bundle:

1. on the validation split with ``select_threshold_on="youden"``: the report uses the threshold chosen on these data
   and the threshold is SAVED to ``threshold_path`` (e.g. ``models/threshold.json`` beside ``model.pt``);
2. on the test split with ``threshold="<bundle_root>/models/threshold.json"``: the report gives the test metrics at
   that stored threshold (and at 0.5, under ``metrics_at_0.5``).

With ``fit_calibration_to="models/calibration.json"`` the first run also fits a temperature (temperature scaling) on
these data BEFORE choosing the threshold: the threshold then applies to calibrated probabilities, and every later use
must apply the same temperature (``monai_transfer.transforms.ApplyTemperatured`` before the softmax).

Bundle example (``evaluate.json``)::

    "handlers": [{
        "_target_": "monai_transfer.handlers.report_writer.ClassificationReportWriter",
        "output_dir": "$@output_dir + '/report'",
        "class_names": ["normal", "pneumonia"],
        "threshold": "$@bundle_root + '/models/threshold.json'",
        "meta": {"weights": "@network_def#weights", "data": "PneumoniaMNIST test split"}
    }]
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch.distributed as dist
from monai.handlers import from_engine
from monai.utils import IgniteInfo, min_version, optional_import

from monai_transfer.metrics.calibration import apply_temperature, calibration_summary, fit_temperature, save_calibration
from monai_transfer.metrics.cumulative import PredictionBuffer, ThresholdLike, resolve_threshold
from monai_transfer.metrics.functional import DEFAULT_ECE_BINS, compute_classification_metrics
from monai_transfer.metrics.prevalence import DEFAULT_BALANCE_TOLERANCE
from monai_transfer.metrics.threshold import THRESHOLD_METHODS, calibration_binding, save_threshold, select_threshold
from monai_transfer.reports.writer import write_classification_report
from monai_transfer.utils.task import Task, as_task

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["ClassificationReportWriter", "ids_from_output", "data_sharded_across_ranks"]


def _meta_id(item: Any) -> str | None:
    if not isinstance(item, dict):
        return None
    if item.get("source_id") is not None:
        return str(item["source_id"])
    for key in ("image", "img"):
        meta = getattr(item.get(key), "meta", None)
        if isinstance(meta, dict) and meta.get("filename_or_obj") is not None:
            return str(meta["filename_or_obj"])
    meta = item.get("image_meta_dict")
    if isinstance(meta, dict) and meta.get("filename_or_obj") is not None:
        return str(meta["filename_or_obj"])
    return None


def ids_from_output(output: Any, batch: Any = None) -> list[str | None]:
    """Per-case ids of one iteration: ``source_id`` if present, else ``image.meta["filename_or_obj"]``.

    Reads the decollated ``engine.state.output`` (a list of per-case dicts, MONAI's evaluator convention) and falls
    back to the collated ``engine.state.batch``. Cases without an id give ``None``.
    """
    if isinstance(output, (list, tuple)) and output and isinstance(output[0], dict):
        ids = [_meta_id(o) for o in output]
        if any(i is not None for i in ids):
            return ids
        n = len(output)
    else:
        n = 0
    if isinstance(batch, dict):
        for key in ("source_id",):
            if isinstance(batch.get(key), (list, tuple)):
                return [str(v) for v in batch[key]]
        meta = getattr(batch.get("image"), "meta", None)
        if isinstance(meta, dict) and isinstance(meta.get("filename_or_obj"), (list, tuple)):
            return [str(v) for v in meta["filename_or_obj"]]
    return [None] * n


def data_sharded_across_ranks(engine: Any) -> bool:
    """Whether ``engine`` runs on data split across distributed ranks, so that an epoch-end handler must gather.

    True when a ``torch.distributed`` process group of several ranks is initialised and the engine's data loader
    samples by rank (its sampler, or its batch sampler's sampler, has ``num_replicas > 1``, as torch's and MONAI's
    ``DistributedSampler``). False on one process, and for an engine run over the whole split on one rank (the
    bundles' rank-0-only ``report#evaluator`` of ``multi_gpu_train.json``), where a collective would wait forever for
    the other ranks.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return False
    loader = getattr(engine, "data_loader", None)
    if loader is None:
        loader = getattr(getattr(engine, "state", None), "dataloader", None)
    batch_sampler = getattr(loader, "batch_sampler", None)
    for sampler in (getattr(loader, "sampler", None), getattr(batch_sampler, "sampler", None)):
        replicas = getattr(sampler, "num_replicas", None)
        if isinstance(replicas, int) and replicas > 1:
            return True
    return False


def _check_report_options(
    task: Task,
    select_threshold_on: str | None,
    threshold_path: Any,
    fit_calibration_to: Any,
    applied_calibration: Any,
) -> None:
    """Raise ``ValueError`` for threshold-selection / calibration options of :class:`ClassificationReportWriter`
    that do not go together."""
    if select_threshold_on is not None:
        if select_threshold_on not in THRESHOLD_METHODS:
            raise ValueError(
                f"select_threshold_on must be None or one of {THRESHOLD_METHODS}, got {select_threshold_on!r}"
            )
        if not task.uses_threshold:
            raise ValueError("select_threshold_on is not available for mode='multiclass' (arg-max prediction)")
        if threshold_path is None:
            raise ValueError("threshold_path is required with select_threshold_on (e.g. 'models/threshold.json')")
    if fit_calibration_to is not None and select_threshold_on is None:
        raise ValueError(
            f"fit_calibration_to={fit_calibration_to!r} needs select_threshold_on: the calibration is fitted on "
            "the data that choose the operating point (validation or out-of-fold), never on evaluation data"
        )
    if fit_calibration_to is not None and applied_calibration is not None:
        raise ValueError("give fit_calibration_to (fit here) or applied_calibration (already applied), not both")


class ClassificationReportWriter:
    """Collect predictions, labels and case ids over an evaluator epoch; write the report at ``EPOCH_COMPLETED``.

    Args:
        output_dir: report folder (``metrics.json``, ``predictions.csv``, PNGs); see ``write_classification_report``.
        class_names: class names (default ``negative``/``positive`` or ``class_<k>``).
        mode: ``"binary"``, ``"multiclass"`` or ``"multilabel"``.
        threshold: operating threshold: ``None`` (0.5), a float / per-label list, a threshold JSON path (read when the
            epoch completes) or a callable. Ignored when ``select_threshold_on`` is set.
        select_threshold_on: ``None`` or a method of :data:`~monai_transfer.metrics.threshold.THRESHOLD_METHODS`:
            choose the threshold on THIS epoch's data,
            save it to ``threshold_path`` and report at it (use on the validation split only).
        threshold_path: where the selected threshold is saved (e.g. ``models/threshold.json``); required with
            ``select_threshold_on``.
        target_sensitivity: target of ``select_threshold_on="sensitivity"``.
        output_transform: ``engine.state.output`` -> ``(y_pred, y)``; default ``from_engine(["pred", "label"])``;
            ``pred`` must be probabilities.
        id_transform: ``(engine.state.output, engine.state.batch)`` -> per-case ids; default :func:`ids_from_output`.
        meta: JSON-friendly description for ``metrics.json`` (weight source, data, split); a callable receiving the
            engine is called at write time.
        n_bootstrap: bootstrap resamples for the CIs.
        plots: write the PNG figures.
        n_bins: ECE bins.
        write_report: set False to only select/save the threshold.
        fit_calibration_to: with ``select_threshold_on``: fit a temperature on THIS epoch's probabilities, save it to
            this path (e.g. ``models/calibration.json``), and select the threshold and write the report on the
            calibrated probabilities (``metrics.json`` then holds ECE before/after and ``reliability_uncalibrated.png``
            is drawn). ``pred`` may be softmax ``(N, K)`` or sigmoid probabilities; the temperature fitted on them
            equals the one fitted on the logits.
        applied_calibration: the temperature (number or ``calibration.json``) that the evaluator's post-processing
            already applied (``ApplyTemperatured``): the report adds ECE/Brier before and after and
            ``reliability_uncalibrated.png``, the uncalibrated probabilities being recovered exactly as
            ``softmax(T * log p)`` (``sigmoid(T * logit p)``).
        prevalence: positive-class share of the target population (binary): PPV/NPV at it in ``metrics.json``.
        training_counts: training class counts for the class-balance warning; default from ``meta`` (the bundles'
            run description holds them).
        balance_tolerance: tolerated absolute difference of a class fraction before the warning.
        gather_across_ranks: gather the epoch's predictions of every distributed rank before reporting (a
            collective at ``EPOCH_COMPLETED``: every rank must run the engine); ``None`` (default) decides per epoch
            with :func:`data_sharded_across_ranks`, so the rank-0-only report of ``multi_gpu_train.json`` (whole
            split, plain ``DataLoader``) does not gather, while an evaluator over a ``DistributedSampler`` does.
            When gathered, rank 0 writes the files (report, threshold, calibration) and every rank gets
            ``last_metrics``.
        id_root: the data root of the case ids (image paths): ``predictions.csv`` names each case by its path
            relative to it (:func:`~monai_transfer.reports.writer.case_id`, as inference and
            ``python -m monai_transfer.evaluate`` do), with the full path in an ``image`` column; default the
            ``dataset_dir`` of ``meta`` (the bundles' run description), else the ids as they are.

    Attributes:
        last_metrics: the metrics dict of the last written epoch (also in ``engine.state.report_metrics``).
        last_temperature: the temperature fitted in the last epoch (``fit_calibration_to``), else None.

    The predictions are buffered in a :class:`~monai_transfer.metrics.cumulative.PredictionBuffer`; cases without an
    id are named ``case_<n>``, ``n`` counted over the (gathered) epoch.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        class_names: Sequence[str] | None = None,
        mode: str = "binary",
        threshold: ThresholdLike = None,
        select_threshold_on: str | None = None,
        threshold_path: str | os.PathLike | None = None,
        target_sensitivity: float = 0.9,
        output_transform: Callable = from_engine(["pred", "label"]),
        id_transform: Callable[[Any, Any], Sequence[str | None]] = ids_from_output,
        meta: dict[str, Any] | Callable[[Any], dict[str, Any]] | None = None,
        n_bootstrap: int = 1000,
        plots: bool = True,
        n_bins: int = DEFAULT_ECE_BINS,
        write_report: bool = True,
        fit_calibration_to: str | os.PathLike | None = None,
        applied_calibration: float | str | os.PathLike | None = None,
        prevalence: float | None = None,
        training_counts: dict[str, int] | None = None,
        balance_tolerance: float = DEFAULT_BALANCE_TOLERANCE,
        gather_across_ranks: bool | None = None,
        id_root: str | os.PathLike | None = None,
    ) -> None:
        task = as_task(mode)
        _check_report_options(task, select_threshold_on, threshold_path, fit_calibration_to, applied_calibration)
        if not callable(output_transform):
            raise TypeError(f"output_transform must be callable, got {type(output_transform)}")
        self.output_dir = Path(output_dir)
        self.class_names = list(class_names) if class_names is not None else None
        self.task = task
        self.mode = task.mode
        self.threshold = threshold
        self.select_threshold_on = select_threshold_on
        self.threshold_path = Path(threshold_path) if threshold_path is not None else None
        self.target_sensitivity = float(target_sensitivity)
        self.output_transform = output_transform
        self.id_transform = id_transform
        self.meta = meta
        self.n_bootstrap = int(n_bootstrap)
        self.plots = plots
        self.n_bins = int(n_bins)
        self.write_report = write_report
        self.fit_calibration_to = Path(fit_calibration_to) if fit_calibration_to is not None else None
        self.applied_calibration = applied_calibration
        self.prevalence = prevalence
        self.training_counts = training_counts
        self.balance_tolerance = float(balance_tolerance)
        self.gather_across_ranks = gather_across_ranks
        self.id_root = id_root
        self.last_metrics: dict[str, Any] | None = None
        self.last_temperature: float | None = None
        self.reset()

    def reset(self) -> None:
        """Clear the collected predictions."""
        self._buffer = PredictionBuffer(with_labels=True)

    def attach(self, engine: Engine) -> None:
        """Register on ``EPOCH_STARTED`` (reset), ``ITERATION_COMPLETED`` (collect), ``EPOCH_COMPLETED`` (write)."""
        engine.add_event_handler(Events.EPOCH_STARTED, lambda e: self.reset())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _collect(self, engine: Engine) -> None:
        y_pred, y = self.output_transform(engine.state.output)
        ids = self.id_transform(engine.state.output, getattr(engine.state, "batch", None))
        self._buffer.add(y_pred, y, ids)

    def _epoch_data(self, engine: Engine) -> tuple[np.ndarray, np.ndarray, list[str], bool]:
        """``(probs, labels, ids, writes)`` of the epoch, gathered across ranks when needed (on every rank).

        ``writes`` is False on the ranks other than 0 of a gathered epoch: they compute, rank 0 writes the files.

        Raises:
            RuntimeError: no rank collected a prediction.
        """
        gather = self.gather_across_ranks
        if gather is None:
            gather = data_sharded_across_ranks(engine)
        try:
            probs, labels, ids = self._buffer.get_data(gather=bool(gather))
        except ValueError as e:
            raise RuntimeError(f"{type(self).__name__}: no predictions were collected in this epoch") from e
        writes = not (gather and dist.is_available() and dist.is_initialized() and dist.get_rank() != 0)
        return probs.numpy(), labels.numpy(), ids, writes  # type: ignore[union-attr]

    def __call__(self, engine: Engine) -> None:
        """Select/save the threshold when asked, then write the report for the collected epoch."""
        y_prob, y_true, ids, writes = self._epoch_data(engine)
        self._report(engine, y_prob, y_true, ids, writes)

    def _calibrate(
        self, engine: Engine, y_prob: np.ndarray, y_true: np.ndarray, writes: bool
    ) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any] | None]:
        """``(probs, uncalibrated, calibration_info)``: fit (and save, if ``writes``) the temperature on this epoch
        (``fit_calibration_to``), or undo an ``applied_calibration`` for the before/after figures."""
        uncalibrated = None
        calibration_info = None
        if self.fit_calibration_to is not None:
            uncalibrated = y_prob
            temperature = fit_temperature(y_prob, y_true, self.mode, inputs="probs")
            summary = calibration_summary(y_prob, y_true, temperature, self.mode, inputs="probs", n_bins=self.n_bins)
            calibration_info = {
                "fitted_on": f"the {int(engine.state.epoch)}-th epoch's evaluated data (select_threshold_on)",
                "calibration_file": str(self.fit_calibration_to),
                **summary,
            }
            if writes:
                save_calibration(
                    self.fit_calibration_to,
                    temperature,
                    mode=self.mode,
                    **{k: v for k, v in calibration_info.items() if k != "temperature"},
                )
            y_prob = apply_temperature(y_prob, temperature, self.mode, inputs="probs").astype("float32")
            self.last_temperature = temperature
        elif self.applied_calibration is not None:
            from monai_transfer.transforms.calibration.array import resolve_temperature

            t_applied = resolve_temperature(self.applied_calibration, mode=self.mode)
            uncalibrated = apply_temperature(y_prob, 1.0 / t_applied, self.mode, inputs="probs")
            calibration_info = {"temperature": t_applied, "applied_by": "post-processing",
                                "calibration_file": None if isinstance(self.applied_calibration, (int, float))
                                else str(self.applied_calibration)}  # fmt: skip
        return y_prob, uncalibrated, calibration_info

    def _select_threshold(self, engine: Engine, y_prob: np.ndarray, y_true: np.ndarray, writes: bool) -> Any:
        """Select the operating threshold on this epoch (``select_threshold_on``); saved to ``threshold_path``."""
        threshold = select_threshold(y_prob, y_true, self.select_threshold_on, self.target_sensitivity, self.mode)
        at = compute_classification_metrics(y_prob, y_true, self.mode, threshold, self.class_names, self.n_bins)
        per_label = {}
        if self.task.is_multilabel:  # the validation operating point of each label, beside its threshold
            names = at["class_names"]
            per_label = {f"{m}_per_label": [at[f"{m}/{c}"] for c in names] for m in ("sensitivity", "specificity")}
        if writes:
            save_threshold(
                self.threshold_path,  # type: ignore[arg-type]
                threshold,
                method=self.select_threshold_on,
                target_sensitivity=self.target_sensitivity if self.select_threshold_on == "sensitivity" else None,
                mode=self.mode,
                class_names=at["class_names"],
                n_samples=at["n_samples"],
                sensitivity=at["sensitivity"],
                specificity=at["specificity"],
                epoch=int(engine.state.epoch),
                **calibration_binding(self.fit_calibration_to),
                **per_label,
            )
        return threshold

    def _report(
        self,
        engine: Engine,
        y_prob: np.ndarray,
        y_true: np.ndarray,
        ids: list[str],
        writes: bool = True,
        meta: dict[str, Any] | None = None,
    ) -> None:
        """Calibrate / select the threshold / write the report for ``(y_prob, y_true, ids)``; files only if ``writes``.

        ``meta`` replaces the constructor's ``meta`` (a subclass adds its own entries).
        """
        threshold: Any = self.threshold
        y_prob, uncalibrated, calibration_info = self._calibrate(engine, y_prob, y_true, writes)
        if self.select_threshold_on is not None:
            threshold = self._select_threshold(engine, y_prob, y_true, writes)
        if meta is None:
            meta = self.meta(engine) if callable(self.meta) else dict(self.meta or {})
        if self.select_threshold_on is not None:
            meta.setdefault("threshold_selected_on_this_data", f"{self.select_threshold_on} -> {self.threshold_path}")
        if self.write_report and writes:
            write_classification_report(
                self.output_dir,
                y_true,
                y_prob,
                ids=ids,
                class_names=self.class_names,
                threshold=threshold,
                mode=self.mode,
                meta=meta,
                n_bootstrap=self.n_bootstrap,
                plots=self.plots,
                n_bins=self.n_bins,
                prevalence=self.prevalence,
                training_counts=self.training_counts,
                balance_tolerance=self.balance_tolerance,
                uncalibrated_prob=uncalibrated,
                calibration=calibration_info,
                id_root=self.id_root if self.id_root is not None else meta.get("dataset_dir"),
            )
        final_threshold = resolve_threshold(threshold) if self.task.uses_threshold else 0.5  # arg-max: no file read
        self.last_metrics = compute_classification_metrics(
            y_prob, y_true, self.mode, final_threshold, self.class_names, self.n_bins
        )
        engine.state.report_metrics = self.last_metrics  # type: ignore[attr-defined]
