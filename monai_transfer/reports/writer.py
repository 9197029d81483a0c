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
"""Evaluation report: ``metrics.json``, ``predictions.csv`` and the ROC / confusion-matrix / reliability PNGs.

Files written by :func:`write_classification_report` (every file atomically):

- ``metrics.json``: ``headline`` first (AUC, sensitivity, specificity, balanced accuracy: the metrics that do
  not depend on the class balance), ``prevalence`` (class balance evaluated vs training, ``shift_warning``,
  PPV/NPV at the stated ``prevalence``), ``warnings``, ``calibration`` (ECE/Brier before and after, when
  ``uncalibrated_prob`` is given), ``metrics`` (the flat dict of ``compute_classification_metrics`` at the
  operating threshold), ``metrics_at_0.5`` (binary/multi-label), ``confidence_intervals`` (stratified percentile
  bootstrap for AUC, sensitivity and specificity), ``threshold`` (value and source), ``class_names``,
  ``counts``, ``n_samples``, ``mode``, ``meta`` (e.g. weight source, data and split description) and
  ``created`` (UTC time); multi-class/multi-label reports add ``per_class`` (one row per class/label: AUC
  with its CI, AP, sensitivity, specificity, PPV, NPV, F1, threshold) and ``averages`` (``macro``,
  ``micro``), see :func:`monai_transfer.reports.tables.per_class_rows`. Undefined values are ``null``.
- ``predictions.csv``: see :func:`write_predictions_csv`.
- ``per_class.csv`` and ``per_class.md`` (multi-class/multi-label): the same per-class table.
- ``roc.png``, ``confusion_matrix.png``, ``reliability.png`` when ``plots`` is True, plus
  ``reliability_uncalibrated.png`` with ``uncalibrated_prob``.
"""

from __future__ import annotations

import csv
import datetime
import io
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monai_transfer.metrics.bootstrap import bootstrap_ci
from monai_transfer.metrics.cumulative import ThresholdLike, resolve_threshold
from monai_transfer.metrics.functional import (
    DEFAULT_ECE_BINS,
    UndefinedMetricWarning,
    compute_brier,
    compute_classification_metrics,
    compute_ece,
    default_class_names,
    prepare_inputs,
)
from monai_transfer.metrics.prevalence import (
    DEFAULT_BALANCE_TOLERANCE,
    balance_shift_warning,
    class_balance,
    ppv_npv_at_prevalence,
    training_counts_from_meta,
)
from monai_transfer.utils.io import atomic_write_json, atomic_write_text, check_output_dir, read_json_file
from monai_transfer.utils.task import Task, apply_threshold, as_task

__all__ = [
    "CI_METRICS",
    "HEADLINE_METRICS",
    "write_classification_report",
    "write_predictions_csv",
    "case_id",
    "prevalence_report",
]

#: metrics that get a bootstrap confidence interval in ``metrics.json``.
CI_METRICS = ("auc", "sensitivity", "specificity")
#: metrics that do not depend on the class balance of the evaluated set, first in ``metrics.json``.
HEADLINE_METRICS = ("auc", "sensitivity", "specificity", "balanced_accuracy")


#: what a threshold file records about how its threshold was chosen, copied into ``metrics.json`` ``threshold``
HOW_CHOSEN_KEYS = ("method", "rule", "chosen_on", "target_sensitivity", "fallback", "worst_family", "applies_to")


def _how_chosen(threshold: ThresholdLike) -> dict[str, Any] | None:
    """The entries of :data:`HOW_CHOSEN_KEYS` a threshold file records (``None`` for a value or an unreadable file)."""
    if not isinstance(threshold, (str, os.PathLike)) or not Path(threshold).is_file():
        return None
    try:
        obj = read_json_file(Path(threshold), "threshold file")
    except ValueError:
        return None
    return {k: obj[k] for k in HOW_CHOSEN_KEYS if isinstance(obj, dict) and obj.get(k) is not None} or None


def _threshold_source(threshold: ThresholdLike) -> str:
    if threshold is None:
        return "default 0.5"
    if isinstance(threshold, (str, os.PathLike)):
        return f"file {threshold}"
    return "callable" if callable(threshold) else "given"


def _label_cells(y_true: Any, y_prob: Any, task: Task) -> tuple[Any, np.ndarray]:
    """``y_true`` with unknown labels (``None``) replaced by 0, and the mask of known labels."""
    p = np.asarray(y_prob)
    n = len(p)
    if y_true is None:
        shape = p.shape if task.is_multilabel else (n,)
        return np.zeros(shape, dtype=np.int64), np.zeros(n, dtype=bool)
    items = list(y_true)
    known = np.array([v is not None for v in items], dtype=bool)
    if known.all():
        return y_true, known
    filler = next((np.zeros_like(np.asarray(v)) for v in items if v is not None), 0)
    return np.asarray([v if v is not None else filler for v in items]), known


def _multilabel_rows(w: Any, ids: list, names: list, y: Any, probs: Any, pred: Any, known: Any, extra: dict) -> None:
    """The multi-label table: ``label_<name>``, ``prob_<name>``, ``pred_<name>``, ``correct``, then ``extra``."""
    n = len(ids)
    w.writerow(
        ["id", *[f"label_{c}" for c in names], *[f"prob_{c}" for c in names], *[f"pred_{c}" for c in names]]
        + ["correct", *extra]
    )
    for i in range(n):
        lab = y[i].tolist() if known[i] else [""] * len(names)
        ok = int((pred[i] == y[i]).all()) if known[i] else ""
        probs_i = [f"{v:.6f}" for v in probs[i]]
        w.writerow([ids[i], *lab, *probs_i, *pred[i].tolist(), ok, *[v[i] for v in extra.values()]])


def case_id(path: Any, root: str | os.PathLike | None = None) -> str:
    """The ``id`` of a case in every ``predictions.csv``: its path relative to ``root``, with ``/`` separators and
    the extension kept (``val/normal/img_001.png``, ``volumes/case_07.nii.gz``).

    The report (``root``: the training data's ``dataset_dir``), inference (``input_dir``) and
    ``python -m monai_transfer.evaluate`` (``--images``) all name cases this way, beside an ``image`` column with the
    full path.

    Args:
        path: the case's file (or folder, for a DICOM series).
        root: the data root; a data-list file (``labels.csv``, ``datalist.json``) stands for its folder. ``None``, or
            a ``path`` outside ``root``, gives ``path`` as it is.
    """
    text = str(path)
    if root is None or not text:
        return text
    base = Path(root)
    if base.is_file() or base.suffix.lower() in (".csv", ".json", ".jsonl"):
        base = base.parent
    for resolve in (os.path.abspath, os.path.realpath):  # as given, then through symbolic links
        try:
            rel = Path(resolve(text)).relative_to(resolve(str(base)))
        except ValueError:
            continue
        return rel.as_posix() if rel.parts else text
    return text


def _id_columns(
    ids: Sequence[Any] | None, n: int, extra_columns: Mapping[str, Sequence[Any]] | None, id_root: Any
) -> tuple[list[str], dict[str, list[Any]]]:
    """The ``id`` column and the extra columns of :func:`write_predictions_csv` (one entry per case each)."""
    ids = [str(i) for i in ids] if ids is not None else [f"case_{i:05d}" for i in range(n)]
    extra = {c: list(v) for c, v in (extra_columns or {}).items()}
    if id_root is not None:
        extra = {"image": list(ids), **extra} if "image" not in extra else extra
        ids = [case_id(i, id_root) for i in ids]
    if len(ids) != n or any(len(v) != n for v in extra.values()):
        raise ValueError(f"ids and extra columns must have one entry per case ({n}), got {len(ids)} ids")
    return ids, extra


def write_predictions_csv(
    path: str | os.PathLike,
    y_prob: Any,
    y_true: Any,
    ids: Sequence[Any] | None = None,
    class_names: Sequence[str] | None = None,
    mode: str | Task = "binary",
    threshold: float | Sequence[float] = 0.5,
    extra_columns: Mapping[str, Sequence[Any]] | None = None,
    id_root: str | os.PathLike | None = None,
) -> Path:
    """One row per case: ``id``, label(s), per-class probabilities ``prob_<class>``, prediction(s), ``correct``.

    The one writer of prediction tables: the report (:func:`write_classification_report`), the evaluation CLI
    (:mod:`monai_transfer.evaluate`) and the inference handler
    (:class:`~monai_transfer.handlers.prediction_writer.ClassificationPredictionWriter`) all call it.

    Binary/multi-class: ``label``, ``label_name``, ``prediction``, ``prediction_name``; multi-label:
    ``label_<name>`` and ``pred_<name>`` per label. Probabilities are written with 6 decimals.

    Args:
        path: the CSV file.
        y_prob: probabilities (see :func:`~monai_transfer.metrics.functional.prepare_inputs`).
        y_true: labels; ``None`` (no labels: inference) or ``None`` entries leave the label cells and ``correct``
            empty for those cases.
        ids: case ids; default ``case_00000``...
        class_names: class names.
        mode: ``"binary"``, ``"multiclass"`` or ``"multilabel"``.
        threshold: decision threshold (binary / per label).
        extra_columns: ``{column: one value per case}`` appended after the standard columns (e.g. ``image``,
            ``threshold``, ``n_slices``).
        id_root: when given, ``ids`` are paths: the ``id`` column holds :func:`case_id` (the path relative to this
            data root) and an ``image`` column (first of the extra columns, unless given) the path as given.
    """
    task = as_task(mode)
    n = len(np.asarray(y_prob))
    y_filled, known = _label_cells(y_true, y_prob, task)
    p, y = prepare_inputs(y_prob, y_filled, task)
    probs = task.class_probabilities(p)  # binary: [1 - p, p]
    names = list(class_names) if class_names is not None else default_class_names(task, probs.shape[1])
    ids, extra = _id_columns(ids, n, extra_columns, id_root)
    pred = apply_threshold(p, task, threshold)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if task.is_multilabel:
        _multilabel_rows(w, ids, names, y, probs, pred, known, extra)
        return atomic_write_text(path, buf.getvalue())
    lab, prd = task.class_index(y), task.class_index(pred)
    w.writerow(
        ["id", "label", "label_name", *[f"prob_{c}" for c in names], "prediction", "prediction_name", "correct"]
        + list(extra)
    )
    for i in range(n):
        cells = [int(lab[i]), names[lab[i]]] if known[i] else ["", ""]
        ok = int(lab[i] == prd[i]) if known[i] else ""
        probs_i = [f"{v:.6f}" for v in probs[i]]
        w.writerow([ids[i], *cells, *probs_i, int(prd[i]), names[prd[i]], ok, *[v[i] for v in extra.values()]])
    return atomic_write_text(path, buf.getvalue())


def prevalence_report(
    metrics: Mapping[str, Any],
    mode: str,
    class_names: Sequence[str],
    prevalence: float | None = None,
    training_counts: Mapping[str, int] | None = None,
    training_source: str | None = None,
    balance_tolerance: float = DEFAULT_BALANCE_TOLERANCE,
) -> dict[str, Any]:
    """The ``prevalence`` block of ``metrics.json``: class balance of the evaluated and training sets, a shift warning,
    and (binary) PPV/NPV at the stated ``prevalence``.

    Args:
        metrics: :func:`~monai_transfer.metrics.compute_classification_metrics` of the evaluated set.
        mode: task mode.
        class_names: class names (the keys of ``support/<name>``).
        prevalence: positive-class share in the target population (binary only), e.g. the share of pneumonia among
            the patients the model will see; None to skip.
        training_counts: class counts of the training split; None when unknown.
        training_source: where ``training_counts`` came from (recorded).
        balance_tolerance: see :func:`~monai_transfer.metrics.prevalence.balance_shift_warning`.

    Raises:
        ValueError: ``prevalence`` for a non-binary task, or outside [0, 1].
    """
    task = as_task(mode)
    names = [str(n) for n in class_names]
    ev_counts = {n: int(metrics[f"support/{n}"]) for n in names}
    n = int(metrics["n_samples"])
    out: dict[str, Any] = {
        "evaluated": ({k: v / n for k, v in ev_counts.items()} if task.is_multilabel else class_balance(ev_counts)),
        "training": None,
        "training_source": None,
        "shift_warning": None,
        "stated": None,
    }
    if training_counts is not None and not task.is_multilabel and sum(training_counts.values()) > 0:
        tr = {k: int(training_counts.get(k, 0)) for k in names}
        out["training"] = class_balance(tr)
        out["training_source"] = training_source
        out["shift_warning"] = balance_shift_warning(ev_counts, tr, balance_tolerance)
    if prevalence is not None:
        if not task.is_binary:
            raise ValueError(f"prevalence= is for binary tasks (positive-class share), got mode={task.mode!r}")
        ppv, npv = ppv_npv_at_prevalence(
            _nan_to(metrics["sensitivity"]), _nan_to(metrics["specificity"]), float(prevalence)
        )
        out.update(
            stated=float(prevalence),
            ppv_at_stated=ppv,
            npv_at_stated=npv,
            note=(
                "PPV/NPV at the stated prevalence from sensitivity and specificity at the operating threshold "
                "(Bayes: PPV = sens*p / (sens*p + (1-spec)*(1-p)))"
            ),
        )
    return out


def _nan_to(value: Any) -> float:
    v = float(value)
    if np.isnan(v):
        raise ValueError("sensitivity/specificity are undefined (a class is absent): no PPV/NPV at a prevalence")
    return v


def write_classification_report(
    output_dir: str | os.PathLike,
    y_true: Any,
    y_prob: Any,
    ids: Sequence[Any] | None = None,
    class_names: Sequence[str] | None = None,
    threshold: ThresholdLike = None,
    mode: str = "binary",
    meta: dict[str, Any] | None = None,
    n_bootstrap: int = 1000,
    plots: bool = True,
    n_bins: int = DEFAULT_ECE_BINS,
    alpha: float = 0.05,
    seed: int = 0,
    prevalence: float | None = None,
    training_counts: Mapping[str, int] | None = None,
    balance_tolerance: float = DEFAULT_BALANCE_TOLERANCE,
    uncalibrated_prob: Any = None,
    calibration: Mapping[str, Any] | None = None,
    predictions_csv: bool = True,
    id_root: str | os.PathLike | None = None,
) -> dict[str, Path]:
    """Write the evaluation report of a classifier to ``output_dir`` (every file atomically).

    Files: ``metrics.json``, ``predictions.csv``, ``per_class.csv``/``per_class.md`` and the PNG figures, as
    listed in the module docstring (:mod:`monai_transfer.reports.writer`).

    Args:
        output_dir: report folder (created).
        y_true: labels (``(N,)`` ints or one-hot; ``(N, K)`` 0/1 for multi-label).
        y_prob: probabilities (binary: ``(N, 2)`` softmax or ``(N,)`` positive-class probability).
        ids: case ids / image paths, one per case; default ``case_00000``...
        class_names: class names; default ``["negative", "positive"]`` (binary) or ``class_<k>``.
        threshold: operating threshold: ``None`` (0.5), a float / per-label list, a threshold JSON path (e.g. the
            ``models/threshold.json`` chosen on validation) or a callable. Ignored for multi-class (arg-max).
        mode: ``"binary"``, ``"multiclass"`` or ``"multilabel"``.
        meta: JSON-friendly description stored under ``meta``.
        n_bootstrap: bootstrap resamples for the CIs; 0 disables them.
        plots: write the PNG figures.
        n_bins: ECE / reliability bins.
        alpha: CI level is ``1 - alpha``.
        seed: bootstrap seed.
        prevalence: positive-class share of the target population (binary): ``metrics.json`` adds PPV and NPV at it.
        training_counts: class counts of the training split, for the class-balance check; default: read from
            ``meta["data"]["train"]["per_class"]`` (the run description of the bundles). A difference above
            ``balance_tolerance`` gives a warning in ``metrics.json`` and in the log.
        balance_tolerance: largest tolerated absolute difference of a class fraction.
        uncalibrated_prob: the probabilities before calibration (same shape as ``y_prob``): ``calibration`` holds the
            ECE and Brier score before/after and ``reliability_uncalibrated.png`` is drawn.
        calibration: JSON-friendly calibration description (e.g. temperature, what it was fitted on).
        predictions_csv: write ``predictions.csv``; ``False`` for a caller that writes its own table of more cases
            with :func:`write_predictions_csv` (the evaluation CLI also lists unlabelled cases).
        id_root: the data root: ``predictions.csv`` names each case by its path relative to it (:func:`case_id`),
            with the full path in an ``image`` column; ``None``: ``ids`` as given.

    Returns:
        ``{"metrics": path, "predictions": path, "roc": path, ...}`` of the written files.
    """
    out_dir = check_output_dir(output_dir)
    task = as_task(mode)
    thr = resolve_threshold(threshold) if task.uses_threshold else 0.5
    p, y = prepare_inputs(y_prob, y_true, task)
    names = list(class_names) if class_names is not None else default_class_names(task, p.shape[1])

    metrics = compute_classification_metrics(p, y, task, thr, names, n_bins)
    train_source = "given" if training_counts is not None else None
    if training_counts is None:
        training_counts = training_counts_from_meta(meta, names)
        train_source = "meta: data.train.per_class" if training_counts is not None else None
    prev = prevalence_report(metrics, task, names, prevalence, training_counts, train_source, balance_tolerance)
    report = _report_head(metrics, task, names, threshold, prev, len(p))
    cis = _add_uncertainty(report, p, y, task, names, thr, n_bins, n_bootstrap, alpha, seed)
    pu = None
    if uncalibrated_prob is not None:
        pu, _ = prepare_inputs(uncalibrated_prob, y_true, task)
        report["calibration"] = _calibration_section(pu, p, y, task, metrics, calibration, n_bins)
    elif calibration is not None:
        report["calibration"] = dict(calibration)
    report["meta"] = dict(meta or {})
    report["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")

    written = {"metrics": atomic_write_json(out_dir / "metrics.json", report)}
    if predictions_csv:
        written["predictions"] = write_predictions_csv(
            out_dir / "predictions.csv", p, y, ids, names, task, thr, id_root=id_root
        )
    if not task.is_binary:
        from monai_transfer.reports.tables import write_per_class_table

        written.update(write_per_class_table(out_dir, metrics, cis.get("auc")))
    if plots:
        written.update(_write_report_plots(out_dir, p, y, task, names, thr, metrics, cis.get("auc"), n_bins, pu))
    return written


def _report_head(
    metrics: dict[str, Any], task: Task, names: list[str], threshold: ThresholdLike, prev: dict[str, Any], n: int
) -> dict[str, Any]:
    """The first entries of ``metrics.json``: mode, headline, prevalence, warnings, counts, threshold, metrics."""
    return {
        "mode": task.mode.value,
        "n_samples": int(n),
        "headline": {
            **{m: metrics[m] for m in HEADLINE_METRICS},
            "note": "independent of the class balance of the evaluated set (unlike accuracy, PPV and NPV)",
        },
        "prevalence": prev,
        "warnings": [w for w in (prev["shift_warning"],) if w],
        "class_names": names,
        "counts": {n: metrics[f"support/{n}"] for n in names},
        "threshold": {
            "value": metrics["threshold"] if task.uses_threshold else None,
            "source": _threshold_source(threshold) if task.uses_threshold else "arg-max (no threshold)",
            "how_chosen": _how_chosen(threshold) if task.uses_threshold else None,
        },
        "metrics": metrics,
    }


def _add_uncertainty(
    report: dict[str, Any],
    p: np.ndarray,
    y: np.ndarray,
    task: Task,
    names: list[str],
    thr: Any,
    n_bins: int,
    n_bootstrap: int,
    alpha: float,
    seed: int,
) -> dict[str, Any]:
    """Add ``metrics_at_0.5``, ``confidence_intervals`` and the per-class rows to ``report``; returns the CIs."""
    if task.uses_threshold:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedMetricWarning)  # same data, warned above
            report["metrics_at_0.5"] = compute_classification_metrics(p, y, task, 0.5, names, n_bins)
    cis: dict[str, Any] = {}
    if n_bootstrap > 0:
        for m in CI_METRICS:
            cis[m] = bootstrap_ci(p, y, m, mode=task, threshold=thr, n_resamples=n_bootstrap, alpha=alpha, seed=seed)
    report["confidence_intervals"] = cis
    if not task.is_binary:  # one row per class or label
        from monai_transfer.reports.tables import per_class_rows

        report.update(per_class_rows(report["metrics"], cis.get("auc")))
    return cis


def _calibration_section(
    pu: np.ndarray,
    p: np.ndarray,
    y: np.ndarray,
    task: Task,
    metrics: dict[str, Any],
    calibration: Mapping[str, Any] | None,
    n_bins: int,
) -> dict[str, Any]:
    """``calibration`` of ``metrics.json``: the description plus ECE/Brier before (``pu``) and after (``p``)."""
    if pu.shape != p.shape:
        raise ValueError(f"uncalibrated_prob must have the shape of y_prob {p.shape}, got {pu.shape}")
    return {
        **dict(calibration or {}),
        "ece_before": compute_ece(pu, y, task, n_bins),
        "ece_after": metrics["ece"],
        "brier_before": compute_brier(pu, y, task),
        "brier_after": metrics["brier"],
        "ece_n_bins": int(n_bins),
    }


def _write_report_plots(
    out_dir: Path,
    p: np.ndarray,
    y: np.ndarray,
    task: Task,
    names: list[str],
    thr: Any,
    metrics: dict[str, Any],
    auc_ci: Any,
    n_bins: int,
    pu: np.ndarray | None,
) -> dict[str, Path]:
    """The report figures: ROC, confusion matrix, reliability (and before calibration when ``pu`` is given)."""
    from monai_transfer.reports.plots import plot_confusion_matrix, plot_reliability, plot_roc

    points: dict[str, Any] | None = None
    if task.uses_threshold:
        points = {"default": 0.5}
        if np.any(np.asarray(thr) != 0.5):
            points = {"operating": thr, "default": 0.5}
    written = {"roc": plot_roc(out_dir / "roc.png", p, y, task, names, auc_ci, points)}
    title = (
        f"Confusion matrix at threshold {thr:.3g} (n={len(p)}; counts and % of true class)" if task.is_binary else None
    )
    cm = metrics["confusion_matrix"]
    written["confusion_matrix"] = plot_confusion_matrix(out_dir / "confusion_matrix.png", cm, names, title)
    written["reliability"] = plot_reliability(out_dir / "reliability.png", p, y, task, n_bins)
    if pu is not None:
        ece_b = compute_ece(pu, y, task, n_bins)
        title = f"Before calibration: ECE = {ece_b:.3f} (after: {metrics['ece']:.3f}; {n_bins} bins, n={len(p)})"
        written["reliability_uncalibrated"] = plot_reliability(
            out_dir / "reliability_uncalibrated.png", pu, y, task, n_bins, title=title
        )
    return written
