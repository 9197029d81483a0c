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
"""Operating points: choose a decision threshold on validation data, store it with the model, load it for testing.

The task (:class:`~monai_transfer.utils.task.Task`) says whether a threshold applies and how many: one for a binary
task, one per label for a multi-label task, none for a multi-class task (arg-max); it is always applied by
:func:`~monai_transfer.utils.task.apply_threshold` (``p_positive >= threshold``). Candidate thresholds are the
distinct scores of the validation set, so the chosen value reproduces the validation sensitivity/specificity
exactly. :func:`resolve_task_threshold` reads the threshold(s) a task needs.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np

from monai_transfer.metrics.functional import UndefinedMetricWarning, compute_roc_curve, prepare_inputs
from monai_transfer.metrics.shift import positive_scores
from monai_transfer.utils.io import atomic_write_json, read_json_file
from monai_transfer.utils.task import Task, as_task

__all__ = [
    "THRESHOLD_METHODS",
    "SHIFT_ROBUST_METHOD",
    "select_shift_robust_threshold",
    "DEFAULT_THRESHOLD",
    "ThresholdLike",
    "select_threshold",
    "save_threshold",
    "load_threshold",
    "resolve_threshold",
    "resolve_binary_threshold",
    "resolve_multilabel_threshold",
    "resolve_task_threshold",
    "calibration_binding",
    "check_threshold_calibration",
]

logger = logging.getLogger(__name__)

#: a threshold given directly, as a JSON file written by ``save_threshold``, or as a callable returning it.
ThresholdLike = Union[float, Sequence[float], str, os.PathLike, Callable[[], Any], None]

THRESHOLD_METHODS = ("youden", "sensitivity", "accuracy")
#: the operating point chosen under the acquisition-shift suite (:func:`select_shift_robust_threshold`); it needs
#: predictions on corrupted images, so it is not one of the bundle's ``threshold_method`` values
SHIFT_ROBUST_METHOD = "shift_robust"
#: the threshold of a multi-label label that cannot be selected (absent from the validation data)
DEFAULT_THRESHOLD = 0.5


def _select_one(score: np.ndarray, label: np.ndarray, method: str, target_sensitivity: float, name: str) -> float:
    n_pos = int(label.sum())
    if n_pos == 0 or n_pos == len(label):
        raise ValueError(
            f"cannot select a threshold{name}: the data have {n_pos} positive and {len(label) - n_pos} negative "
            "samples; both classes are needed"
        )
    fpr, tpr, thr = compute_roc_curve(score, label)
    fpr, tpr, thr = fpr[1:], tpr[1:], thr[1:]  # drop the (0, 0) point at +inf
    if method == "youden":
        j = tpr - fpr
        return float(thr[int(np.argmax(j))])  # first maximum = the highest threshold among ties
    if method == "accuracy":  # correct decisions at the data's own prevalence: tp + tn
        correct = tpr * n_pos + (1.0 - fpr) * (len(label) - n_pos)
        return float(thr[int(np.argmax(correct))])  # the highest threshold among ties
    ok = np.flatnonzero(tpr >= target_sensitivity - 1e-12)
    return float(thr[ok[0]])  # highest threshold (best specificity) that reaches the target sensitivity


def select_threshold(
    y_prob: Any,
    y_true: Any,
    method: str = "youden",
    target_sensitivity: float = 0.9,
    mode: str | Task = "binary",
) -> float | list[float]:
    """Choose the decision threshold on validation data.

    Args:
        y_prob: probabilities (see :mod:`monai_transfer.metrics.functional` for shapes).
        y_true: labels.
        method: ``"youden"`` maximises Youden's J = sensitivity + specificity - 1 (the highest threshold wins ties);
            ``"sensitivity"`` takes the highest threshold whose sensitivity is at least ``target_sensitivity``
            (i.e. the best specificity at that sensitivity); ``"accuracy"`` maximises the accuracy at the prevalence of
            these data (the highest threshold wins ties): the operating point to compare with benchmarks that report
            ACC, which moves with the prevalence, so a site with another prevalence should re-choose it.
        target_sensitivity: in (0, 1], used by ``method="sensitivity"``; default 0.9.
        mode: ``"binary"`` (returns a float) or ``"multilabel"`` (returns one threshold per label, each chosen on
            that label alone). Multi-class tasks predict the arg-max and have no threshold.

    A multi-label label whose positives (or negatives) are all absent from the data keeps ``DEFAULT_THRESHOLD``
    (0.5), with an :class:`~monai_transfer.metrics.functional.UndefinedMetricWarning` naming it.

    Raises:
        ValueError: unknown ``method``/``mode``, ``target_sensitivity`` outside (0, 1], or (binary) a class absent
            from the data.
    """
    if method == SHIFT_ROBUST_METHOD:
        raise ValueError(
            f"method {SHIFT_ROBUST_METHOD!r} needs predictions under the shift suite: use "
            "select_shift_robust_threshold(y_true, clean_prob, shifted) on out-of-fold predictions "
            f"(scripts/bench/accuracy_xray.py does); select_threshold takes one of {THRESHOLD_METHODS}"
        )
    if method not in THRESHOLD_METHODS:
        raise ValueError(f"method must be one of {THRESHOLD_METHODS}, got {method!r}")
    if not 0.0 < float(target_sensitivity) <= 1.0:
        raise ValueError(f"target_sensitivity must be in (0, 1], got {target_sensitivity}")
    task = as_task(mode)
    if not task.uses_threshold:
        raise ValueError(f"mode={task.mode!r} predicts the arg-max and has no decision threshold to select")
    p, y = prepare_inputs(y_prob, y_true, task)
    if task.is_binary:
        return _select_one(p[:, 0], y[:, 0], method, float(target_sensitivity), "")
    out = []
    for k in range(p.shape[1]):
        n_pos = int(y[:, k].sum())
        if n_pos in (0, len(y)):  # one label absent (or always present) in these data: keep the default
            warnings.warn(
                f"cannot select a threshold for label {k}: the data have {n_pos} positive and {len(y) - n_pos} "
                f"negative samples; label {k} keeps the default threshold {DEFAULT_THRESHOLD}",
                UndefinedMetricWarning,
                stacklevel=2,
            )
            out.append(DEFAULT_THRESHOLD)
        else:
            out.append(_select_one(p[:, k], y[:, k], method, float(target_sensitivity), f" for label {k}"))
    return out


def _rates(score: np.ndarray, label: np.ndarray, cands: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sensitivity and specificity of ``score >= t`` for every ``t`` of ``cands``."""
    pos, neg = np.sort(score[label == 1]), np.sort(score[label == 0])
    sens = 1.0 - np.searchsorted(pos, cands, side="left") / max(len(pos), 1)
    spec = np.searchsorted(neg, cands, side="left") / max(len(neg), 1)
    return sens, spec


def _family_rates(
    y: np.ndarray, clean_prob: Any, shifted: Mapping[str, Any], n_candidates: int
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, int]:
    """Family names (``"clean"`` first), candidate thresholds and the ``(families, candidates)`` mean sensitivity
    and specificity over each family's severities."""
    groups: dict[str, list[np.ndarray]] = {"clean": [positive_scores(clean_prob)]}
    for family, conds in shifted.items():
        groups[str(family)] = [positive_scores(p) for p in (conds.values() if isinstance(conds, Mapping) else conds)]
    for family, conds in groups.items():
        for p in conds:
            if len(p) != len(y):
                raise ValueError(f"shift family {family!r}: {len(p)} probabilities for {len(y)} labels")
    pooled = np.concatenate([p for conds in groups.values() for p in conds])
    cands = np.unique(np.quantile(pooled, np.linspace(0.0, 1.0, int(n_candidates))))
    rates = {f: [_rates(p, y, cands) for p in conds] for f, conds in groups.items()}
    sens = np.stack([np.mean([r[0] for r in rs], axis=0) for rs in rates.values()])
    spec = np.stack([np.mean([r[1] for r in rs], axis=0) for rs in rates.values()])
    return list(rates), cands, sens, spec, int(sum(len(c) for c in groups.values()))


def _robust_index(sens: np.ndarray, spec: np.ndarray, target: float | None) -> tuple[int, str | None]:
    """Index of the shift-robust candidate (see :func:`select_shift_robust_threshold`) and the fallback note."""
    if target is not None:
        ok = sens.min(0) >= float(target) - 1e-12
        if ok.any():
            return int(np.argmax(np.where(ok, spec.min(0), -np.inf))), None
    bacc = (sens + spec) / 2.0
    worst, mean = bacc.min(0), bacc.mean(0)
    best = np.flatnonzero(worst >= worst.max() - 1e-12)
    note = f"no threshold keeps every family's sensitivity >= {target}: balanced-accuracy rule" if target else None
    return int(best[np.argmax(mean[best])]), note


def select_shift_robust_threshold(
    y_true: Any,
    clean_prob: Any,
    shifted: Mapping[str, Sequence[Any] | Mapping[Any, Any]],
    target_sensitivity: float | None = None,
    n_candidates: int = 2001,
) -> tuple[float, dict[str, Any]]:
    """A binary operating point that holds across the acquisition-shift suite (``method="shift_robust"``).

    Every family (``"clean"`` is one more) scores a threshold by the mean, over its severities, of the sensitivity,
    specificity and balanced accuracy. Without ``target_sensitivity`` the threshold maximises the WORST family's
    balanced accuracy (ties: the best mean over families, then the lowest threshold); with it, among the thresholds
    whose worst-family sensitivity reaches the target, the one with the best worst-family specificity (none reaching
    it: the worst-family balanced-accuracy rule, recorded in ``info["fallback"]``). Choose it on out-of-fold
    predictions of the training data, never on val or test.

    Args:
        y_true: 0/1 labels ``(N,)``.
        clean_prob: binary probabilities of the unchanged images (``(N,)`` or ``(N, 2)``).
        shifted: ``{family: {severity: probabilities}}`` (or a list per family) in the order of ``y_true``.
        target_sensitivity: in (0, 1], or ``None``.
        n_candidates: candidate thresholds: quantiles of all the scores.

    Returns:
        ``(threshold, info)``; ``info`` records the rule, the worst family and its rates at the threshold, and the
        number of conditions, for ``threshold.json``/``metrics.json``.

    Raises:
        ValueError: a class absent, a condition whose length differs from the labels, a bad target.
    """
    y = np.asarray(y_true).reshape(-1).astype(np.int64)
    if not (y == 1).any() or not (y == 0).any():
        raise ValueError(f"cannot select a {SHIFT_ROBUST_METHOD} threshold: the labels need both classes")
    if target_sensitivity is not None and not 0.0 < float(target_sensitivity) <= 1.0:
        raise ValueError(f"target_sensitivity must be in (0, 1] or None, got {target_sensitivity}")
    names, cands, sens, spec, n_conditions = _family_rates(y, clean_prob, shifted, n_candidates)
    bacc = (sens + spec) / 2.0
    i, fallback = _robust_index(sens, spec, target_sensitivity)
    w = int(np.argmin(bacc[:, i]))
    rule = (
        "maximise the worst family's balanced accuracy (family = mean over its severities; clean is a family)"
        if target_sensitivity is None
        else f"worst-family sensitivity >= {target_sensitivity}, then maximise the worst family's specificity"
    )
    info = {
        "method": SHIFT_ROBUST_METHOD,
        "rule": rule,
        "target_sensitivity": target_sensitivity,
        "fallback": fallback,
        "families": names,
        "n_conditions": n_conditions,
        "worst_family": names[w],
        "worst_family_sensitivity": float(sens[w, i]),
        "worst_family_specificity": float(spec[w, i]),
        "worst_family_balanced_accuracy": float(bacc[w, i]),
        "clean_sensitivity": float(sens[0, i]),
        "clean_specificity": float(spec[0, i]),
    }
    return float(cands[i]), info


def save_threshold(
    path: str | os.PathLike,
    threshold: float | Sequence[float],
    method: str | None = None,
    target_sensitivity: float | None = None,
    **info: Any,
) -> Path:
    """Write the threshold as JSON (atomically), e.g. ``models/threshold.json`` beside ``model.pt``.

    Args:
        path: output ``.json`` file.
        threshold: a float, or one per label.
        method: how it was chosen (``"youden"``, ``"sensitivity"``).
        target_sensitivity: the target of ``method="sensitivity"``.
        info: extra JSON-friendly entries (e.g. ``mode``, ``class_names``, validation ``sensitivity``,
            ``specificity``, ``n_samples``).

    Returns:
        the written path.
    """
    t = np.asarray(threshold, dtype=np.float64).reshape(-1)
    value: float | list[float] = float(t[0]) if np.ndim(threshold) == 0 else [float(v) for v in t]
    payload = {"threshold": value, "method": method, "target_sensitivity": target_sensitivity, **info}
    return atomic_write_json(path, payload)


def load_threshold(path: str | os.PathLike) -> float | list[float]:
    """Read a threshold written by :func:`save_threshold` (or a JSON number / ``{"threshold": ...}`` file).

    Thresholds apply to probabilities, so each value must be finite and in [0, 1]; ``7.0``, ``NaN`` or ``Infinity``
    (which Python's JSON reader accepts) are refused.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not valid JSON (or not UTF-8), holds no numeric threshold, or a value that is not
            finite or outside [0, 1]; the message names the file and the value.
    """
    path = Path(path)
    obj = read_json_file(path, "threshold file")
    value = obj.get("threshold") if isinstance(obj, dict) else obj
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        values, single = [value], True
    elif (
        isinstance(value, list)
        and value
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        values, single = value, False
    else:
        raise ValueError(f"threshold file {path} holds no numeric 'threshold' entry, got {value!r}")
    for i, v in enumerate(values):
        if not (math.isfinite(v) and 0.0 <= v <= 1.0):
            where = "" if single else f" (entry {i})"
            raise ValueError(
                f"threshold file {path}: threshold {float(v)!r}{where} is not a probability threshold; it must be "
                "finite and in [0, 1]"
            )
    return float(values[0]) if single else [float(v) for v in values]


def resolve_threshold(threshold: ThresholdLike, default: float = 0.5) -> float | list[float]:
    """Turn a :data:`ThresholdLike` into a number (or a per-label list) at the time it is needed.

    The one threshold resolver of the project: metrics, reports, the prediction writer and the evaluation CLI use it
    (directly or through :func:`resolve_binary_threshold`).

    Args:
        threshold: ``None`` (use ``default``), a float, a per-label sequence, a path to a threshold JSON file
            (read now, so a file written after construction is picked up), or a zero-argument callable.
        default: value used for ``None``.

    Raises:
        FileNotFoundError / ValueError: a threshold file is missing or invalid (see :func:`load_threshold`).
    """
    if threshold is None:
        return float(default)
    if isinstance(threshold, (str, os.PathLike)):
        return load_threshold(threshold)
    if callable(threshold):
        return resolve_threshold(threshold(), default)
    if isinstance(threshold, (int, float)):
        return float(threshold)
    return [float(t) for t in threshold]


def _threshold_argument(threshold: Any, missing_ok: bool) -> tuple[Any, bool]:
    """A threshold argument as given to the resolvers: a numeric string becomes a float; returns ``(threshold,
    missing)``, ``missing`` True for a path that does not exist (only with ``missing_ok``).

    Raises:
        ValueError: a string that is neither a number nor an existing file, without ``missing_ok``.
        FileNotFoundError: a path that does not exist, without ``missing_ok``.
    """
    if isinstance(threshold, str):
        try:
            threshold = float(threshold)
        except ValueError:
            if not Path(threshold).is_file() and not missing_ok:
                raise ValueError(f"threshold {threshold!r} is neither a number nor an existing file") from None
    if isinstance(threshold, (str, os.PathLike)) and not Path(threshold).is_file():
        if not missing_ok:
            raise FileNotFoundError(f"threshold file not found: {threshold}")
        return threshold, True
    return threshold, False


def resolve_binary_threshold(
    threshold: ThresholdLike | str, missing_ok: bool = True, default: float = DEFAULT_THRESHOLD
) -> tuple[float, str]:
    """The single decision threshold of a 2-class output and where it came from.

    Args:
        threshold: ``None`` (``default``), a number, a numeric string (a command-line value), a threshold JSON path
            (e.g. ``models/threshold.json`` beside the checkpoint), or a callable.
        missing_ok: a path that does not exist gives ``default`` (logged) instead of an error.
        default: the value for ``None`` or a missing file.

    Returns:
        ``(value, source)``; ``source`` is ``"file <path>"``, ``"given"`` or ``"default 0.5 (...)"``.

    Raises:
        ValueError: a number outside [0, 1], a string that is neither a number nor a file, an invalid threshold
            file (named), or a file holding more than one value.
    """
    if threshold is None:
        return float(default), f"default {default:g}"
    threshold, missing = _threshold_argument(threshold, missing_ok)
    if missing:
        logger.warning(f"threshold file {threshold} not found: predictions use the default threshold {default:g}")
        return float(default), f"default {default:g} (no threshold file {threshold})"
    if isinstance(threshold, (str, os.PathLike)):
        source = f"file {threshold}"
    else:
        source = "given"
    value = resolve_threshold(threshold, default)
    if isinstance(value, list):
        if len(value) != 1:
            raise ValueError(f"threshold {threshold} holds {len(value)} values; one is needed for 2 classes")
        value = value[0]
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"threshold must be in [0, 1], got {value}")
    return float(value), source


def resolve_multilabel_threshold(
    threshold: ThresholdLike | str,
    class_names: Sequence[str],
    missing_ok: bool = True,
    default: float = DEFAULT_THRESHOLD,
) -> tuple[list[float], str]:
    """One decision threshold per label of a multi-label output (label ``k`` is predicted when ``p_k >= t_k``).

    Args:
        threshold: ``None`` (``default`` for every label), a number or numeric string (every label), a per-label
            sequence, a threshold JSON path (``models/threshold.json`` of a multi-label training: a list, and the
            ``class_names`` it was chosen for), or a callable.
        class_names: the labels, in output order.
        missing_ok: a path that does not exist gives ``default`` for every label (logged) instead of an error.
        default: the value for ``None`` or a missing file.

    Returns:
        ``(one value per label, source)``; ``source`` is ``"file <path>"``, ``"given"`` or ``"default 0.5 (...)"``.

    Raises:
        ValueError: a value outside [0, 1] (or not finite), a string that is neither a number nor a file, an invalid
            file, a number of values other than one or one per label, or a file whose ``class_names`` differ from
            ``class_names``; the message names the file.
        FileNotFoundError: a missing file when ``missing_ok`` is False.
    """
    k, names = len(class_names), [str(c) for c in class_names]
    if threshold is None:
        return [float(default)] * k, f"default {default:g}"
    threshold, missing = _threshold_argument(threshold, missing_ok)
    if missing:
        logger.warning(f"threshold file {threshold} not found: every label uses the default threshold {default:g}")
        return [float(default)] * k, f"default {default:g} (no threshold file {threshold})"
    where = f"threshold {threshold}"
    if isinstance(threshold, (str, os.PathLike)):
        value = load_threshold(threshold)  # checks JSON, range and finiteness, naming the file
        obj = read_json_file(threshold, "threshold file")
        recorded = obj.get("class_names") if isinstance(obj, dict) else None
        where, source = f"threshold file {threshold}", f"file {threshold}"
        if isinstance(recorded, list) and [str(n) for n in recorded] != names:
            raise ValueError(f"{where} is for the labels {recorded}, but the class names are {names}")
    else:
        value, source = resolve_threshold(threshold, default), "given"
    values = [float(value)] * k if not isinstance(value, list) else [float(v) for v in value]
    if len(values) != k:
        raise ValueError(f"{where} holds {len(values)} values; one or one per label ({k}: {names}) is needed")
    bad = [v for v in values if not (math.isfinite(v) and 0.0 <= v <= 1.0)]
    if bad:
        raise ValueError(f"{where}: thresholds must be in [0, 1], got {bad}")
    return values, source


def resolve_task_threshold(
    threshold: ThresholdLike | str,
    task: str | Task,
    class_names: Sequence[str] | None = None,
    missing_ok: bool = True,
    default: float = DEFAULT_THRESHOLD,
) -> tuple[float | list[float] | None, str]:
    """The decision threshold(s) ``task`` needs, read by the rules every reader of a threshold follows.

    Binary: :func:`resolve_binary_threshold` (one value); multi-label: :func:`resolve_multilabel_threshold` (one
    value per label, a file chosen for other class names is refused); multi-class: ``None`` (arg-max, nothing read).

    Args:
        threshold: as :func:`resolve_binary_threshold` / :func:`resolve_multilabel_threshold`.
        task: the :class:`~monai_transfer.utils.task.Task` (or its mode).
        class_names: the labels of a multi-label task; default ``task.class_names``.
        missing_ok: a path that does not exist gives ``default`` (logged) instead of an error.
        default: the value for ``None`` or a missing file.

    Returns:
        ``(value, source)``: a float (binary), a list (multi-label) or ``None`` (multi-class, source
        ``"arg-max (no threshold)"``).

    Raises:
        ValueError: as the resolvers above; a multi-label task without class names.
    """
    task = as_task(task)
    if not task.uses_threshold:
        return None, "arg-max (no threshold)"
    if task.is_binary:
        return resolve_binary_threshold(threshold, missing_ok=missing_ok, default=default)
    names = class_names if class_names is not None else task.class_names
    if names is None:
        raise ValueError("the thresholds of a multilabel task need its class names")
    return resolve_multilabel_threshold(threshold, names, missing_ok=missing_ok, default=default)


def calibration_binding(calibration: str | os.PathLike | None) -> dict[str, Any]:
    """The entries a ``threshold.json`` records about the probabilities it was chosen on (for :func:`save_threshold`):
    ``applies_to`` in words and ``calibration_sha256``, the SHA-256 of the ``calibration.json`` applied before the
    threshold was chosen (``None`` for uncalibrated probabilities). :func:`check_threshold_calibration` compares it
    with the calibration file in use, so a threshold chosen under one calibration is never applied under another.
    """
    if calibration is None:
        return {"applies_to": "uncalibrated probabilities", "calibration_sha256": None}
    from monai_transfer.utils.io import sha256_file

    return {
        "applies_to": f"probabilities after temperature scaling with {calibration}",
        "calibration_sha256": sha256_file(calibration),
    }


def check_threshold_calibration(threshold: ThresholdLike, calibration: str | os.PathLike | None) -> str | None:
    """Refuse a threshold chosen on other probabilities than the ones it is applied to.

    A ``threshold.json`` written by the training (``applies_to``) says whether it was chosen on uncalibrated
    probabilities or after temperature scaling with a ``calibration.json``, and which one (``calibration_sha256``,
    :func:`calibration_binding`). Inference applies the calibration when ``calibration`` is an existing file
    (``ApplyTemperatured(allow_missing=True)``), so both must agree: calibrated or not, and the same calibration by
    content (a copied or moved run folder keeps its binding; ``--calibration B`` under a threshold chosen with ``A``
    is refused).

    Args:
        threshold: the threshold in use; only a JSON path with an ``applies_to`` entry is checked.
        calibration: the calibration file inference applies (``None`` or a missing file: no calibration).

    Returns:
        the ``applies_to`` text (``None`` when there is none).

    Raises:
        ValueError: naming both files, when one says calibrated and the other is absent (or vice versa), or when the
            applied calibration is not the one the threshold was chosen with.
    """
    if not isinstance(threshold, (str, os.PathLike)) or not Path(threshold).is_file():
        return None
    obj = read_json_file(threshold, "threshold file")
    applies_to = obj.get("applies_to") if isinstance(obj, dict) else None
    if not isinstance(applies_to, str):
        return None
    calibrated = calibration is not None and Path(calibration).is_file()
    wants = applies_to.startswith("probabilities after temperature scaling")
    if wants and not calibrated:
        raise ValueError(
            f"threshold file {threshold} applies to {applies_to}, but no calibration file {calibration} is applied: "
            "restore the calibration.json beside the checkpoint, or pass a threshold chosen on raw probabilities"
        )
    if not wants and calibrated and applies_to == "uncalibrated probabilities":
        raise ValueError(
            f"threshold file {threshold} applies to uncalibrated probabilities, but calibration {calibration} is "
            "applied: remove it (--calibration none) or choose the threshold on calibrated probabilities"
        )
    if wants and calibrated:
        _check_same_calibration(threshold, obj, applies_to, Path(calibration))  # type: ignore[arg-type]
    return applies_to


def _check_same_calibration(threshold: Any, obj: dict, applies_to: str, calibration: Path) -> None:
    """A threshold chosen after calibration A is refused under calibration B (compared by content: a copied run
    folder keeps its binding)."""
    from monai_transfer.utils.io import sha256_file

    applied = sha256_file(calibration)
    recorded = obj.get("calibration_sha256")
    chosen_with = applies_to[len("probabilities after temperature scaling with ") :]
    if recorded is None:  # written before the hash was recorded: compare with the named file when it still exists
        if not Path(chosen_with).is_file():
            logger.warning(
                f"threshold file {threshold} was chosen after calibration {chosen_with}, which no longer exists and "
                f"whose content it does not record: cannot check that {calibration} is the same calibration"
            )
            return
        recorded = sha256_file(chosen_with)
    if recorded != applied:
        raise ValueError(
            f"threshold file {threshold} was chosen on probabilities calibrated with {chosen_with} (SHA-256 "
            f"{str(recorded)[:12]}...), but calibration file {calibration} (SHA-256 {applied[:12]}...) is applied: "
            "a threshold only holds for the calibration it was chosen with; pass that calibration, or choose the "
            "threshold again under this one"
        )
