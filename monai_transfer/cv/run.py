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
   probabilities (``models/threshold.json``). Volume bundles (``aggregation``: several slices per item) are scored
   per VOLUME throughout: the fold AUCs and the threshold use the pooled volume probabilities, and the temperature
   (one, of the slice logits, applied before pooling as at inference) minimises the NLL of the pooled OOF volume
   probabilities; for binary volume bundles a Platt step of the pooled probabilities follows
   (:mod:`monai_transfer.metrics.volume_calibration`), kept only when its cross-fitted NLL on the OOF volumes beats
   the temperature alone; the folds split volumes, never slices;
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

import datetime
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from monai_transfer.data.splits import assign_folds
from monai_transfer.handlers.oof_collector import OOFCollector
from monai_transfer.metrics.calibration import (
    DEFAULT_TEMPERATURE_BOUNDS,
    apply_temperature,
    calibration_summary,
    fit_temperature,
    golden_section_bracket,
    save_calibration,
)
from monai_transfer.metrics.functional import DEFAULT_ECE_BINS, compute_auc, compute_brier, compute_ece
from monai_transfer.metrics.threshold import THRESHOLD_METHODS, calibration_binding, save_threshold, select_threshold
from monai_transfer.metrics.volume_calibration import (
    VolumePlatt,
    aggregation_key,
    crossfit_platt,
    fit_platt,
    platt_nll,
    positive_class_ece,
)
from monai_transfer.utils.bundle import parsed_content
from monai_transfer.utils.io import atomic_write_json, check_output_dir
from monai_transfer.utils.task import Task, derive_task

__all__ = [
    "CrossValidationError",
    "run_cross_validation",
    "check_folds",
    "default_output_dir",
    "read_datalists",
    "align_predictions",
    "choose_epoch",
]

logger = logging.getLogger(__name__)


class CrossValidationError(ValueError):
    """A cross-validation that cannot run as asked (found before the first fold trains); names the option, the fold
    and the class."""


def check_folds(
    items: Sequence[Mapping[str, Any]], fold_of: Sequence[int], folds: int, class_names: Sequence[str],
    group_key: str | None = None,
) -> None:  # fmt: skip
    """Refuse, before any fold trains, folds that cannot give a fold AUC, a temperature and a threshold.

    Every held-out fold must hold every class (its AUC and the threshold need both sides), and every fold's training
    part too (the model must see each class). A class with fewer images (or groups) than folds cannot satisfy this.

    Raises:
        CrossValidationError: naming ``--folds``, the fold, the class and its count in the training split.
    """
    labels = [int(x["label"]) for x in items]
    fold_of = np.asarray(fold_of)
    counts = {c: labels.count(c) for c in range(len(class_names))}
    groups: dict[int, set[str]] = {c: set() for c in counts}
    from monai_transfer.data.splits import group_of

    for x, y in zip(items, labels):
        groups.setdefault(y, set()).add(group_of(x, group_key))
    feasible = min(len(g) for g in groups.values()) if groups else 0
    for k in range(folds):
        held = [y for y, f in zip(labels, fold_of) if f == k]
        trained = [y for y, f in zip(labels, fold_of) if f != k]
        for c, name in enumerate(class_names):
            for part, ys in (("held-out part", held), ("training part", trained)):
                if c not in ys:
                    by = f" in {len(groups.get(c, ()))} group(s) by {group_key!r}" if group_key else ""
                    raise CrossValidationError(
                        f"--folds {folds}: fold {k} (of 0..{folds - 1}) has no {name!r} image in its {part} "
                        f"({len(ys)} image(s)); the training split holds {counts.get(c, 0)} {name!r} image(s){by}, "
                        "and every fold's held-out and training parts need each class (fold AUC, threshold): "
                        + (f"use --folds {feasible} or fewer" if feasible >= 2 else "no number of folds works")
                        + f", or add {name!r} images"
                    )


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


def align_predictions(
    probs: np.ndarray,
    labels: np.ndarray,
    ids: Sequence[str | None],
    items: Sequence[Mapping[str, Any]],
    aggregation: str | None = None,
    aggregation_k: int = 3,
    where: str = "",
    platt: VolumePlatt | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Predictions of an evaluator epoch in the order of ``items`` (one row per item).

    Rows are matched by id (``source_id`` or the image file name, compared with ``item["image"]``); without ids, in
    loader order. Several rows per item (the slices of a volume) are pooled with ``aggregation`` first
    (:func:`monai_transfer.data.aggregate_by_volume`), then Platt-scaled when ``platt`` is given.

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
        probs = platt(probs) if platt is not None else probs
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


def default_output_dir(bundle: str | os.PathLike) -> Path:
    """A new run folder for a cross-validation of ``bundle``: ``<bundle>/runs/cv-<YYYYmmdd-HHMMSS>`` (never the
    bundle folder itself, whose ``models/`` hold the template's trained model)."""
    return Path(bundle) / "runs" / f"cv-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}"


@dataclass
class _Plan:
    """What every run of one cross-validation shares: the configs, the data, the folds and the overrides."""

    files: list[str]
    meta: str
    log_file: Any
    class_names: list[str]
    task: Task
    dataset_dir: Any
    seed: int
    epochs: int
    aggregation: str | None
    aggregation_k: int
    train_items: list[dict[str, Any]]
    val_items: list[dict[str, Any]]
    fold_of: list[int]
    folds: int
    group_key: str | None
    out: Path
    override: dict[str, Any]
    base: dict[str, Any]

    @property
    def mode(self) -> str:
        return self.task.mode.value

    @property
    def cv_dir(self) -> Path:
        return self.out / "cv"

    @property
    def models_dir(self) -> Path:
        return self.out / "models"

    def held_out(self, k: int) -> np.ndarray:
        """Indices (into ``train_items``) of fold ``k``."""
        return np.flatnonzero(np.asarray(self.fold_of) == k)

    def workflow(self, override: Mapping[str, Any]) -> Any:
        """The bundle's training config as a ``ConfigWorkflow`` with the shared and the run's overrides."""
        from monai.bundle import ConfigWorkflow

        kw = {**self.base, **override}
        return ConfigWorkflow(
            config_file=self.files, meta_file=self.meta, logging_file=self.log_file, workflow_type="train", **kw
        )


def _check_options(folds: int, epochs: int, batch: Any) -> None:
    """Refuse fold, epoch and batch options that cannot work, before any fold trains."""
    if epochs < 1:
        raise CrossValidationError(f"--epochs must be at least 1, got {epochs}: every fold validates each epoch")
    if int(folds) < 2:
        raise CrossValidationError(f"--folds must be at least 2, got {folds}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise CrossValidationError(f"--batch_size must be an integer >= 1, got {batch!r}")


def _read_configs(config_file: Any, override: Mapping[str, Any]) -> tuple[list[str], Any, Any]:
    """The config files, their parser (with ``override``) and a reader that names a bad id before any fold trains."""
    from monai.bundle import ConfigParser

    files = [str(f) for f in config_file] if isinstance(config_file, (list, tuple)) else [str(config_file)]
    parser = ConfigParser()
    parser.read_config(files if len(files) > 1 else files[0])
    parser.update(pairs=dict(override))

    def parsed(key: str, default: Any = None) -> Any:  # a bad value of the configs or an override: named here
        if default is not None and key not in parser:
            return default
        return parsed_content(parser, key, f"cross-validation of {files}", CrossValidationError, override)

    return files, parser, parsed


def _plan(
    config_file: Any, folds: int, output_dir: Any, meta_file: Any, logging_file: Any, group_key: str | None,
    seed: int | None, override: dict[str, Any],
) -> _Plan:  # fmt: skip
    """Read the configs (with ``override``), split the training items into folds, create the run folder."""
    files, parser, parsed = _read_configs(config_file, override)
    configs_dir = Path(files[0]).parent
    log_file: Any = logging_file if logging_file is not None else str(configs_dir / "logging.conf")
    if log_file is not False and not Path(log_file).is_file():
        log_file = False
    datalists = parsed("datalists")
    if output_dir is None:
        output_dir = override["output_dir"] if "output_dir" in override else default_output_dir(configs_dir.parent)
    class_names = list(parsed("class_names"))
    seed = int(parsed("seed")) if seed is None else int(seed)
    train_items = list(datalists["train"])
    # the task as the training derives it (its `mode` id, else the training labels and class count: derive_task)
    config_mode = parsed("mode") if "mode" in parser else None
    task = derive_task(config_mode, labels=[x.get("label") for x in train_items], class_names=class_names)
    if task.is_multilabel:
        raise CrossValidationError(
            f"{files}: cross-validation takes binary and multiclass tasks; the training data are multilabel"
        )
    epochs = int(parsed("epochs"))
    _check_options(folds, epochs, parsed("batch_size", 1))
    linked = datalists.linked("train") if hasattr(datalists, "linked") else None  # near-duplicates share a fold
    base: dict[str, Any] = {k: v for k, v in override.items() if k not in ("output_dir",)}
    base.update(max_items=None, early_stop_patience=0, resume=False, val_interval=1, calibrate=False)
    try:
        fold_of = assign_folds(train_items, int(folds), seed=seed, group_key=group_key, linked=linked)
    except ValueError as e:  # fewer groups than folds
        raise CrossValidationError(f"--folds {folds}: {e}") from e
    check_folds(train_items, fold_of, int(folds), class_names, group_key)
    return _Plan(
        files=files, meta=str(meta_file) if meta_file is not None else str(configs_dir / "metadata.json"),
        log_file=log_file, class_names=class_names, task=task, dataset_dir=parsed("dataset_dir"), seed=seed,
        epochs=epochs, aggregation=parsed("aggregation") if "aggregation" in parser else None,
        aggregation_k=int(parsed("aggregation_k", 3)), train_items=train_items, val_items=list(datalists["val"]),
        fold_of=fold_of, folds=int(folds), group_key=group_key, out=check_output_dir(output_dir),
        override=dict(override), base=base,
    )  # fmt: skip


def _datalists_expr(path: Path) -> str:
    return f"$monai_transfer.cv.read_datalists({str(path)!r})"


def _run_folds(plan: _Plan) -> tuple[list[OOFCollector], list[str]]:
    """Step 1: one run of the bundle's training config per fold; the out-of-fold predictions of every epoch."""
    per_fold: list[OOFCollector] = []
    fold_models: list[str] = []
    for k in range(plan.folds):
        fold_dir = check_output_dir(plan.cv_dir / f"fold_{k}")
        lists = {
            "train": [dict(x) for x, f in zip(plan.train_items, plan.fold_of) if f != k],
            "val": [dict(x) for x, f in zip(plan.train_items, plan.fold_of) if f == k],
        }
        atomic_write_json(fold_dir / "datalists.json", lists)
        wf = plan.workflow(
            {"output_dir": str(fold_dir), "datalists": _datalists_expr(fold_dir / "datalists.json"), "n_bootstrap": 0}
        )
        wf.initialize()
        collector = OOFCollector()
        collector.attach(
            wf.parser.get_parsed_content("train#trainer"), wf.parser.get_parsed_content("validate#evaluator")
        )
        logger.info("cross-validation: fold %d/%d (train %d, held out %d)", k + 1, plan.folds, len(lists["train"]),
                    len(lists["val"]))  # fmt: skip
        wf.run()
        wf.finalize()
        if not collector.epochs:
            raise RuntimeError(f"fold {k}: no per-epoch validation was recorded (check val_interval/epochs)")
        per_fold.append(collector)
        fold_models.append(str(fold_dir / "models" / "model.pt"))
    return per_fold, fold_models


def _oof(
    plan: _Plan, per_fold: Sequence[OOFCollector], epoch: int, temperature: float | None = None,
    platt: VolumePlatt | None = None,
) -> np.ndarray:  # fmt: skip
    """The out-of-fold probabilities of ``epoch`` in the order of the training items (temperature-scaled first when
    ``temperature`` is given: per evaluator row, before any pooling per volume; Platt-scaled after the pooling when
    ``platt`` is given)."""
    k_dim = max(per_fold[0].epochs[epoch][0].shape[1], 2)
    oof = np.full((len(plan.train_items), k_dim), np.nan)
    labels = np.array([int(x["label"]) for x in plan.train_items])
    for k, c in enumerate(per_fold):
        idx = plan.held_out(k)
        p_k, y_k, ids_k = c.epochs[epoch]
        if temperature is not None:
            p_k = apply_temperature(p_k, temperature, plan.mode, inputs="probs")
        probs, y = align_predictions(
            p_k, y_k, ids_k, [plan.train_items[i] for i in idx], plan.aggregation, plan.aggregation_k,
            f"fold {k} epoch {epoch}", platt,
        )  # fmt: skip
        if not np.array_equal(labels[idx], y):
            raise RuntimeError(f"fold {k} epoch {epoch}: the held-out labels do not match the fold's items")
        oof[idx] = probs
    return oof


def _score_epochs(plan: _Plan, per_fold: Sequence[OOFCollector]) -> tuple[list[dict[str, Any]], int]:
    """Step 2: per-epoch fold AUCs and pooled OOF AUC; the number of epochs with the best mean fold AUC."""
    n_epochs = min(max(c.epochs) for c in per_fold)
    labels = np.array([int(x["label"]) for x in plan.train_items])
    per_epoch: list[dict[str, Any]] = []
    for e in range(1, n_epochs + 1):
        oof = _oof(plan, per_fold, e)
        aucs = [_auc(oof[plan.held_out(k)], labels[plan.held_out(k)], plan.mode) for k in range(len(per_fold))]
        defined = [a for a in aucs if np.isfinite(a)]
        per_epoch.append(
            {"epoch": e, "fold_auc": aucs, "mean_fold_auc": float(np.mean(defined)) if defined else None,
             "pooled_oof_auc": _auc(oof, labels, plan.mode)}
        )  # fmt: skip
    return per_epoch, choose_epoch([e["fold_auc"] for e in per_epoch])


def _calibrate(
    plan: _Plan, per_fold: Sequence[OOFCollector], epoch: int, fitted_on: str
) -> tuple[float, VolumePlatt | None, dict[str, Any], Path]:
    """Step 3a: one temperature applied to the rows the evaluator post-processes (one per image, or one per slice for
    volume bundles), so that ``ApplyTemperatured`` in the post-processing reproduces it. Images: fitted (NLL) on the
    OOF image predictions. Volumes: chosen to minimise the NLL of the pooled OOF VOLUME probabilities (the slice
    probabilities scaled, then pooled per volume as the evaluator does), so that what it calibrates is what is scored
    (:func:`_fit_volume_temperature`), then, for binary volumes, the Platt step of the pooled probabilities
    (:func:`_fit_volume_platt`). Saved as ``models/calibration.json``."""
    rows_p = np.concatenate([c.epochs[epoch][0] for c in per_fold])
    rows_y = np.concatenate([c.epochs[epoch][1] for c in per_fold])
    platt = None
    if plan.aggregation is not None and len(rows_p) > len(plan.train_items):
        temperature, cal_info = _fit_volume_temperature(plan, per_fold, epoch, fitted_on)
        if plan.task.is_binary:
            platt, cal_info = _fit_volume_platt(plan, per_fold, epoch, temperature, cal_info)
    else:
        temperature = fit_temperature(rows_p, rows_y, plan.mode, inputs="probs")
        cal_info = {
            "fitted_on": f"{fitted_on}, per image",
            **calibration_summary(rows_p, rows_y, temperature, plan.mode, inputs="probs"),
        }
    cal_path = save_calibration(plan.models_dir / "calibration.json", temperature, mode=plan.mode,
                                **{k: v for k, v in cal_info.items() if k != "temperature"})  # fmt: skip
    return temperature, platt, cal_info, cal_path


def _volume_nll(probs: np.ndarray, labels: np.ndarray) -> float:
    p = np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0)
    return float(-np.mean(np.log(p)))


def _fit_volume_temperature(
    plan: _Plan, per_fold: Sequence[OOFCollector], epoch: int, fitted_on: str
) -> tuple[float, dict[str, Any]]:
    """The temperature of the slice logits that minimises the NLL of the pooled out-of-fold volume probabilities
    (golden-section search on ``log T`` within :data:`DEFAULT_TEMPERATURE_BOUNDS`), with the volume-level NLL, ECE
    and Brier score before and after."""
    labels = np.array([int(x["label"]) for x in plan.train_items])
    lo, hi = (math.log(b) for b in DEFAULT_TEMPERATURE_BOUNDS)

    def f(log_t: float) -> float:
        return _volume_nll(_oof(plan, per_fold, epoch, math.exp(log_t)), labels)

    lo, hi = golden_section_bracket(f, lo, hi, 1e-4)
    candidates = [0.0, (lo + hi) / 2]  # T = 1 wins ties: no change unless it lowers the volume NLL
    temperature = math.exp(min(candidates, key=lambda v: (f(v), abs(v))))
    if min(abs(math.log(temperature) - math.log(b)) for b in DEFAULT_TEMPERATURE_BOUNDS) < 1e-3:
        logger.warning(
            "cross-validation: the volume temperature %.4g is at a bound of %s (%d volumes): the volumes "
            "may be perfectly separated or too few",
            temperature,
            DEFAULT_TEMPERATURE_BOUNDS,
            len(labels),
        )
    info: dict[str, Any] = {
        "fitted_on": f"{fitted_on}, per volume: one temperature of the slice logits, chosen to minimise the NLL of "
        f"the {plan.aggregation}-pooled volume probabilities (applied per slice, then pooled, as at inference)",
        "level": "volume", "temperature": temperature, "n_samples": len(labels), "ece_n_bins": DEFAULT_ECE_BINS,
        "n_slices": int(sum(len(c.epochs[epoch][0]) for c in per_fold)),
    }  # fmt: skip
    for tag, t in (("before", None), ("after", temperature)):
        p = _oof(plan, per_fold, epoch, t)
        scored = p[:, 1] if plan.task.is_binary else p
        info[f"nll_{tag}"] = _volume_nll(p, labels)
        info[f"ece_{tag}"] = compute_ece(scored, labels, plan.mode)
        info[f"brier_{tag}"] = compute_brier(scored, labels, plan.mode)
    return temperature, info


def _fit_volume_platt(
    plan: _Plan, per_fold: Sequence[OOFCollector], epoch: int, temperature: float, info: dict[str, Any]
) -> tuple[VolumePlatt | None, dict[str, Any]]:
    """The Platt step of the pooled OOF volume probabilities (after ``temperature``), and ``info`` updated.

    Rule, fixed before any result: fit ``(slope, intercept)`` on all OOF volumes; keep it only when the NLL of its
    5-fold cross-fitted probabilities (each volume scaled by a fit on the other volumes) is below the NLL of the
    temperature alone, and its slope is positive. ``info["volume_platt_selection"]`` records the comparison, with the
    top-label ECE and the positive-class ECE (the gap of the positive-class reliability diagram) of both.
    """
    labels = np.array([int(x["label"]) for x in plan.train_items])
    p_t = _oof(plan, per_fold, epoch, temperature)[:, 1]
    slope, intercept = fit_platt(p_t, labels)
    sel: dict[str, Any] = {
        "rule": "kept when the NLL of its 5-fold cross-fitted probabilities on the OOF volumes is below that of the "
        "temperature alone, with a positive slope",
        "slope": slope, "intercept": intercept, "aggregation": aggregation_key(plan.aggregation, plan.aggregation_k),
        "nll_temperature_only": platt_nll(p_t, labels), "ece_temperature_only": compute_ece(p_t, labels, "binary"),
        "ece_positive_class_temperature_only": positive_class_ece(p_t, labels),
    }  # fmt: skip
    try:
        q = crossfit_platt(p_t, labels, folds=5, seed=plan.seed)
    except ValueError as e:
        sel.update(kept=False, why=str(e))
        return None, {**info, "volume_platt_selection": sel}
    sel.update(nll_crossfit=platt_nll(q, labels), ece_crossfit=compute_ece(q, labels, "binary"),
               ece_positive_class_crossfit=positive_class_ece(q, labels))  # fmt: skip
    kept = slope > 0 and sel["nll_crossfit"] < sel["nll_temperature_only"]
    sel["kept"] = bool(kept)
    if not kept:
        return None, {**info, "volume_platt_selection": sel}
    platt = VolumePlatt(slope, intercept, sel["aggregation"])
    p = platt(p_t)
    out = {**info, **{f"{m}_after_temperature_only": info[f"{m}_after"] for m in ("nll", "ece", "brier")}}
    out.update(
        fitted_on=info["fitted_on"] + "; then a Platt step of the pooled volume probabilities fitted on the same "
        "OOF volumes (applied after pooling, as at inference)",
        volume_platt=platt.to_dict(), volume_platt_selection=sel, nll_after=platt_nll(p, labels),
        ece_after=compute_ece(p, labels, "binary"), brier_after=compute_brier(p, labels, "binary"),
    )  # fmt: skip
    return platt, out


def _threshold(
    plan: _Plan, oof_cal: np.ndarray, method: str, target_sensitivity: float, fitted_on: str, cal_path: Path | None
) -> tuple[float | None, Path | None]:
    """Step 3b: the threshold chosen on the calibrated OOF probabilities (binary tasks; ``models/threshold.json``)."""
    if not plan.task.uses_threshold:
        return None, None
    labels = np.array([int(x["label"]) for x in plan.train_items])
    threshold = float(select_threshold(oof_cal, labels, method, target_sensitivity, plan.task))
    thr_path = save_threshold(
        plan.models_dir / "threshold.json", threshold, method=method,
        target_sensitivity=target_sensitivity if method == "sensitivity" else None,
        mode=plan.mode, class_names=plan.class_names, n_samples=len(labels), chosen_on=fitted_on,
        **calibration_binding(cal_path),
    )  # fmt: skip
    return threshold, thr_path


def _write_oof_report(
    plan: _Plan, oof: np.ndarray, oof_cal: np.ndarray, threshold: float | None, cal_info: dict | None, fitted_on: str
) -> None:
    """Step 3c: the report of the (calibrated) out-of-fold predictions, ``cv/oof/``."""
    from monai_transfer.reports.writer import write_classification_report

    labels = np.array([int(x["label"]) for x in plan.train_items])
    calibrated = cal_info is not None
    write_classification_report(
        plan.cv_dir / "oof", labels, oof_cal, ids=_ids(plan), class_names=plan.class_names, threshold=threshold,
        mode=plan.mode, meta={"what": fitted_on, "calibrated": calibrated},
        n_bootstrap=int(plan.override.get("n_bootstrap", 1000)), uncalibrated_prob=oof if calibrated else None,
        calibration=cal_info, prevalence=plan.override.get("prevalence") if plan.task.is_binary else None,
        training_counts={n: int(np.sum(labels == i)) for i, n in enumerate(plan.class_names)},
        id_root=plan.dataset_dir,  # ids as in every predictions.csv (case_id)
    )  # fmt: skip


def _ids(plan: _Plan) -> list[str]:
    return [str(x.get("image", i)) for i, x in enumerate(plan.train_items)]


@dataclass
class _Choice:
    """What the out-of-fold predictions chose, and where it was saved."""

    epochs: int
    fitted_on: str
    temperature: float | None = None
    platt: VolumePlatt | None = None
    calibration: dict[str, Any] | None = None
    calibration_path: Path | None = None
    threshold: float | None = None
    threshold_path: Path | None = None


def _choose(
    plan: _Plan, per_fold: Sequence[OOFCollector], best: int, calibrate: bool, method: str, target_sensitivity: float
) -> _Choice:
    """Step 3: on the OOF predictions of epoch ``best``, the temperature, then the threshold on the calibrated
    probabilities; the report of the calibrated OOF predictions."""
    fitted_on = f"out-of-fold predictions of {plan.folds}-fold cross-validation on the training split (epoch {best})"
    c = _Choice(best, fitted_on)
    plan.models_dir.mkdir(parents=True, exist_ok=True)
    if calibrate:
        c.temperature, c.platt, c.calibration, c.calibration_path = _calibrate(plan, per_fold, best, fitted_on)
    oof, oof_cal = _oof(plan, per_fold, best), _oof(plan, per_fold, best, c.temperature, c.platt)
    c.threshold, c.threshold_path = _threshold(plan, oof_cal, method, target_sensitivity, fitted_on, c.calibration_path)
    _write_oof_report(plan, oof, oof_cal, c.threshold, c.calibration, fitted_on)
    return c


def _selection(plan: _Plan, c: _Choice, method: str, final_fit: bool) -> dict[str, str]:
    """Which data chose what, in words (``cv.json`` and the validation report's ``selection`` block)."""
    per = f", per volume ({plan.aggregation}-pooled slice probabilities)" if plan.aggregation is not None else ""
    return {
        "epochs": f"{c.epochs}: best mean fold AUC{per} over the {plan.folds} held-out folds of the training split",
        "temperature": (f"{c.temperature:.6g}: fitted (NLL) on the {c.calibration['fitted_on']}"
                        if c.temperature is not None and c.calibration else "none"),
        **({} if plan.aggregation is None else {"volume_platt": _platt_words(c)}),
        "threshold": (f"{c.threshold:.6g}: {method} on the calibrated {c.fitted_on}{per}" if c.threshold is not None
                      else "arg-max"),
        "final_fit": (
            f"whole training split ({len(plan.train_items)} items), stopped after {c.epochs} of the {plan.epochs}-"
            "epoch learning-rate schedule the folds followed"
            if final_fit
            else "not run"
        ),
        "validation_split": "scored once at the end with the choices above; it chose nothing",
    }  # fmt: skip


def _platt_words(c: _Choice) -> str:
    sel = (c.calibration or {}).get("volume_platt_selection")
    if sel is None:
        return "none (not a binary volume task, or no calibration)"
    if c.platt is None:
        return f"none: not kept by its rule ({sel.get('why') or sel['rule']}) on the {c.fitted_on}"
    return (f"slope {c.platt.slope:.4g}, intercept {c.platt.intercept:.4g} on the {c.platt.aggregation}-pooled "
            f"volume probabilities: fitted (NLL) on the {c.fitted_on}; {sel['rule']}")  # fmt: skip


def _final_fit(plan: _Plan, best_epoch: int, thr_path: Path | None, cal_path: Path | None) -> Path:
    """Step 4: the final model on the whole training split, stopped after ``best_epoch``; val is scored once, at the
    end, with the calibration (prepended to the validation post-processing) and threshold chosen out-of-fold.

    Returns:
        the validation report's ``metrics.json``.
    """
    final_lists = {"train": plan.train_items, "val": plan.val_items}
    atomic_write_json(plan.cv_dir / "final_datalists.json", final_lists)
    wf = plan.workflow(
        {"output_dir": str(plan.out), "datalists": _datalists_expr(plan.cv_dir / "final_datalists.json"),
         "train#trainer#max_epochs": best_epoch, "val_interval": best_epoch,
         "validate#report_writer#select_threshold_on": None, "validate#report_writer#threshold_path": None,
         "validate#report_writer#threshold": str(thr_path) if thr_path else None}
    )  # fmt: skip
    if cal_path is not None and plan.aggregation is None:  # before/after on val (exact per image, not per volume)
        wf.parser["validate#report_writer#applied_calibration"] = str(cal_path)
    if cal_path is not None and plan.aggregation is not None:  # the Platt step of the pooled volumes, if any
        wf.parser["validate#report_writer#volume_calibration"] = str(cal_path)
    if cal_path is not None:
        post = wf.parser["validate#postprocessing#transforms"]
        if not isinstance(post, list):
            raise ValueError(
                f"{plan.files}: validate#postprocessing#transforms must be a list to prepend ApplyTemperatured, "
                f"got {post!r}"
            )
        wf.parser["validate#postprocessing#transforms"] = [
            {
                "_target_": "monai_transfer.transforms.ApplyTemperatured",
                "keys": "pred",
                "temperature": str(cal_path),
                "mode": plan.mode,
            },
            *post,
        ]
    wf.initialize()
    wf.run()
    wf.finalize()
    return Path(wf.parser.get_parsed_content("report_dir")) / "metrics.json"


def _write_selection_into_report(report: Path, selection: Mapping[str, Any]) -> None:
    obj = json.loads(report.read_text(encoding="utf-8"))
    obj = {**{k: obj[k] for k in list(obj)[:2]}, "selection": dict(selection), **obj}  # near the top
    atomic_write_json(report, obj)


def _summary(
    plan: _Plan, per_epoch: list, c: _Choice, selection: dict[str, str], fold_models: list[str]
) -> dict[str, Any]:
    """The content of ``cv/cv.json``."""
    return {
        "folds": plan.folds,
        "seed": plan.seed,
        "group_key": plan.group_key,
        "config_file": plan.files,
        "overrides": {k: v for k, v in plan.override.items() if isinstance(v, (str, int, float, bool, type(None)))},
        "n_train": len(plan.train_items),
        "n_val": len(plan.val_items),
        "fold_sizes": [int(len(plan.held_out(k))) for k in range(plan.folds)],
        "epochs_planned": plan.epochs,
        "per_epoch": per_epoch,
        "chosen": {
            "epochs": c.epochs,
            "temperature": c.temperature,
            "threshold": c.threshold,
            "volume_platt": None if c.platt is None else c.platt.to_dict(),
        },
        "selection": selection,
        "calibration": c.calibration,
        "files": {
            "calibration": str(c.calibration_path) if c.calibration_path else None,
            "threshold": str(c.threshold_path) if c.threshold_path else None,
            "oof_report": str(plan.cv_dir / "oof" / "metrics.json"),
            "fold_models": fold_models,
        },
    }


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
        output_dir: run folder; default ``override["output_dir"]``, else a new folder
            :func:`default_output_dir` (``<bundle>/runs/cv-<timestamp>``), never the template bundle itself.
        meta_file: the bundle's ``metadata.json``; default ``configs/metadata.json`` beside ``config_file``.
        logging_file: the bundle's ``logging.conf``; default beside ``config_file`` (False: no logging config).
        threshold_method: ``"youden"``, ``"sensitivity"`` or ``"accuracy"`` (binary tasks), chosen on the calibrated
            OOF predictions.
        target_sensitivity: target of ``threshold_method="sensitivity"``.
        calibrate: fit a temperature on the OOF predictions (before the threshold).
        final_fit: train the final model on the whole training split and score the validation split once.
        group_key: patient/volume key the folds must not split.
        seed: fold seed; default the config's ``seed``.
        override: bundle config overrides for every run (``epochs``, ``image_size``, ``max_items``, ...).

    Returns:
        the ``cv.json`` content.

    Raises:
        ValueError: an unknown ``threshold_method``.
        CrossValidationError: before the first fold trains, when the folds cannot work (a class with fewer images than
            folds, a fold without a class, multi-label data, ``epochs`` < 1, a config id that cannot be built); the
            message names the option, the fold and the class.
    """
    if threshold_method not in THRESHOLD_METHODS:
        raise ValueError(f"threshold_method must be one of {THRESHOLD_METHODS}, got {threshold_method!r}")
    plan = _plan(config_file, folds, output_dir, meta_file, logging_file, group_key, seed, override)
    logger.info("cross-validation: %d training items in %d folds; %d val items untouched; output %s",
                len(plan.train_items), plan.folds, len(plan.val_items), plan.out)  # fmt: skip
    per_fold, fold_models = _run_folds(plan)
    per_epoch, best = _score_epochs(plan, per_fold)
    choice = _choose(plan, per_fold, best, calibrate, threshold_method, target_sensitivity)
    selection = _selection(plan, choice, threshold_method, final_fit)
    summary = _summary(plan, per_epoch, choice, selection, fold_models)
    atomic_write_json(plan.cv_dir / "fold_assignments.json", dict(zip(_ids(plan), plan.fold_of)))
    atomic_write_json(plan.cv_dir / "cv.json", summary)
    if final_fit:
        report = _final_fit(plan, best, choice.threshold_path, choice.calibration_path)
        if report.is_file():
            _write_selection_into_report(report, {**selection, "cv_summary": str(plan.cv_dir / "cv.json")})
            summary["files"]["val_report"] = str(report)
        summary["files"]["model"] = str(plan.models_dir / "model.pt")
        atomic_write_json(plan.cv_dir / "cv.json", summary)
    return summary


def _auc(probs: np.ndarray, y: np.ndarray, mode: str) -> float:
    import warnings

    from monai_transfer.metrics.functional import UndefinedMetricWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        v = compute_auc(probs, y, mode)
    return float("nan") if v is None else float(v)  # NaN (null in JSON) when a fold lacks a class
