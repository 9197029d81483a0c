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
"""Temperature scaling (Guo et al. 2017): one scalar ``T`` that divides the logits, fitted by minimising the NLL.

Fit it on predictions the network was NOT trained on and that will not be used to report performance: the
out-of-fold predictions of cross-validation (:mod:`monai_transfer.cv.run`) or, failing that, the validation
split. Fit it BEFORE the operating threshold is chosen, so the threshold lives on calibrated probabilities. The
result is stored as ``models/calibration.json`` beside ``models/threshold.json`` and applied at inference by
:class:`monai_transfer.transforms.ApplyTemperatured` on the logits, before the softmax/sigmoid.

Inputs (``inputs=``):

- ``"logits"``: raw network outputs; ``(N, K)`` (softmax over ``K`` classes) for ``mode="binary"`` (``K = 2``) and
  ``"multiclass"``; ``(N,)`` / ``(N, 1)`` one positive-class logit (sigmoid) for binary; ``(N, K)`` independent
  sigmoid logits for ``"multilabel"`` (one shared ``T``).
- ``"probs"``: the probabilities after the softmax/sigmoid; they are turned into logits exactly (``log p`` for a
  softmax, which differs from the logits only by a per-case constant that a softmax ignores; ``log(p / (1 - p))`` for
  a sigmoid), so fitting on probabilities gives the same ``T`` as fitting on logits (up to float rounding of
  probabilities within ``1e-12`` of 0 or 1).

The search is a bounded golden-section search on ``log T`` (the NLL is convex in ``1 / T``, hence unimodal in
``log T``), deterministic and free of extra dependencies.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from monai_transfer.metrics.functional import DEFAULT_ECE_BINS, compute_brier, compute_ece
from monai_transfer.utils.io import atomic_write_json, read_json_file
from monai_transfer.utils.task import Task, as_task, look_up_mode

__all__ = [
    "CALIBRATION_INPUTS",
    "DEFAULT_TEMPERATURE_BOUNDS",
    "CalibrationWarning",
    "scores_to_logits",
    "temperature_nll",
    "golden_section_bracket",
    "fit_temperature",
    "apply_temperature",
    "calibration_summary",
    "save_calibration",
    "load_calibration",
]

CALIBRATION_INPUTS = ("logits", "probs")
#: search interval of ``T``.
DEFAULT_TEMPERATURE_BOUNDS = (0.05, 20.0)
_EPS = 1e-12
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


class CalibrationWarning(RuntimeWarning):
    """The fitted temperature is at a bound of the search interval (e.g. perfectly separable data)."""


def _as_float64(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().as_subclass(torch.Tensor).double().numpy()
    if isinstance(x, (list, tuple)) and x and isinstance(x[0], torch.Tensor):
        return torch.stack([torch.as_tensor(v).as_subclass(torch.Tensor).detach().cpu().double() for v in x]).numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be an array-like of numbers, got {type(x).__name__}") from e


def _check(mode: str | Task, inputs: str) -> Task:
    task = as_task(mode)
    if inputs not in CALIBRATION_INPUTS:
        raise ValueError(f"inputs must be one of {CALIBRATION_INPUTS}, got {inputs!r}")
    return task


def scores_to_logits(scores: Any, mode: str = "binary", inputs: str = "logits") -> tuple[np.ndarray, str]:
    """Logits ``(N, K)`` (float64) and their link, ``"softmax"`` or ``"sigmoid"``, from logits or probabilities.

    Binary ``(N,)`` / ``(N, 1)`` scores are one positive-class logit/probability (sigmoid link); binary ``(N, 2)`` and
    multi-class ``(N, K)`` scores use a softmax; multi-label ``(N, K)`` scores are independent sigmoids.

    Raises:
        ValueError: wrong shapes, non-finite logits, or probabilities outside [0, 1].
    """
    task = _check(mode, inputs)
    x = _as_float64(scores, "scores")
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"scores must hold at least one case, got shape {x.shape}")
    if task.is_binary and (x.ndim == 1 or (x.ndim == 2 and x.shape[1] == 1)):
        x, link = x.reshape(-1, 1), "sigmoid"  # one positive-class logit
    elif x.ndim == 2 and x.shape[1] >= 2 and (not task.is_binary or x.shape[1] == 2):
        link = task.activation
    else:
        raise ValueError(f"{task.mode} scores must have shape (N, K) (binary: (N,), (N, 1) or (N, 2)), got {x.shape}")
    if inputs == "probs":
        if np.isnan(x).any() or x.min() < -1e-6 or x.max() > 1 + 1e-6:
            raise ValueError(
                f"inputs='probs' needs probabilities in [0, 1], got values in [{np.nanmin(x):.4g}, {np.nanmax(x):.4g}]"
            )
        p = np.clip(x, _EPS, 1.0 - _EPS)
        x = np.log(p) if link == "softmax" else np.log(p) - np.log1p(-p)
    elif not np.isfinite(x).all():
        raise ValueError(f"logits must be finite, got {int((~np.isfinite(x)).sum())} non-finite values")
    return x, link


def _labels(labels: Any, z: np.ndarray, link: str, mode: str) -> np.ndarray:
    """Integer class per case (softmax) or 0/1 targets ``(N, K)`` (sigmoid)."""
    y = _as_float64(labels, "labels")
    n, k = z.shape
    if y.shape[0] != n:
        raise ValueError(f"scores and labels must have the same length, got {n} and {y.shape[0]}")
    if link == "softmax":
        if y.ndim == 2 and y.shape[1] == k and k > 1 and np.isin(y, (0, 1)).all() and (y.sum(1) == 1).all():
            y = y.argmax(1)
        y = y.reshape(-1)
        if y.shape[0] != n or not np.isin(y, np.arange(k)).all():
            raise ValueError(f"labels must be integers in [0, {k}) or one-hot (N, {k}), got values {np.unique(y)[:10]}")
        return y.astype(np.int64)
    if as_task(mode).is_binary:
        if y.ndim == 2 and y.shape[1] == 2:
            y = y.argmax(1)
        y = y.reshape(-1, 1)
    if y.shape != z.shape or not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be 0/1 of shape {z.shape}, got shape {y.shape}")
    return y


def _nll(z: np.ndarray, y: np.ndarray, link: str, temperature: float) -> float:
    s = z / temperature
    if link == "softmax":
        m = s.max(1, keepdims=True)
        lse = (m + np.log(np.exp(s - m).sum(1, keepdims=True)))[:, 0]
        return float(np.mean(lse - s[np.arange(len(y)), y]))
    # binary cross-entropy with logits: log(1 + e^s) - y s, stable form
    return float(np.mean(np.maximum(s, 0) - y * s + np.log1p(np.exp(-np.abs(s)))))


def temperature_nll(
    scores: Any, labels: Any, temperature: float, mode: str = "binary", inputs: str = "logits"
) -> float:
    """Mean negative log-likelihood of the labels under ``softmax/sigmoid(logits / temperature)``."""
    if not float(temperature) > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z, link = scores_to_logits(scores, mode, inputs)
    return _nll(z, _labels(labels, z, link, mode), link, float(temperature))


def golden_section_bracket(f: Callable[[float], float], a: float, b: float, tol: float) -> tuple[float, float]:
    """The final bracket ``(a, b)``, ``b - a <= tol``, of a golden-section search for the minimum of a unimodal ``f``
    on ``[a, b]`` (the temperature fits search ``log T`` with it)."""
    c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - _GOLDEN * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + _GOLDEN * (b - a)
            fd = f(d)
    return a, b


def fit_temperature(
    scores: Any,
    labels: Any,
    mode: str = "binary",
    inputs: str = "logits",
    bounds: Sequence[float] = DEFAULT_TEMPERATURE_BOUNDS,
    tol: float = 1e-7,
) -> float:
    """The temperature ``T`` minimising the NLL of ``softmax/sigmoid(logits / T)`` (bounded search on ``log T``).

    Args:
        scores: logits or probabilities (see the module docstring).
        labels: integer classes or one-hot (binary/multi-class); 0/1 ``(N, K)`` (multi-label).
        mode: ``"binary"``, ``"multiclass"`` or ``"multilabel"``.
        inputs: ``"logits"`` or ``"probs"``.
        bounds: ``(T_min, T_max)`` search interval, default :data:`DEFAULT_TEMPERATURE_BOUNDS`.
        tol: tolerance on ``log T``.

    Returns:
        ``T`` (> 1 softens over-confident predictions, < 1 sharpens under-confident ones). A
        :class:`CalibrationWarning` is raised when ``T`` ends at a bound (e.g. perfectly separated cases).

    Raises:
        ValueError: bad shapes/values (see :func:`scores_to_logits`) or bounds that are not ``0 < lo < hi``.
    """
    lo_t, hi_t = (float(b) for b in bounds)
    if not 0 < lo_t < hi_t:
        raise ValueError(f"bounds must satisfy 0 < T_min < T_max, got {tuple(bounds)}")
    z, link = scores_to_logits(scores, mode, inputs)
    y = _labels(labels, z, link, mode)

    def f(log_t: float) -> float:
        return _nll(z, y, link, math.exp(log_t))

    a, b = golden_section_bracket(f, math.log(lo_t), math.log(hi_t), tol)
    candidates = {math.log(lo_t): f(math.log(lo_t)), math.log(hi_t): f(math.log(hi_t)), (a + b) / 2: f((a + b) / 2)}
    best = min(candidates, key=lambda k: (candidates[k], abs(k)))
    t = math.exp(best)
    if abs(best - math.log(lo_t)) < 10 * tol or abs(best - math.log(hi_t)) < 10 * tol:
        warnings.warn(
            f"fitted temperature {t:.4g} is at a bound of {tuple(bounds)} (n={len(z)}): the cases may be perfectly "
            "separated or too few; the calibration is unreliable",
            CalibrationWarning,
            stacklevel=2,
        )
    return t


def apply_temperature(scores: Any, temperature: float, mode: str = "binary", inputs: str = "logits") -> np.ndarray:
    """Calibrated probabilities ``softmax/sigmoid(logits / temperature)``, shaped like the input scores.

    Binary ``(N,)`` / ``(N, 1)`` inputs give positive-class probabilities of the same shape; ``(N, K)`` inputs give
    ``(N, K)`` probabilities.
    """
    if not float(temperature) > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    shape = _as_float64(scores, "scores").shape
    z, link = scores_to_logits(scores, mode, inputs)
    s = z / float(temperature)
    if link == "softmax":
        e = np.exp(s - s.max(1, keepdims=True))
        p = e / e.sum(1, keepdims=True)
    else:
        p = 1.0 / (1.0 + np.exp(-s))
    return p.reshape(shape)


def calibration_summary(
    scores: Any,
    labels: Any,
    temperature: float,
    mode: str = "binary",
    inputs: str = "logits",
    n_bins: int = DEFAULT_ECE_BINS,
) -> dict[str, Any]:
    """NLL, ECE and Brier score before (``T = 1``) and after temperature scaling, for reports.

    Returns:
        ``{"temperature", "n_samples", "nll_before", "nll_after", "ece_before", "ece_after", "brier_before",
        "brier_after", "ece_n_bins"}``.
    """
    z, link = scores_to_logits(scores, mode, inputs)
    y = _labels(labels, z, link, mode)
    out: dict[str, Any] = {"temperature": float(temperature), "n_samples": int(len(z)), "ece_n_bins": int(n_bins)}
    for tag, t in (("before", 1.0), ("after", float(temperature))):
        p = apply_temperature(z, t, mode, "logits")  # a binary sigmoid: (N, 1), as y
        out[f"nll_{tag}"] = _nll(z, y, link, t)
        out[f"ece_{tag}"] = compute_ece(p, y, mode, n_bins)
        out[f"brier_{tag}"] = compute_brier(p, y, mode)
    return out


def save_calibration(path: str | os.PathLike, temperature: float, **info: Any) -> Path:
    """Write ``{"method": "temperature", "temperature": T, **info}`` atomically (e.g. ``models/calibration.json``).

    ``info`` holds JSON-friendly provenance: which data it was fitted on (``fitted_on``), ``n_samples``, the
    before/after NLL and ECE of :func:`calibration_summary`, ...
    """
    t = float(temperature)
    if not (t > 0 and math.isfinite(t)):
        raise ValueError(f"temperature must be a positive finite number, got {temperature}")
    return atomic_write_json(path, {"method": "temperature", "temperature": t, **info})


def load_calibration(path: str | os.PathLike, mode: str | Task | None = None) -> float:
    """The temperature stored by :func:`save_calibration` (or a JSON number / ``{"temperature": ...}`` file).

    The one reader of calibration files: the evaluation CLI, :class:`~monai_transfer.transforms.ApplyTemperatured`
    (bundles' ``inference.json``/``evaluate.json``, hence MONAI Label) and the report writer all call it, so every path
    refuses the same files with the same message.

    Args:
        path: the ``calibration.json``.
        mode: the task of the model the temperature is applied to (``"binary"``, ``"multiclass"``,
            ``"multilabel"``); a file that records another ``mode`` (e.g. a multi-label calibration on a binary model,
            whose softmax the temperature was not fitted for) is refused. ``None`` checks nothing.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: not valid JSON, neither a number nor an object, an unknown ``method``, no positive finite
            ``temperature`` (missing, NaN, zero, negative, not a number), an invalid recorded ``mode``, or one other
            than ``mode``; the message names the file and the problem.
    """
    path = Path(path)
    obj = read_json_file(path, "calibration file")
    if isinstance(obj, dict):
        if obj.get("method", "temperature") != "temperature":
            raise ValueError(f"calibration file {path}: unknown method {obj.get('method')!r} (expected 'temperature')")
        value = obj.get("temperature")
    elif isinstance(obj, (int, float)):
        value = obj
    else:
        raise ValueError(
            f"calibration file {path} must hold a JSON object with a 'temperature' (or a number), got "
            f"{type(obj).__name__} {obj!r:.60}"
        )
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value > 0 and math.isfinite(value)):
        what = "no 'temperature' entry" if value is None else f"temperature {value!r}"
        raise ValueError(f"calibration file {path}: {what}; a positive finite temperature is needed")
    recorded = obj.get("mode") if isinstance(obj, dict) else None
    if recorded is not None:
        recorded = look_up_mode(recorded, f"calibration file {path}: 'mode'").value
        if mode is not None and recorded != as_task(mode).mode.value:
            raise ValueError(
                f"calibration file {path} was fitted for a {recorded} model (mode {recorded!r}), but it is applied "
                f"to a {as_task(mode).mode.value} model: use the calibration.json of this model's training, or none"
            )
    return float(value)
