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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from monai.utils import optional_import

from monai_transfer.data.cases import (
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
from monai_transfer.engines import streaming
from monai_transfer.engines.bundle_inference import Bundle, calibration_info, load_bundle, load_network
from monai_transfer.metrics.threshold import (
    DEFAULT_THRESHOLD,
    check_threshold_calibration,
    resolve_binary_threshold,
    resolve_multilabel_threshold,
)
from monai_transfer.reports.evaluation import write_outputs, write_summary
from monai_transfer.utils.io import check_output_dir, sha256_file

tqdm, has_tqdm = optional_import("tqdm", name="tqdm")

__all__ = ["evaluate_bundle"]

logger = logging.getLogger("monai_transfer.evaluate")  # same name under ``python -m``


@dataclass
class _Setup:
    """Everything resolved before the first case runs."""

    b: Bundle
    images_dir: Path
    cases: list[Path]
    ckpt: Path
    device: torch.device
    out: Path
    threshold: float | list[float]
    threshold_report: Any
    threshold_source: str
    calibration: dict[str, Any] = field(default_factory=dict)
    mode: str = "binary"


def _device(device: str | torch.device | None) -> torch.device:
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EvaluationUsageError("--device cuda: CUDA is not available on this machine")
    return dev


def _bundle_overrides(overrides: dict | None, calibration: Any, tta: bool | None) -> dict[str, Any]:
    """The user's overrides plus ``calibration_path``/``use_tta`` from the CLI options."""
    out = dict(overrides or {})
    if calibration is not None:
        out["calibration_path"] = None if str(calibration).lower() == "none" else str(calibration)
    if tta is not None:
        out["use_tta"] = bool(tta)
    return out


def _threshold(b: Bundle, threshold: str | float | None, ckpt: Path, calibration: dict) -> tuple[float, Any, str]:
    """``(value, report threshold, source)``; by default the ``threshold.json`` beside the checkpoint."""
    src = str(ckpt.parent / "threshold.json") if threshold is None else str(threshold)
    try:
        value, source = resolve_binary_threshold(src, missing_ok=threshold is None)
        check_threshold_calibration(src, calibration["file"] if calibration["applied"] else None)
    except (OSError, ValueError) as e:  # the messages name the file (and the refused value)
        raise EvaluationUsageError(f"--threshold: {e}" if threshold is not None else str(e)) from e
    if source.startswith("default"):
        return value, None, "default 0.5 (no threshold.json beside the checkpoint)"
    return value, (src if source.startswith("file") else value), ("--threshold" if source == "given" else source)


def _multilabel_threshold(
    b: Bundle, threshold: str | float | None, ckpt: Path, calibration: dict
) -> tuple[list[float], Any, str]:
    """``(one value per label, report threshold, source)`` of a multi-label bundle: by default the ``threshold.json``
    beside the checkpoint (one value per label, as a multi-label training writes it), else 0.5 for every label; see
    :func:`~monai_transfer.metrics.threshold.resolve_multilabel_threshold` (a single number applies to every label,
    a file recording other ``class_names`` is refused).
    """
    src = str(ckpt.parent / "threshold.json") if threshold is None else str(threshold)
    try:
        values, source = resolve_multilabel_threshold(src, b.class_names, missing_ok=threshold is None)
        check_threshold_calibration(src, calibration["file"] if calibration["applied"] else None)
    except (OSError, ValueError) as e:  # the messages name the file (and the refused value)
        raise EvaluationUsageError(f"--threshold: {e}" if threshold is not None else str(e)) from e
    if source.startswith("default"):
        return values, values, f"default {DEFAULT_THRESHOLD:g} per label (no threshold.json beside the checkpoint)"
    return values, (src if source.startswith("file") else values), ("--threshold" if source == "given" else source)


def _mode(b: Bundle) -> str:
    """The bundle's ``mode`` id, else binary for 2 classes and multi-class for more."""
    if "mode" in b.parser:
        mode = str(b.parser.get_parsed_content("mode"))
        if mode not in ("binary", "multiclass", "multilabel"):
            raise EvaluationUsageError(f"bundle {b.root}: mode {mode!r} is not binary, multiclass or multilabel")
        return mode
    return "binary" if len(b.class_names) == 2 else "multiclass"


def _setup(bundle: Any, images: Any, output: Any, labels: Any, kw: dict[str, Any]) -> _Setup:
    if int(kw["batch_size"]) < 1:
        raise EvaluationUsageError(f"--batch-size must be >= 1, got {kw['batch_size']}")
    images_dir = Path(images)
    if not images_dir.is_dir():
        raise EvaluationUsageError(f"--images {images_dir}: no such folder")
    if labels is not None and not Path(labels).is_file():
        raise EvaluationUsageError(f"--labels {labels}: no such file")
    dev = _device(kw["device"])
    soft = {} if kw["ckpt"] is None else {"ckpt_path": str(kw["ckpt"])}  # calibration.json follows the checkpoint
    b = load_bundle(bundle, _bundle_overrides(kw["overrides"], kw["calibration"], kw["tta"]), soft)
    exts = VOLUME_EXTENSIONS if b.kind == "volume" else IMAGE_2D_EXTENSIONS
    cases = list_cases(images_dir, exts)
    if not cases:
        raise EvaluationUsageError(f"--images {images_dir}: no {'/'.join(exts)} file found (searched recursively)")
    ckpt = Path(kw["ckpt"]) if kw["ckpt"] is not None else Path(str(b.parser.get_parsed_content("ckpt_path")))
    if not ckpt.is_file():
        raise EvaluationUsageError(f"checkpoint {ckpt} not found (train the bundle first or pass --ckpt)")
    mode = _mode(b)  # multi-label: the bundle's postprocessing applies a sigmoid, labels are 0/1 vectors
    cal = calibration_info(b)
    thr = (_multilabel_threshold if mode == "multilabel" else _threshold)(b, kw["threshold"], ckpt, cal)
    try:
        out = check_output_dir(output)
    except OSError as e:
        raise EvaluationUsageError(f"--output {output}: {e}") from e
    return _Setup(b, images_dir, cases, ckpt, dev, out, *thr, calibration=cal, mode=mode)


def _exit_code(s: _Setup, result: EvaluationResult, tolerate_failures: bool) -> int:
    where = s.out / "failures.csv"
    if not result.predictions:
        logger.error(f"no case could be evaluated ({len(result.failures)} failure(s)); see {where}")
        return EXIT_FAILURES
    if not result.failures:
        return EXIT_OK
    shown = [f.case for f in result.failures[:20]]
    more = len(result.failures) - len(shown)
    names = ", ".join(shown) + (f" and {more} more" if more else "")
    if tolerate_failures:
        logger.warning(
            f"{len(result.failures)} case(s) failed and were skipped (--tolerate-failures): {names}; see {where}"
        )
        return EXIT_OK
    logger.error(f"{len(result.failures)} case(s) failed: {names}; see {where}")
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
        "mode": s.mode,
        "aggregation": s.b.aggregation_desc or None,
        "inferer": type(s.b.inferer).__name__,
        "calibration": s.calibration,
        "n_failed": n_failed,
    }


def _log_start(s: _Setup) -> None:
    logger.info(
        f"evaluating {len(s.cases)} case(s) from {s.images_dir} with bundle {s.b.root} ({s.b.kind}, classes "
        f"{s.b.class_names}), checkpoint {s.ckpt}, device {s.device}, inferer {type(s.b.inferer).__name__}, "
        f"temperature {s.calibration['temperature']}"
        + (f", threshold {s.threshold:g} ({s.threshold_source})" if s.mode == "binary" else "")
        + (f", per-label thresholds {s.threshold} ({s.threshold_source})" if s.mode == "multilabel" else "")
        + (f", aggregation {s.b.aggregation_desc}" if s.b.kind == "volume" else "")
    )


def _finish(s: _Setup, result: EvaluationResult, labels: Any, n_bootstrap: int, tolerate_failures: bool) -> None:
    """Write every output file, set the exit code, write ``summary.json``."""
    thr = (s.threshold, s.threshold_report, s.threshold_source)
    meta = _meta(s, labels, len(result.failures))
    volume = s.b.kind == "volume"
    labelled = labels is not None
    summary = write_outputs(s.out, result, s.b.class_names, volume, thr, meta, labelled, n_bootstrap, logger, s.mode)
    result.exit_code = _exit_code(s, result, tolerate_failures)
    summary.update(output=_display(str(s.out)), device=str(s.device), class_names=s.b.class_names)
    summary.update(n_cases_found=len(s.cases), n_evaluated=len(result.predictions), exit_code=result.exit_code)
    summary["failed_cases"] = [f.case for f in result.failures]
    result.files["summary"] = write_summary(s.out, summary)
    logger.info(
        f"evaluated {len(result.predictions)} of {len(s.cases)} case(s), {len(result.failures)} failure(s); "
        f"outputs in {s.out}"
    )


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
            ``overrides`` (``{id: value}`` for ``inference.json``, like ``python -m monai.bundle run --id value``).

    Returns:
        the :class:`EvaluationResult` (predictions, failures, written files, exit code).

    Raises:
        EvaluationUsageError: missing/bad bundle, checkpoint, images folder, labels CSV, threshold or argument.
    """
    opts = {"ckpt": None, "threshold": None, "calibration": None, "tta": None, "batch_size": 32, "device": None}
    opts["overrides"] = None
    unknown = sorted(set(kw) - set(opts))
    if unknown:
        raise TypeError(f"evaluate_bundle() got unexpected keyword argument(s) {unknown}; accepted: {sorted(opts)}")
    opts.update(kw)
    s = _setup(bundle, images, output, labels, opts)
    result = EvaluationResult()
    label_map: dict[Path, Any] = {}
    if labels is not None:
        label_map, result.failures = read_labels_csv(labels, s.images_dir, s.cases, s.b.class_names, s.mode)
    run = streaming.BatchRunner(s.b, load_network(s.b, s.ckpt, s.device), s.device)
    loop = streaming.CaseLoop(s.b, run, s.images_dir, result, label_map, opts["batch_size"], logger)
    _log_start(s)
    for f in result.failures:
        logger.error(f"case {f.case!r} failed ({f.stage}): {f.reason}")
    failed = {Path(f.path) for f in result.failures if f.path}
    bar = None if progress is None else not progress  # None: tqdm shows the bar only on a terminal
    for path in tqdm(s.cases, desc="cases", unit="case", disable=bar) if has_tqdm else s.cases:
        if path not in failed:
            loop.case(path)
    loop.flush()
    _finish(s, result, labels, n_bootstrap, tolerate_failures)
    return result
