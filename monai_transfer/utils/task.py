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
"""The classification task: binary, multi-class or multi-label, and what follows from it.

The one owner of the task mode (ground floor: numpy and the standard library only, nothing of the project):

- :class:`TaskMode` holds the three values; :func:`look_up_mode` is the one check of a mode value (an unknown value
  fails here, listing the valid ones, like MONAI's ``look_up_option``). The plain strings ``"binary"``,
  ``"multiclass"`` and ``"multilabel"`` stay valid everywhere a mode is taken (bundles' ``mode`` id, ``mode=``
  arguments): ``TaskMode`` is a ``str`` enum, equal to its value.
- :func:`derive_task` is the one derivation of the task from what a caller knows (a config's ``mode`` value, the
  labels of a data list, the number or names of the classes). The data lists (``infer_task_mode``), MONAI Label's
  tasks (``bundle_task_mode``, the infer task's output mode), cross-validation, the evaluation CLI and the
  prediction writers all call it.
- :class:`Task` carries what follows from the mode: the output activation (softmax / sigmoid), the positive-class
  score of a binary output, whether a decision threshold applies, and :func:`apply_threshold`, the one place where
  probabilities become predictions (binary: ``p_1 >= t``; multi-label: ``p_k >= t_k`` per label; multi-class: the
  arg-max). Thresholds are chosen and stored by :mod:`monai_transfer.metrics.threshold`, which asks the task.

Conventions (``docs/ARCHITECTURE.md``): a binary task has 2 classes with softmax outputs ``(N, 2)`` (positive class =
column 1), or one positive-class probability ``(N,)`` / ``(N, 1)``; a multi-class task ``(N, K)`` softmax outputs; a
multi-label task ``(N, K)`` independent sigmoid outputs with 0/1 label vectors.

Example::

    task = derive_task(labels=[0, 1, 1, 0], class_names=["normal", "pneumonia"])
    task.mode                            # TaskMode.BINARY, == "binary"
    task.activation                      # "softmax"
    apply_threshold([[0.7, 0.3], [0.2, 0.8]], task, 0.5)  # array([[0], [1]])
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

__all__ = ["TaskMode", "TASK_MODES", "Task", "look_up_mode", "as_task", "derive_task", "apply_threshold"]


class TaskMode(StrEnum):
    """The three classification tasks; each member equals its string value (``TaskMode.BINARY == "binary"``)."""

    BINARY = "binary"
    MULTICLASS = "multiclass"
    MULTILABEL = "multilabel"

    def __repr__(self) -> str:  # error messages read "mode 'binary'", as with the plain string
        return repr(self.value)


#: the valid mode values, in order.
TASK_MODES: tuple[str, ...] = tuple(m.value for m in TaskMode)


def look_up_mode(mode: Any, name: str = "mode") -> TaskMode:
    """The :class:`TaskMode` of ``mode`` (a ``TaskMode``, its string value or a :class:`Task`): the one check.

    Args:
        mode: the value to check.
        name: what the value is called in the error (e.g. ``"bundle 'mode'"``).

    Raises:
        ValueError: ``mode`` is not a valid mode; the message names it, lists the valid values and suggests the
            closest one (``'multi-label'`` -> ``'multilabel'``).
    """
    if isinstance(mode, Task):
        return mode.mode
    if isinstance(mode, TaskMode):
        return mode
    if isinstance(mode, str) and mode in TASK_MODES:
        return TaskMode(mode)
    close = difflib.get_close_matches(str(mode), TASK_MODES, n=1) if isinstance(mode, str) else []
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"{name} must be one of {list(TASK_MODES)}, got {mode!r}{hint}.")


def _as_array(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor (or MONAI MetaTensor): no torch import needed here
        x = x.detach().cpu()
    elif isinstance(x, (list, tuple)) and x and hasattr(x[0], "detach"):
        x = [v.detach().cpu() for v in x]
    return np.asarray(x, dtype=np.float64)


@dataclass(frozen=True)
class Task:
    """A classification task: its mode and, when known, its classes.

    Build it with :func:`derive_task` (from data or a config) or :func:`as_task` (from a mode value).

    Args:
        mode: a :class:`TaskMode` or its string value (checked by :func:`look_up_mode`).
        class_names: the class (multi-label: finding) names in output order, or ``None``.
        num_classes: the number of classes (binary: 2); default ``len(class_names)``.

    Raises:
        ValueError: an invalid ``mode``, or ``num_classes`` that differs from ``len(class_names)``.
    """

    mode: TaskMode
    class_names: tuple[str, ...] | None = None
    num_classes: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", look_up_mode(self.mode))
        names = tuple(str(c) for c in self.class_names) if self.class_names is not None else None
        object.__setattr__(self, "class_names", names)
        k = int(self.num_classes) if self.num_classes is not None else (len(names) if names is not None else None)
        if names is not None and k != len(names):
            raise ValueError(f"num_classes={k} does not match the {len(names)} class names {list(names)}.")
        object.__setattr__(self, "num_classes", k)

    @property
    def is_binary(self) -> bool:
        """Two classes, one decision threshold on the positive-class probability."""
        return self.mode is TaskMode.BINARY

    @property
    def is_multiclass(self) -> bool:
        """One class per case among more than two; the prediction is the arg-max."""
        return self.mode is TaskMode.MULTICLASS

    @property
    def is_multilabel(self) -> bool:
        """Independent findings (0/1 label vectors), one threshold per label."""
        return self.mode is TaskMode.MULTILABEL

    @property
    def uses_threshold(self) -> bool:
        """Whether predictions come from a decision threshold (binary, multi-label) rather than the arg-max."""
        return not self.is_multiclass

    @property
    def activation(self) -> str:
        """The output activation: ``"sigmoid"`` for multi-label tasks, else ``"softmax"``."""
        return "sigmoid" if self.is_multilabel else "softmax"

    def positive_scores(self, probs: Any) -> np.ndarray:
        """The scores the task's decisions are taken on, as float64.

        Binary: the positive-class probability ``(N,)``, from ``(N, 2)`` softmax outputs (column 1) or ``(N,)`` /
        ``(N, 1)``; multi-class and multi-label: the ``(N, K)`` probabilities, unchanged.

        Raises:
            ValueError: a shape the task does not take.
        """
        p = _as_array(probs)
        if self.is_binary:
            if p.ndim == 1 or (p.ndim == 2 and p.shape[1] == 1):
                return p.reshape(-1)
            if p.ndim == 2 and p.shape[1] == 2:
                return p[:, 1]
            raise ValueError(
                f"binary y_prob must have shape (N,), (N, 1) or (N, 2), got {p.shape}; for more classes use "
                "mode='multiclass' (one class per case) or mode='multilabel' (independent findings)"
            )
        if p.ndim != 2 or p.shape[1] < 2:
            raise ValueError(f"{self.mode} y_prob must have shape (N, K) with K >= 2, got {p.shape}")
        return p

    def class_probabilities(self, probs: Any) -> np.ndarray:
        """``(N, K)`` probabilities, one column per class: a binary positive-class probability becomes the two
        columns ``[1 - p, p]``; other inputs are returned unchanged (as float64)."""
        p = _as_array(probs)
        if self.is_binary and (p.ndim == 1 or (p.ndim == 2 and p.shape[1] == 1)):
            p = p.reshape(-1, 1)
            return np.concatenate([1.0 - p, p], 1)
        return p

    def class_index(self, onehot: Any) -> np.ndarray:
        """``(N,)`` class indices of single-label rows: binary ``(N, 1)`` 0/1 columns (the positive class is 1) or
        ``(N, K)`` one-hot rows (their arg-max), as :func:`apply_threshold` returns predictions.

        Raises:
            ValueError: for a multi-label task (a case may have any number of labels).
        """
        if self.is_multilabel:
            raise ValueError("a multilabel task has no single class per case")
        x = np.asarray(onehot)
        x = x.reshape(len(x), -1)
        return x[:, 0].astype(np.int64) if self.is_binary else x.argmax(1)

    def predict(self, probs: Any, threshold: float | Sequence[float] = 0.5) -> np.ndarray:
        """:func:`apply_threshold` of this task."""
        return apply_threshold(probs, self, threshold)


def as_task(mode: Any) -> Task:
    """``mode`` as a :class:`Task`: a ``Task`` is returned as it is, a mode value (checked) becomes ``Task(mode)``."""
    return mode if isinstance(mode, Task) else Task(look_up_mode(mode))


def _is_vector(label: Any) -> bool:
    return isinstance(label, (list, tuple)) or getattr(label, "ndim", 0) > 0


def derive_task(
    mode: Any = None,
    labels: Sequence[Any] | None = None,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
) -> Task:
    """The task of a model or data set, from what is known about it: the project's one derivation of the mode.

    Rules, in order:

    1. ``mode`` given (a :class:`TaskMode`, its string value or a :class:`Task`): that mode, checked by
       :func:`look_up_mode`; when ``labels`` are given too, they must be of its kind (vectors for multi-label,
       single classes otherwise).
    2. ``labels`` (one entry per case; ``None`` entries are skipped) that are all vectors (lists, tuples, arrays):
       multi-label. A one-hot row is a vector too: single-label data lists hold class indices.
    3. Otherwise ``K`` classes: ``num_classes``, else ``len(class_names)``, else the number of distinct labels;
       binary for ``K <= 2``, multi-class for more (a 2-class task is always binary).

    Args:
        mode: the mode when it is fixed (a config's literal ``mode`` id), else ``None``.
        labels: the labels of a data list, per case: class indices (or names) or 0/1 vectors.
        num_classes: the number of classes (outputs of the network).
        class_names: the class names in output order.

    Returns:
        the :class:`Task` (``class_names``/``num_classes`` as given).

    Raises:
        ValueError: an invalid ``mode``; ``labels`` with no entry, mixing vectors and single classes, or not of the
            kind ``mode`` says; nothing to derive from.
    """
    vectors: bool | None = None
    values: list[Any] = []
    if labels is not None:
        values = [v for v in labels if v is not None]
        if not values:
            raise ValueError("cannot derive the task mode: no label given.")
        kinds = [_is_vector(v) for v in values]
        if any(kinds) and not all(kinds):
            raise ValueError("labels mix vectors (multi-label) and single classes; use one kind for the whole list.")
        vectors = all(kinds)
    if mode is not None:
        m = look_up_mode(mode)
        if vectors is not None and vectors != (m is TaskMode.MULTILABEL):
            kind = "0/1 vectors (multi-label)" if vectors else "single classes"
            raise ValueError(f"mode {m!r} does not fit the labels, which are {kind}.")
    elif vectors:
        m = TaskMode.MULTILABEL
    else:
        if num_classes is not None:
            k = int(num_classes)
        elif class_names is not None:
            k = len(class_names)
        elif values:
            k = len({str(v) for v in values})
        else:
            raise ValueError("cannot derive the task mode: give the mode, the labels, num_classes or class_names.")
        m = TaskMode.BINARY if k <= 2 else TaskMode.MULTICLASS
    return Task(m, class_names, num_classes)


def apply_threshold(probs: Any, task: Any, threshold: float | Sequence[float] = 0.5) -> np.ndarray:
    """Predictions from probabilities: the one place where a decision threshold is applied.

    Args:
        probs: binary: ``(N, 2)`` softmax outputs or ``(N,)`` / ``(N, 1)`` positive-class probabilities;
            multi-class / multi-label: ``(N, K)`` (a numpy array, torch tensor or nested sequence).
        task: a :class:`Task` or a mode value.
        threshold: binary: one threshold on the positive-class probability; multi-label: one for every label or one
            per label; multi-class: not used (arg-max).

    Returns:
        ``int64`` 0/1 predictions: binary ``(N, 1)`` (``p_1 >= t``), multi-label ``(N, K)`` (``p_k >= t_k``),
        multi-class ``(N, K)`` one-hot of the arg-max (first maximum on ties).

    Raises:
        ValueError: a shape the task does not take, or a number of thresholds other than one or one per label.
    """
    task = as_task(task)
    p = task.positive_scores(probs)
    if task.is_multiclass:
        pred = np.zeros(p.shape, dtype=np.int64)
        pred[np.arange(len(p)), p.argmax(1)] = 1
        return pred
    p = p.reshape(len(p), -1)
    t = np.asarray(threshold, dtype=np.float64).reshape(-1)
    if t.size not in (1, p.shape[1]):
        raise ValueError(f"threshold must be a scalar or hold one value per class ({p.shape[1]}), got {t.size} values")
    return (p >= t[None, :]).astype(np.int64)
