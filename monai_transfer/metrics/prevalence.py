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
"""Prevalence shift: PPV/NPV at a stated prevalence, class balance of a data set, and a warning when the balance of
an evaluated set differs from the training set's.

Sensitivity, specificity, balanced accuracy and the ROC AUC do not depend on the class balance of the evaluated set;
accuracy, PPV and NPV do. Bayes' rule gives PPV and NPV at any prevalence ``p`` from sensitivity and specificity::

    PPV = sens * p / (sens * p + (1 - spec) * (1 - p))
    NPV = spec * (1 - p) / (spec * (1 - p) + (1 - sens) * p)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "DEFAULT_BALANCE_TOLERANCE",
    "ppv_npv_at_prevalence",
    "class_balance",
    "training_counts_from_meta",
    "balance_shift_warning",
]

logger = logging.getLogger(__name__)

#: largest absolute difference of a class fraction between the evaluated and training sets before a warning.
DEFAULT_BALANCE_TOLERANCE = 0.05


def _check_unit(value: float, name: str) -> float:
    v = float(value)
    if not 0.0 <= v <= 1.0 or math.isnan(v):
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return v


def ppv_npv_at_prevalence(sensitivity: float, specificity: float, prevalence: float) -> tuple[float, float]:
    """PPV and NPV of a test with the given sensitivity and specificity in a population of the given prevalence.

    Args:
        sensitivity: true positive rate in [0, 1].
        specificity: true negative rate in [0, 1].
        prevalence: share of positive cases in the target population, in [0, 1].

    Returns:
        ``(ppv, npv)``; a value whose denominator is 0 (e.g. nothing predicted positive) is ``NaN``.

    Raises:
        ValueError: an argument outside [0, 1] (or NaN).
    """
    sens = _check_unit(sensitivity, "sensitivity")
    spec = _check_unit(specificity, "specificity")
    p = _check_unit(prevalence, "prevalence")
    tp, fp = sens * p, (1.0 - spec) * (1.0 - p)
    tn, fn = spec * (1.0 - p), (1.0 - sens) * p
    ppv = tp / (tp + fp) if tp + fp > 0 else float("nan")
    npv = tn / (tn + fn) if tn + fn > 0 else float("nan")
    return float(ppv), float(npv)


def class_balance(counts: Mapping[str, int | float] | Sequence[int | float]) -> dict[str, float] | list[float]:
    """Class fractions from class counts (a mapping keeps its keys, a sequence gives a list).

    Raises:
        ValueError: negative counts or a total of 0.
    """
    values = list(counts.values()) if isinstance(counts, Mapping) else list(counts)
    if any(float(v) < 0 for v in values):
        raise ValueError(f"class counts must be non-negative, got {values}")
    total = float(sum(float(v) for v in values))
    if total <= 0:
        raise ValueError(f"class counts sum to {total}: no case to compute a class balance from")
    if isinstance(counts, Mapping):
        return {str(k): float(v) / total for k, v in counts.items()}
    return [float(v) / total for v in values]


def training_counts_from_meta(meta: Mapping[str, Any] | None, class_names: Sequence[str]) -> dict[str, int] | None:
    """Training-split class counts from a run description (``meta["data"]["train"]["per_class"]``, as written by
    :func:`monai_transfer.engines.workflow.run_description`), keyed by ``class_names``.

    ``per_class`` keys may be class names or label indices (``"0"``, ``"1"``, ...). Returns None when the description
    has no training counts or they cannot be matched to ``class_names``.
    """
    try:
        per_class = meta["data"]["train"]["per_class"]  # type: ignore[index]
    except (KeyError, TypeError):
        return None
    if not isinstance(per_class, Mapping):
        return None
    names = [str(n) for n in class_names]
    out: dict[str, int] = {}
    for key, count in per_class.items():
        key = str(key)
        if key in names:
            out[key] = int(count)
        elif key.isdigit() and int(key) < len(names):
            out[names[int(key)]] = int(count)
        else:
            return None
    return {n: out.get(n, 0) for n in names}


def balance_shift_warning(
    evaluated_counts: Mapping[str, int],
    training_counts: Mapping[str, int],
    tolerance: float = DEFAULT_BALANCE_TOLERANCE,
    log: bool = True,
) -> str | None:
    """A warning text when a class fraction of the evaluated set differs from the training set's by more than
    ``tolerance`` (absolute), else None; the warning is also logged when ``log`` is True.

    Example: 37 % normal cases evaluated against 26 % in training (difference 0.11 > 0.05) gives a warning that
    accuracy, PPV and NPV are not comparable and that the threshold was chosen at another balance.
    """
    ev = class_balance(dict(evaluated_counts))
    tr = class_balance(dict(training_counts))
    assert isinstance(ev, dict) and isinstance(tr, dict)
    names = list(ev)
    diffs = {n: ev.get(n, 0.0) - tr.get(n, 0.0) for n in names}
    worst = max(names, key=lambda n: abs(diffs[n]))
    if abs(diffs[worst]) <= float(tolerance):
        return None
    parts = ", ".join(f"{n} {100 * ev.get(n, 0.0):.1f}% vs {100 * tr.get(n, 0.0):.1f}%" for n in names)
    msg = (
        f"class balance differs from the training set ({parts}; largest difference {abs(diffs[worst]):.3f} for "
        f"{worst!r} > tolerance {tolerance}): accuracy, PPV and NPV depend on it and are not comparable across "
        "sets, and a threshold chosen at the training/validation balance may not be the best here; compare AUC, "
        "sensitivity, specificity and balanced accuracy, and read PPV/NPV at the prevalence of the target population"
    )
    if log:
        logger.warning(msg)
    return msg
