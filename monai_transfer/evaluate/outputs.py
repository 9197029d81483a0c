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
"""The files ``python -m monai_transfer.evaluate`` writes: the report, ``predictions.csv``, ``failures.csv``/``.json``
and ``summary.json``. Predictions go through the project's one table writer,
:func:`monai_transfer.reports.writer.write_predictions_csv`.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from monai.utils import optional_import

from monai_transfer.evaluate.cases import CaseFailure, CasePrediction, EvaluationResult, EvaluationUsageError, _display
from monai_transfer.reports.writer import write_classification_report, write_predictions_csv
from monai_transfer.utils.io import atomic_write_json, atomic_write_text
from monai_transfer.utils.task import Task, TaskMode, apply_threshold, derive_task

resource, _has_resource = optional_import("resource")  # not on Windows

__all__ = ["write_outputs", "write_report", "write_predictions", "write_failures", "write_summary", "peak_rss_mb"]


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Turn an ``OSError`` while writing ``path`` (full disk, lost permission) into a usage error naming the file."""
    try:
        yield
    except OSError as e:
        raise EvaluationUsageError(
            f"cannot write the report file {_display(str(path))}: {e}; free some space or choose another --output "
            "(earlier report files there are kept unchanged)"
        ) from e


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process in MiB (``None`` where ``resource`` is missing)."""
    if not _has_resource:
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1 << 20) if sys.platform == "darwin" else rss / 1024


def write_report(
    out: Path,
    labelled: Sequence[CasePrediction],
    names: list[str],
    threshold: Any,
    mode: str | Task | None = None,
    **kw: Any,
) -> dict:
    """``metrics.json`` and the plots of the labelled cases (``predictions.csv`` is written by the caller); ``mode``
    defaults to binary for 2 classes, else multi-class."""
    with _writing(out / "metrics.json"):  # and the plots
        return write_classification_report(
            out,
            y_true=np.asarray([p.label for p in labelled], dtype=np.int64),
            y_prob=np.stack([p.probs for p in labelled]),
            ids=[p.case_id for p in labelled],
            class_names=names,
            threshold=threshold,
            mode=derive_task(mode, class_names=names),
            predictions_csv=False,
            **kw,
        )


def write_predictions(
    path: Path,
    preds: Sequence[CasePrediction],
    names: list[str],
    threshold: float | list[float] | None,
    volume: bool,
    mode: str | Task | None = None,
) -> Path | None:
    """Every evaluated case (labelled or not): the report's columns, then ``image``, ``threshold`` (``n_slices``).

    Multi-label (``mode="multilabel"``, ``threshold`` one value per label): ``label_<name>``, ``prob_<name>``,
    ``pred_<name>`` per label, ``correct``, ``image``, ``prediction_names`` (the findings at or above their threshold,
    joined by ``;``) and ``threshold`` (the per-label values joined by ``;``), as the inference handler writes.
    """
    task = derive_task(mode, class_names=names)  # default: binary for 2 classes, else multi-class
    if task.is_multilabel:
        return _write_multilabel_predictions(path, preds, names, list(threshold or []), volume)
    if not preds:  # the header only
        head = ["id", "label", "label_name", *[f"prob_{c}" for c in names], "prediction", "prediction_name"]
        head += ["correct", "image", "threshold"] + (["n_slices"] if volume else [])
        with _writing(path):
            return atomic_write_text(path, ",".join(head) + "\n")
    extra: dict[str, list] = {
        "image": [_display(p.path) for p in preds],
        "threshold": ["" if threshold is None else f"{threshold:.6f}"] * len(preds),
    }
    if volume:
        extra["n_slices"] = [p.n_slices for p in preds]
    with _writing(path):
        return write_predictions_csv(
            path,
            np.stack([p.probs for p in preds]),
            [p.label for p in preds],
            ids=[p.case_id for p in preds],
            class_names=names,
            mode=task,
            threshold=0.5 if threshold is None else threshold,
            extra_columns=extra,
        )


def _write_multilabel_predictions(
    path: Path, preds: Sequence[CasePrediction], names: list[str], threshold: list[float], volume: bool
) -> Path | None:
    if not preds:  # the header only
        head = ["id", *[f"{k}_{c}" for k in ("label", "prob", "pred") for c in names], "correct", "image"]
        head += ["prediction_names", "threshold"] + (["n_slices"] if volume else [])
        with _writing(path):
            return atomic_write_text(path, ",".join(head) + "\n")
    probs = np.stack([p.probs for p in preds])
    decided = apply_threshold(probs, TaskMode.MULTILABEL, threshold)
    extra: dict[str, list] = {
        "image": [_display(p.path) for p in preds],
        "prediction_names": [";".join(n for n, v in zip(names, row) if v) for row in decided],
        "threshold": [";".join(f"{t:.6f}" for t in threshold)] * len(preds),
    }
    if volume:
        extra["n_slices"] = [p.n_slices for p in preds]
    labels = [p.label for p in preds]
    with _writing(path):
        return write_predictions_csv(
            path,
            probs,
            None if all(v is None for v in labels) else labels,
            ids=[p.case_id for p in preds],
            class_names=names,
            mode="multilabel",
            threshold=threshold,
            extra_columns=extra,
        )


def write_failures(out: Path, failures: Sequence[CaseFailure]) -> dict[str, Path]:
    """``failures.csv`` and ``failures.json``: one row per bad case (name, path, stage, reason)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["case", "path", "stage", "reason"])
    rows = [{k: _display(str(v)) for k, v in asdict(f).items()} for f in failures]
    for r in rows:
        w.writerow([r["case"], r["path"], r["stage"], r["reason"]])
    files = {}
    with _writing(out / "failures.csv"):
        files["failures_csv"] = atomic_write_text(out / "failures.csv", buf.getvalue())
    with _writing(out / "failures.json"):
        files["failures_json"] = atomic_write_json(out / "failures.json", {"n_failed": len(failures), "failures": rows})
    return files


def write_summary(out: Path, summary: dict[str, Any], result: EvaluationResult) -> Path:
    """``summary.json``: ``summary`` (what was evaluated, how), then of ``result`` the number evaluated, the failed
    cases and the exit code, and the peak memory."""
    failed = [f.case for f in result.failures]
    summary = {**summary, "n_evaluated": len(result.predictions), "exit_code": result.exit_code, "failed_cases": failed}
    with _writing(out / "summary.json"):
        return atomic_write_json(out / "summary.json", {**summary, "peak_rss_mb": peak_rss_mb()})


def write_outputs(
    out: Path,
    result: EvaluationResult,
    class_names: list[str],
    volume: bool,
    threshold: tuple[float, Any, str],
    meta: dict[str, Any],
    labels_given: bool,
    n_bootstrap: int,
    log: logging.Logger,
    mode: str | None = None,
) -> dict[str, Any]:
    """The report (labelled cases), ``predictions.csv`` (every case) and the failure files of an evaluation.

    Args:
        threshold: ``(value, what the report reads (a threshold file or value), source)``; used for 2 classes and
            multi-label (one value per label) only.
        mode: ``"binary"``, ``"multiclass"`` or ``"multilabel"``; default binary for 2 classes, else multi-class.

    Returns:
        the start of ``summary.json``: ``meta``, the threshold used and the number of labelled cases.
    """
    task = derive_task(mode, class_names=class_names)
    binary = task.uses_threshold  # a decision threshold (one per label), not arg-max
    value, report_threshold, source = threshold
    labelled = [p for p in result.predictions if p.label is not None]
    if labels_given and labelled:
        thr = report_threshold if binary else None
        result.files.update(
            write_report(out, labelled, class_names, thr, meta=meta, n_bootstrap=n_bootstrap, mode=task)
        )
    elif labels_given:
        log.warning("no labelled case could be evaluated: metrics.json and the plots are not written")
    thr_used = value if binary else None
    result.files["predictions"] = write_predictions(
        out / "predictions.csv", result.predictions, class_names, thr_used, volume, task
    )
    result.files.update(write_failures(out, result.failures))
    source = source if binary else "arg-max (no threshold)"
    return {**meta, "threshold": {"value": thr_used, "source": source}, "n_labelled": len(labelled)}
