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
"""``evaluate_bundle``: evaluate a bundle on every case of a folder; see :mod:`monai_transfer.evaluate`."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from monai_transfer.engines.utils import auto_device
from monai_transfer.evaluate import streaming
from monai_transfer.evaluate.bundle_inference import Bundle, calibration_info, load_bundle, load_network, parsed
from monai_transfer.evaluate.cases import (
    EXIT_FAILURES,
    EXIT_OK,
    IMAGE_2D_EXTENSIONS,
    VOLUME_EXTENSIONS,
    EvaluationResult,
    EvaluationUsageError,
    _display,
    list_cases,
    read_labels_csv,
)
from monai_transfer.evaluate.outputs import write_outputs, write_summary
from monai_transfer.evaluate.shift import check_shift_suite, parse_families, run_shift_suite
from monai_transfer.metrics.threshold import (
    DEFAULT_THRESHOLD,
    check_threshold_calibration,
    resolve_task_threshold,
)
from monai_transfer.utils.io import check_output_dir, sha256_file

__all__ = ["evaluate_bundle"]

logger = logging.getLogger("monai_transfer.evaluate")  # same name under ``python -m``

#: the keyword options of :func:`evaluate_bundle` (as on the command line) and their defaults.
OPTIONS = {"ckpt": None, "threshold": None, "calibration": None, "tta": None, "batch_size": 32, "device": None}
OPTIONS.update(shift_suite=False, shift_families=None, shift_max_cases=None)  # --shift_suite (issue 31)


@dataclass
class _Setup:
    """Everything resolved before the first case runs."""

    b: Bundle
    images_dir: Path
    cases: list[Path]
    ckpt: Path
    device: torch.device
    out: Path
    threshold: tuple[Any, Any, str]  # (value, or one per label; what the report reads; source)
    calibration: dict[str, Any]


def _bundle_overrides(overrides: dict | None, calibration: Any, tta: bool | None) -> dict[str, Any]:
    """The user's overrides plus ``calibration_path``/``use_tta`` from the CLI options."""
    out = dict(overrides or {})
    if calibration is not None:
        out["calibration_path"] = None if str(calibration).lower() == "none" else str(calibration)
    if tta is not None:
        out["use_tta"] = bool(tta)
    return out


def _threshold(b: Bundle, threshold: str | float | None, ckpt: Path, calibration: dict) -> tuple[Any, Any, str]:
    """``(value, report threshold, source)``; by default the ``threshold.json`` beside the checkpoint, read as the
    bundle's task needs it (:func:`~monai_transfer.metrics.threshold.resolve_task_threshold`). Multi-label: one value
    per label (a number applies to every label, a file recording other ``class_names`` is refused), 0.5 each without
    a file; multi-class: none (arg-max).
    """
    task, missing_ok = b.task, threshold is None
    if not task.uses_threshold:
        if threshold is not None:
            logger.warning(f"--threshold {threshold} is ignored: a {task.mode} bundle predicts the arg-max")
        return None, None, "arg-max (no threshold)"
    src = str(ckpt.parent / "threshold.json") if threshold is None else str(threshold)
    multilabel = task.is_multilabel
    try:
        value, source = resolve_task_threshold(src, task, missing_ok=missing_ok)
        check_threshold_calibration(src, calibration["file"] if calibration["applied"] else None)
    except (OSError, ValueError) as e:  # the messages name the file (and the refused value)
        raise EvaluationUsageError(f"--threshold: {e}" if threshold is not None else str(e)) from e
    if source.startswith("default"):
        each = " per label" if multilabel else ""
        why = f"default {DEFAULT_THRESHOLD:g}{each} (no threshold.json beside the checkpoint)"
        return value, (value if multilabel else None), why
    return value, (src if source.startswith("file") else value), ("--threshold" if source == "given" else source)


def _setup(bundle: Any, images: Any, output: Any, labels: Any, kw: dict[str, Any]) -> _Setup:
    if int(kw["batch_size"]) < 1:
        raise EvaluationUsageError(f"--batch_size must be >= 1, got {kw['batch_size']}")
    images_dir = Path(images)
    if not images_dir.is_dir():
        raise EvaluationUsageError(f"--images {images_dir}: no such folder")
    if labels is not None and not Path(labels).is_file():
        raise EvaluationUsageError(f"--labels {labels}: no such file")
    cal = kw["calibration"]
    if cal is not None and str(cal).lower() != "none" and not Path(cal).is_file():
        raise EvaluationUsageError(f"--calibration {cal}: no such file (pass 'none' for no calibration)")
    try:
        dev = auto_device(kw["device"])
    except (RuntimeError, ValueError) as e:
        raise EvaluationUsageError(f"--device: {e}") from e
    soft = {} if kw["ckpt"] is None else {"ckpt_path": str(kw["ckpt"])}  # calibration.json follows the checkpoint
    b = load_bundle(bundle, _bundle_overrides(kw["overrides"], kw["calibration"], kw["tta"]), soft)
    if kw["shift_suite"]:
        check_shift_suite(b, labels)
        parse_families(kw["shift_families"])
    exts = VOLUME_EXTENSIONS if b.kind == "volume" else IMAGE_2D_EXTENSIONS
    cases = list_cases(images_dir, exts)
    if not cases:
        raise EvaluationUsageError(f"--images {images_dir}: no {'/'.join(exts)} file found (searched recursively)")
    ckpt = Path(kw["ckpt"]) if kw["ckpt"] is not None else Path(str(parsed(b.parser, "ckpt_path", b.root)))
    if not ckpt.is_file():
        raise EvaluationUsageError(f"checkpoint {ckpt} not found (train the bundle first or pass --ckpt)")
    cal = calibration_info(b)
    thr = _threshold(b, kw["threshold"], ckpt, cal)
    try:
        out = check_output_dir(output)
    except OSError as e:
        raise EvaluationUsageError(f"--output {output}: {e}") from e
    return _Setup(b, images_dir, cases, ckpt, dev, out, thr, cal)


def _exit_code(s: _Setup, result: EvaluationResult, tolerate_failures: bool) -> int:
    where, n = s.out / "failures.csv", len(result.failures)
    if not result.predictions:
        logger.error(f"no case could be evaluated ({n} failure(s)); see {where}")
        return EXIT_FAILURES
    if not n:
        return EXIT_OK
    names = ", ".join(f.case for f in result.failures[:20]) + (f" and {n - 20} more" if n > 20 else "")
    if tolerate_failures:
        logger.warning(f"{n} case(s) failed and were skipped (--tolerate_failures): {names}; see {where}")
        return EXIT_OK
    logger.error(f"{n} case(s) failed: {names}; see {where}")
    return EXIT_FAILURES


def _meta(s: _Setup, labels: Any, n_failed: int) -> dict[str, Any]:
    return {
        "bundle": _display(str(s.b.root)),
        "bundle_version": s.b.version,
        "checkpoint": _display(str(s.ckpt)),
        "checkpoint_sha256": sha256_file(s.ckpt),
        "images": _display(str(s.images_dir)),
        "labels": None if labels is None else _display(str(labels)),
        "kind": s.b.kind,
        "mode": s.b.mode,
        "aggregation": s.b.aggregation_desc or None,
        "inferer": type(s.b.inferer).__name__,
        "calibration": s.calibration,
        "n_failed": n_failed,
    }


def _log_start(s: _Setup) -> None:
    value, _, source = s.threshold
    logger.info(
        f"evaluating {len(s.cases)} case(s) from {s.images_dir} with bundle {s.b.root} ({s.b.kind}, classes "
        f"{s.b.class_names}), checkpoint {s.ckpt}, device {s.device}, inferer {type(s.b.inferer).__name__}, "
        f"temperature {s.calibration['temperature']}"
        + (f", threshold {value:g} ({source})" if s.b.task.is_binary else "")
        + (f", per-label thresholds {value} ({source})" if s.b.task.is_multilabel else "")
        + (f", aggregation {s.b.aggregation_desc}" if s.b.kind == "volume" else "")
    )


def _finish(s: _Setup, result: EvaluationResult, labels: Any, n_bootstrap: int, tolerate_failures: bool) -> None:
    """Write every output file, set the exit code, write ``summary.json``."""
    n_ok, n_failed, volume, mode = len(result.predictions), len(result.failures), s.b.kind == "volume", s.b.mode
    meta, labelled = _meta(s, labels, n_failed), labels is not None
    summary = write_outputs(
        s.out, result, s.b.class_names, volume, s.threshold, meta, labelled, n_bootstrap, logger, mode
    )
    result.exit_code = _exit_code(s, result, tolerate_failures)
    summary.update(output=_display(str(s.out)), device=str(s.device), class_names=s.b.class_names)
    summary.update(n_cases_found=len(s.cases))
    if "shift_json" in result.files:
        summary.update(shift_suite=_display(str(result.files["shift_json"])))
    result.files["summary"] = write_summary(s.out, summary, result)
    logger.info(f"evaluated {n_ok} of {len(s.cases)} case(s), {n_failed} failure(s); outputs in {s.out}")


def evaluate_bundle(
    bundle: str | os.PathLike,
    images: str | os.PathLike,
    output: str | os.PathLike,
    labels: str | os.PathLike | None = None,
    tolerate_failures: bool = False,
    n_bootstrap: int = 1000,
    progress: bool | None = None,
    **kw: Any,
) -> EvaluationResult:
    """Evaluate a bundle on every case under ``images``; see :mod:`monai_transfer.evaluate` and ``docs/evaluate.md``.

    Args:
        bundle: bundle folder (holds ``configs/inference.json``).
        images: folder of test cases (searched recursively): NIfTI for volume bundles; the image files of
            :data:`~monai_transfer.data.datalist.DEFAULT_EXTENSIONS` for 2D bundles.
        output: output folder (created).
        labels: optional CSV with columns ``image`` (relative to ``images``) and ``label`` (index or class name).
        tolerate_failures: exit code 0 (with a WARNING) when some, not all, cases failed.
        n_bootstrap: bootstrap resamples of the report's confidence intervals.
        progress: show a tqdm bar over cases; default only on a terminal.
        kw: ``ckpt`` (default the bundle's ``ckpt_path``), ``threshold`` (number or threshold JSON; default the
            ``threshold.json`` beside the checkpoint, else 0.5), ``calibration`` (a ``calibration.json`` or
            ``"none"``; default the bundle's ``calibration_path``, beside the checkpoint), ``tta`` (``True``/``False``
            sets the bundle's ``use_tta``), ``batch_size`` (default 32), ``device`` (default CUDA when available),
            ``overrides`` (``{id: value}`` for ``inference.json``, like ``python -m monai.bundle run --id value``),
            ``shift_suite`` (also score the labelled cases under the acquisition-shift suite: ``shift.json``,
            ``shift.md``, ``shift.png``; 2D binary bundles with labels), ``shift_families`` (comma-separated names of
            :data:`~monai_transfer.transforms.shift.SHIFT_FAMILIES`; default all), ``shift_max_cases`` (a
            class-stratified, seeded subsample of the labelled cases for the suite; default all).

    Returns:
        the :class:`EvaluationResult` (predictions, failures, written files, exit code).

    Raises:
        EvaluationUsageError: missing/bad bundle, checkpoint, images folder, labels CSV, threshold or argument.
    """
    opts = {**OPTIONS, "overrides": None}
    unknown = sorted(set(kw) - set(opts))
    if unknown:
        raise TypeError(f"evaluate_bundle() got unexpected keyword argument(s) {unknown}; accepted: {sorted(opts)}")
    opts.update(kw)
    s = _setup(bundle, images, output, labels, opts)
    result = EvaluationResult()
    label_map: dict[Path, Any] = {}
    if labels is not None:
        label_map, result.failures = read_labels_csv(labels, s.images_dir, s.cases, s.b.class_names, s.b.mode)
    run = streaming.BatchRunner(s.b, load_network(s.b, s.ckpt, s.device), s.device)
    loop = streaming.CaseLoop(s.b, run, s.images_dir, result, label_map, opts["batch_size"], logger)
    _log_start(s)
    loop.run_cases(s.cases, progress)
    if opts["shift_suite"]:
        result.files.update(
            run_shift_suite(
                s.b, run, result.predictions, s.threshold[0], s.out, opts["shift_families"], opts["shift_max_cases"],
                int(opts["batch_size"]), log=logger,
            )
        )  # fmt: skip
    _finish(s, result, labels, n_bootstrap, tolerate_failures)
    return result
