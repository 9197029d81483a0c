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
"""Cross-validated model selection on the training split only, so that the validation split chooses nothing.

Choosing the best epoch and the operating threshold on the same validation images that then report the performance
overfits them (PneumoniaMNIST: val AUC 0.997, official test AUC 0.956, specificity 0.78). This workflow:

1. splits the bundle's TRAINING split into ``K`` stratified, group-disjoint folds
   (:func:`monai_transfer.data.kfold_datalist`); the validation split is not touched;
2. trains ``K`` fold models by running the bundle's own ``train.json`` (``monai.bundle.ConfigWorkflow``) with the
   fold as its ``datalists`` (the held-out fold in place of ``val``), validating every epoch, and records the
   out-of-fold (OOF) probabilities of every epoch;
3. chooses the number of epochs with the best mean fold AUC (ties: fewer epochs), fits a temperature on the OOF
   predictions of that epoch (``models/calibration.json``) and THEN chooses the threshold on the calibrated OOF
   probabilities (``models/threshold.json``);
4. trains the final model on the whole training split with the same settings (and the same learning-rate schedule,
   planned over ``epochs``), stopping after the chosen number of epochs; the validation split is scored once, at
   the end, with the calibration and threshold chosen out-of-fold (``eval/val/metrics.json``).

``cv/cv.json`` and the ``selection`` block of ``eval/val/metrics.json`` say which data chose what.

Entry points::

    python -m monai_transfer.cv --bundle bundles/xray --folds 5 [--epochs 6 --image_size 64 ...]
    python -m monai.bundle run --config_file "['bundles/xray/configs/train.json','bundles/xray/configs/train_cv.json']"

Outputs (under ``output_dir``): ``models/model.pt`` (final model), ``models/calibration.json``,
``models/threshold.json``, ``eval/val/`` (the one validation report), ``cv/cv.json``, ``cv/oof/`` (report of the
calibrated OOF predictions, with reliability diagrams before/after calibration), ``cv/fold_<k>/`` (each fold's
bundle run: ``models/model.pt`` = its best epoch on its own held-out fold, usable as ensemble members).
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monai_transfer.data.splits import assign_folds
from monai_transfer.metrics import PredictionBuffer
from monai_transfer.metrics.calibration import apply_temperature, calibration_summary, fit_temperature, save_calibration
from monai_transfer.metrics.functional import compute_auc
from monai_transfer.metrics.threshold import THRESHOLD_METHODS, save_threshold, select_threshold
from monai_transfer.utils.io import atomic_write_json, check_output_dir
from monai_transfer.utils.task import derive_task

__all__ = ["run_cross_validation", "read_datalists", "OOFCollector", "align_predictions", "choose_epoch", "main"]

logger = logging.getLogger(__name__)


def read_datalists(path: str | os.PathLike) -> dict[str, list[dict[str, Any]]]:
    """The ``{"train": [...], "val": [...]}`` lists written by this workflow (used as a bundle's ``datalists``)."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read the fold data lists {path}: {e}") from e
    if not isinstance(obj, dict) or not all(isinstance(obj.get(s), list) and obj[s] for s in ("train", "val")):
        raise ValueError(f"{path} must hold non-empty 'train' and 'val' lists")
    return obj


class OOFCollector:
    """Record the evaluator's probabilities and labels after every trainer epoch (per-epoch fold validation), buffered
    in a :class:`~monai_transfer.metrics.PredictionBuffer` (this process only: cross-validation runs on one).

    Only evaluations run while the trainer is running are recorded (not the report run after training).

    Attributes:
        epochs: ``{trainer_epoch: (probs (N, K), labels (N,), ids)}``; an id is ``None`` when the case carries none.
    """

    def __init__(self) -> None:
        self.epochs: dict[int, tuple[np.ndarray, np.ndarray, list[str | None]]] = {}
        self._active = False
        self._trainer: Any = None
        self._buffer = PredictionBuffer(with_labels=True)

    def attach(self, trainer: Any, evaluator: Any) -> None:
        """Hook into ``trainer`` (start/stop) and ``evaluator`` (collect per epoch)."""
        from ignite.engine import Events

        from monai_transfer.handlers.report_writer import ids_from_output

        self._trainer = trainer

        def _start(_: Any) -> None:
            self._active = True

        def _stop(_: Any) -> None:
            self._active = False

        def _collect(engine: Any) -> None:
            out = engine.state.output
            if self._active and out:
                ids = ids_from_output(out, getattr(engine.state, "batch", None))
                self._buffer.add([o["pred"] for o in out], [o["label"] for o in out], ids)

        def _done(_: Any) -> None:
            if self._active and len(self._buffer):
                probs, labels, ids = self._buffer.get_data(gather=False, name_missing=False)
                y = labels.numpy()
                y = y.argmax(1) if y.shape[1] > 1 else y[:, 0]
                self.epochs[int(self._trainer.state.epoch)] = (probs.double().numpy(), y.astype(np.int64), ids)

        trainer.add_event_handler(Events.STARTED, _start)
        trainer.add_event_handler(Events.COMPLETED, _stop)
        evaluator.add_event_handler(Events.EPOCH_STARTED, lambda _: self._buffer.reset())
        evaluator.add_event_handler(Events.ITERATION_COMPLETED, _collect)
        evaluator.add_event_handler(Events.EPOCH_COMPLETED, _done)


def align_predictions(
    probs: np.ndarray,
    labels: np.ndarray,
    ids: Sequence[str | None],
    items: Sequence[Mapping[str, Any]],
    aggregation: str | None = None,
    aggregation_k: int = 3,
    where: str = "",
) -> tuple[np.ndarray, np.ndarray]:
    """Predictions of an evaluator epoch in the order of ``items`` (one row per item).

    Rows are matched by id (``source_id`` or the image file name, compared with ``item["image"]``); without ids, in
    loader order. Several rows per item (the slices of a volume) are pooled with ``aggregation`` first
    (:func:`monai_transfer.data.aggregate_by_volume`).

    Raises:
        RuntimeError: rows that cannot be matched one-to-one with the items (the message says which).
    """
    keys = [str(x.get("image")) for x in items]
    if all(i is None for i in ids):
        if len(probs) != len(items):
            raise RuntimeError(f"{where}: {len(probs)} predictions without ids for {len(items)} held-out items")
        return probs, labels
    if any(i is None for i in ids):
        raise RuntimeError(f"{where}: some predictions carry no id (source_id / image file name)")
    sids = [str(i) for i in ids]
    if len(set(sids)) < len(sids):
        if aggregation is None:
            raise RuntimeError(
                f"{where}: several predictions per item (slices of a volume?) and no 'aggregation' in the config"
            )
        from monai_transfer.data.volumes import aggregate_by_volume

        res = aggregate_by_volume(sids, probs, labels, method=aggregation, k=aggregation_k)
        sids, probs, labels = list(res["ids"]), np.asarray(res["probs"]), np.asarray(res["labels"])
        probs = probs if probs.ndim == 2 else np.stack([1 - probs, probs], 1)
    index = {i: n for n, i in enumerate(sids)}
    missing = [k for k in keys if k not in index]
    if missing or len(index) != len(keys):
        raise RuntimeError(
            f"{where}: predictions for {len(index)} ids do not match the {len(keys)} held-out items "
            f"(e.g. missing {missing[:3]})"
        )
    order = [index[k] for k in keys]
    return probs[order], np.asarray(labels)[order].astype(np.int64)


def choose_epoch(fold_auc: Sequence[Sequence[float]]) -> int:
    """1-based epoch with the best mean fold AUC (``fold_auc[e][k]``), ties to the earliest; NaN AUCs are ignored.

    Raises:
        ValueError: no epoch has a defined AUC.
    """
    means = [float(np.nanmean(a)) if np.isfinite(a).any() else float("nan") for a in map(np.asarray, fold_auc)]
    if not np.isfinite(means).any():
        raise ValueError("no epoch has a defined fold AUC (each held-out fold needs both classes)")
    best = max(v for v in means if np.isfinite(v))
    return 1 + next(i for i, v in enumerate(means) if np.isfinite(v) and v == best)


def _workflow(config_file: Any, meta_file: str | None, logging_file: str | None, override: Mapping[str, Any]) -> Any:
    from monai.bundle import ConfigWorkflow

    return ConfigWorkflow(
        config_file=config_file,
        meta_file=meta_file,
        logging_file=logging_file,
        workflow_type="train",
        **dict(override),
    )


def _datalists_expr(path: Path) -> str:
    return f"$monai_transfer.engines.cv.read_datalists({str(path)!r})"


def _write_selection_into_report(report: Path, selection: Mapping[str, Any]) -> None:
    obj = json.loads(report.read_text(encoding="utf-8"))
    obj = {**{k: obj[k] for k in list(obj)[:2]}, "selection": dict(selection), **obj}  # near the top
    atomic_write_json(report, obj)


def run_cross_validation(
    config_file: str | os.PathLike | Sequence[str | os.PathLike],
    folds: int = 5,
    output_dir: str | os.PathLike | None = None,
    meta_file: str | os.PathLike | None = None,
    logging_file: str | os.PathLike | None = None,
    threshold_method: str = "youden",
    target_sensitivity: float = 0.9,
    calibrate: bool = True,
    final_fit: bool = True,
    group_key: str | None = "patient_id",
    seed: int | None = None,
    **override: Any,
) -> dict[str, Any]:
    """K-fold model selection on the training split, then one final fit; see the module docstring.

    Args:
        config_file: the bundle's ``train.json`` (or a list of config files) that the folds and the final fit run.
        folds: number of folds ``K`` (>= 2).
        output_dir: run folder; default the config's ``output_dir`` after ``override``.
        meta_file: the bundle's ``metadata.json``; default ``configs/metadata.json`` beside ``config_file``.
        logging_file: the bundle's ``logging.conf``; default beside ``config_file`` (False: no logging config).
        threshold_method: ``"youden"`` or ``"sensitivity"`` (binary tasks), chosen on the calibrated OOF predictions.
        target_sensitivity: target of ``threshold_method="sensitivity"``.
        calibrate: fit a temperature on the OOF predictions (before the threshold).
        final_fit: train the final model on the whole training split and score the validation split once.
        group_key: patient/volume key the folds must not split.
        seed: fold seed; default the config's ``seed``.
        override: bundle config overrides for every run (``epochs``, ``image_size``, ``max_items``, ...).

    Returns:
        the ``cv.json`` content.
    """
    from monai.bundle import ConfigParser

    folds = int(folds)
    files = [str(f) for f in config_file] if isinstance(config_file, (list, tuple)) else [str(config_file)]
    configs_dir = Path(files[0]).parent
    meta = str(meta_file) if meta_file is not None else str(configs_dir / "metadata.json")
    log_file: Any = logging_file if logging_file is not None else str(configs_dir / "logging.conf")
    if log_file is not False and not Path(log_file).is_file():
        log_file = False
    if threshold_method not in THRESHOLD_METHODS:
        raise ValueError(f"threshold_method must be one of {THRESHOLD_METHODS}, got {threshold_method!r}")

    parser = ConfigParser()
    parser.read_config(files if len(files) > 1 else files[0])
    parser.update(pairs=dict(override))
    datalists = parser.get_parsed_content("datalists")
    class_names = list(parser.get_parsed_content("class_names"))
    out = check_output_dir(output_dir if output_dir is not None else parser.get_parsed_content("output_dir"))
    seed = int(parser.get_parsed_content("seed")) if seed is None else int(seed)
    epochs = int(parser.get_parsed_content("epochs"))
    # the task as the training derives it (its `mode` id, else the training labels and class count: derive_task)
    config_mode = parser.get_parsed_content("mode") if "mode" in parser else None
    task = derive_task(config_mode, labels=[x.get("label") for x in datalists["train"]], class_names=class_names)
    if task.is_multilabel:
        raise ValueError(
            f"{files}: cross-validation takes binary and multiclass tasks; the training data are multilabel"
        )
    mode = task.mode.value
    aggregation = parser.get_parsed_content("aggregation") if "aggregation" in parser else None
    aggregation_k = int(parser.get_parsed_content("aggregation_k")) if "aggregation_k" in parser else 3
    train_items, val_items = list(datalists["train"]), list(datalists["val"])
    cv_dir = out / "cv"
    models_dir = out / "models"
    linked = datalists.linked("train") if hasattr(datalists, "linked") else None  # near-duplicates share a fold
    fold_of = assign_folds(train_items, folds, seed=seed, group_key=group_key, linked=linked)
    logger.info("cross-validation: %d training items in %d folds; %d val items untouched", len(train_items), folds,
                len(val_items))  # fmt: skip

    base: dict[str, Any] = {k: v for k, v in override.items() if k not in ("output_dir",)}
    base.update(max_items=None, early_stop_patience=0, resume=False, val_interval=1, calibrate=False)

    # 1. fold runs of the bundle's own training config
    per_fold: list[OOFCollector] = []
    fold_models: list[str] = []
    for k in range(folds):
        fold_dir = check_output_dir(cv_dir / f"fold_{k}")
        lists = {
            "train": [dict(x) for x, f in zip(train_items, fold_of) if f != k],
            "val": [dict(x) for x, f in zip(train_items, fold_of) if f == k],
        }
        atomic_write_json(fold_dir / "datalists.json", lists)
        wf = _workflow(
            files, meta, log_file,
            {**base, "output_dir": str(fold_dir), "datalists": _datalists_expr(fold_dir / "datalists.json"),
             "n_bootstrap": 0},
        )  # fmt: skip
        wf.initialize()
        collector = OOFCollector()
        collector.attach(
            wf.parser.get_parsed_content("train#trainer"), wf.parser.get_parsed_content("validate#evaluator")
        )
        logger.info("cross-validation: fold %d/%d (train %d, held out %d)", k + 1, folds, len(lists["train"]),
                    len(lists["val"]))  # fmt: skip
        wf.run()
        wf.finalize()
        if not collector.epochs:
            raise RuntimeError(f"fold {k}: no per-epoch validation was recorded (check val_interval/epochs)")
        per_fold.append(collector)
        fold_models.append(str(fold_dir / "models" / "model.pt"))

    # 2. per-epoch OOF scores and the choice of the number of epochs
    n_epochs = min(max(c.epochs) for c in per_fold)
    labels = np.array([int(x["label"]) for x in train_items])
    per_epoch: list[dict[str, Any]] = []
    oof_by_epoch: dict[int, np.ndarray] = {}
    fold_auc_table: list[list[float]] = []
    for e in range(1, n_epochs + 1):
        k_dim = max(per_fold[0].epochs[e][0].shape[1], 2)
        oof = np.full((len(train_items), k_dim), np.nan)
        aucs = []
        for k, c in enumerate(per_fold):
            idx = np.flatnonzero(np.asarray(fold_of) == k)
            probs, y = align_predictions(
                *c.epochs[e], [train_items[i] for i in idx], aggregation, aggregation_k, f"fold {k} epoch {e}"
            )
            if not np.array_equal(labels[idx], y):
                raise RuntimeError(f"fold {k} epoch {e}: the held-out labels do not match the fold's items")
            oof[idx] = probs
            aucs.append(_auc(probs, y, mode))
        fold_auc_table.append(aucs)
        oof_by_epoch[e] = oof
        defined = [a for a in aucs if np.isfinite(a)]
        per_epoch.append(
            {"epoch": e, "fold_auc": aucs, "mean_fold_auc": float(np.mean(defined)) if defined else None,
             "pooled_oof_auc": _auc(oof, labels, mode)}
        )  # fmt: skip
    best_epoch = choose_epoch(fold_auc_table)
    oof = oof_by_epoch[best_epoch]

    # 3. calibration on the OOF predictions, then the threshold on the calibrated OOF probabilities
    models_dir.mkdir(parents=True, exist_ok=True)
    ids = [str(x.get("image", i)) for i, x in enumerate(train_items)]
    fitted_on = f"out-of-fold predictions of {folds}-fold cross-validation on the training split (epoch {best_epoch})"
    temperature, cal_info, cal_path = 1.0, None, None
    if calibrate:
        # fitted on the rows the evaluator post-processes (one per image, or one per slice for volume bundles),
        # so that ApplyTemperatured in the post-processing reproduces it; pooling per volume comes after
        rows_p = np.concatenate([c.epochs[best_epoch][0] for c in per_fold])
        rows_y = np.concatenate([c.epochs[best_epoch][1] for c in per_fold])
        temperature = fit_temperature(rows_p, rows_y, mode, inputs="probs")
        unit = "slices" if len(rows_p) > len(train_items) else "images"
        cal_info = {
            "fitted_on": f"{fitted_on}, per {unit[:-1]}",
            **calibration_summary(rows_p, rows_y, temperature, mode, inputs="probs"),
        }
        cal_path = save_calibration(models_dir / "calibration.json", temperature, mode=mode,
                                    **{k: v for k, v in cal_info.items() if k != "temperature"})  # fmt: skip
        oof_cal = np.full_like(oof, np.nan)
        for k, c in enumerate(per_fold):
            idx = np.flatnonzero(np.asarray(fold_of) == k)
            p_k, y_k, ids_k = c.epochs[best_epoch]
            oof_cal[idx] = align_predictions(
                apply_temperature(p_k, temperature, mode, inputs="probs"), y_k, ids_k,
                [train_items[i] for i in idx], aggregation, aggregation_k, f"fold {k} epoch {best_epoch}",
            )[0]  # fmt: skip
    else:
        oof_cal = oof
    threshold: float | None = None
    thr_path = None
    if task.uses_threshold:
        threshold = float(select_threshold(oof_cal, labels, threshold_method, target_sensitivity, task))
        thr_path = save_threshold(
            models_dir / "threshold.json", threshold, method=threshold_method,
            target_sensitivity=target_sensitivity if threshold_method == "sensitivity" else None,
            mode=mode, class_names=class_names, n_samples=len(labels), chosen_on=fitted_on,
            applies_to=(f"probabilities after temperature scaling with {cal_path}" if calibrate
                        else "uncalibrated probabilities"),
        )  # fmt: skip
    from monai_transfer.reports.writer import write_classification_report

    write_classification_report(
        cv_dir / "oof", labels, oof_cal, ids=ids, class_names=class_names, threshold=threshold, mode=mode,
        meta={"what": fitted_on, "calibrated": bool(calibrate)}, n_bootstrap=int(override.get("n_bootstrap", 1000)),
        uncalibrated_prob=oof if calibrate else None, calibration=cal_info,
        prevalence=override.get("prevalence") if task.is_binary else None,
        training_counts={n: int(np.sum(labels == i)) for i, n in enumerate(class_names)},
        id_root=parser.get_parsed_content("dataset_dir"),  # ids as in every predictions.csv (case_id)
    )  # fmt: skip

    selection = {
        "epochs": f"{best_epoch}: best mean fold AUC over the {folds} held-out folds of the training split",
        "temperature": (f"{temperature:.6g}: fitted (NLL) on the {fitted_on}" if calibrate else "none"),
        "threshold": (
            f"{threshold:.6g}: {threshold_method} on the calibrated {fitted_on}" if threshold is not None else "arg-max"
        ),
        "final_fit": (
            f"whole training split ({len(train_items)} items), stopped after {best_epoch} of the {epochs}-epoch "
            "learning-rate schedule the folds followed"
            if final_fit
            else "not run"
        ),
        "validation_split": "scored once at the end with the choices above; it chose nothing",
    }
    summary: dict[str, Any] = {
        "folds": folds,
        "seed": seed,
        "group_key": group_key,
        "config_file": files,
        "overrides": {k: v for k, v in override.items() if isinstance(v, (str, int, float, bool, type(None)))},
        "n_train": len(train_items),
        "n_val": len(val_items),
        "fold_sizes": [int(np.sum(np.asarray(fold_of) == k)) for k in range(folds)],
        "epochs_planned": epochs,
        "per_epoch": per_epoch,
        "chosen": {"epochs": best_epoch, "temperature": temperature if calibrate else None, "threshold": threshold},
        "selection": selection,
        "calibration": cal_info,
        "files": {
            "calibration": str(cal_path) if cal_path else None,
            "threshold": str(thr_path) if thr_path else None,
            "oof_report": str(cv_dir / "oof" / "metrics.json"),
            "fold_models": fold_models,
        },
    }
    atomic_write_json(cv_dir / "fold_assignments.json", {i: f for i, f in zip(ids, fold_of)})
    atomic_write_json(cv_dir / "cv.json", summary)

    # 4. final fit on the whole training split; val is scored once, at the end
    if final_fit:
        final_lists = {"train": train_items, "val": val_items}
        atomic_write_json(cv_dir / "final_datalists.json", final_lists)
        wf = _workflow(
            files, meta, log_file,
            {**base, "output_dir": str(out), "datalists": _datalists_expr(cv_dir / "final_datalists.json"),
             "train#trainer#max_epochs": best_epoch, "val_interval": best_epoch,
             "validate#report_writer#select_threshold_on": None, "validate#report_writer#threshold_path": None,
             "validate#report_writer#threshold": str(thr_path) if thr_path else None},
        )  # fmt: skip
        if calibrate and aggregation is None:  # before/after on val (exact for per-image rows, not for pooled volumes)
            wf.parser["validate#report_writer#applied_calibration"] = str(cal_path)
        if calibrate:
            post = wf.parser["validate#postprocessing#transforms"]
            if not isinstance(post, list):
                raise ValueError(
                    f"{files}: validate#postprocessing#transforms must be a list to prepend ApplyTemperatured, "
                    f"got {post!r}"
                )
            wf.parser["validate#postprocessing#transforms"] = [
                {
                    "_target_": "monai_transfer.transforms.ApplyTemperatured",
                    "keys": "pred",
                    "temperature": str(cal_path),
                },
                *post,
            ]  # fmt: skip
        wf.initialize()
        wf.run()
        wf.finalize()
        report = Path(wf.parser.get_parsed_content("report_dir")) / "metrics.json"
        if report.is_file():
            _write_selection_into_report(report, {**selection, "cv_summary": str(cv_dir / "cv.json")})
            summary["files"]["val_report"] = str(report)
        summary["files"]["model"] = str(models_dir / "model.pt")
        atomic_write_json(cv_dir / "cv.json", summary)
    return summary


def _auc(probs: np.ndarray, y: np.ndarray, mode: str) -> float:
    import warnings

    from monai_transfer.metrics.functional import UndefinedMetricWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        v = compute_auc(probs, y, mode)
    return float("nan") if v is None else float(v)  # NaN (null in JSON) when a fold lacks a class


def _parse_value(text: str) -> Any:
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(text)
        except (ValueError, SyntaxError, json.JSONDecodeError):
            continue
    return text


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``python -m monai_transfer.cv --bundle DIR --folds K [--no-calibrate] [--no-final-fit] [--<id> VALUE ...]``.

    Unknown ``--<id> VALUE`` pairs are bundle config overrides (values parsed as JSON/Python literals, else strings).
    """
    ap = argparse.ArgumentParser(prog="python -m monai_transfer.cv", description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", required=True, help="bundle folder (holds configs/train.json)")
    ap.add_argument("--config", default="train.json", help="training config inside configs/ (default train.json)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--threshold_method", default="youden", choices=list(THRESHOLD_METHODS))
    ap.add_argument("--target_sensitivity", type=float, default=0.9)
    ap.add_argument("--no-calibrate", dest="calibrate", action="store_false")
    ap.add_argument("--no-final-fit", dest="final_fit", action="store_false")
    ap.add_argument("--group_key", default="patient_id")
    args, rest = ap.parse_known_args(argv)
    if len(rest) % 2 or any(not r.startswith("--") for r in rest[::2]):
        ap.error(f"overrides must be '--<id> VALUE' pairs, got {rest}")
    override = {r[2:]: _parse_value(v) for r, v in zip(rest[::2], rest[1::2])}
    configs = Path(args.bundle) / "configs"
    if not (configs / args.config).is_file():
        ap.error(f"{configs / args.config} does not exist")
    summary = run_cross_validation(
        configs / args.config, folds=args.folds, threshold_method=args.threshold_method,
        target_sensitivity=args.target_sensitivity, calibrate=args.calibrate, final_fit=args.final_fit,
        group_key=args.group_key or None, **override,
    )  # fmt: skip
    print(json.dumps({"chosen": summary["chosen"], "files": summary["files"]}, indent=2))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
