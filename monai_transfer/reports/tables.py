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
"""Per-class (per-label) metric table of a multi-class or multi-label report: rows, CSV and Markdown.

The table is read off the flat dict of :func:`~monai_transfer.metrics.functional.compute_classification_metrics`
(``auc/<class>``, ``sensitivity/<class>``, ... and the ``*_micro`` keys), so its numbers are exactly those of
``metrics.json``; the ``macro`` row is the unweighted mean over classes with a defined value, the ``micro`` row the
one-vs-rest counts (and scores, for AUC / average precision) pooled over classes.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from monai_transfer.utils.io import atomic_write_text
from monai_transfer.utils.task import TASK_MODES, as_task

__all__ = ["PER_CLASS_COLUMNS", "per_class_rows", "write_per_class_table"]

#: metrics per class, in table order
_METRICS = ("auc", "average_precision", "sensitivity", "specificity", "ppv", "npv", "f1")
#: columns of ``per_class.csv`` (and keys of each row)
PER_CLASS_COLUMNS = (
    "class",
    "n_positive",
    "n_negative",
    "auc",
    "auc_ci_lower",
    "auc_ci_upper",
    *_METRICS[1:],
    "threshold",
)


def _num(v: Any) -> float | None:
    if v is None:
        return None
    f = float(v)
    return None if math.isnan(f) else f


def per_class_rows(metrics: Mapping[str, Any], auc_ci: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The per-class table as ``{"per_class": [row, ...], "averages": {"macro": row, "micro": row}}``.

    Args:
        metrics: a multi-class or multi-label ``compute_classification_metrics`` dict.
        auc_ci: the ``bootstrap_ci(..., metric="auc")`` result; its ``per_class`` bounds fill ``auc_ci_lower/upper``.

    Each row has the keys of :data:`PER_CLASS_COLUMNS`; undefined values (a class without positives) are ``None``;
    the ``macro`` row carries the bootstrap interval of the macro AUC.
    ``threshold`` is the label's decision threshold (multi-label) or ``None`` (multi-class: arg-max).

    Raises:
        ValueError: ``metrics`` is a binary dict (it has a single positive class: use the headline values).
    """
    mode = metrics.get("mode")
    task = as_task(mode) if mode in TASK_MODES else None
    if task is None or task.is_binary:
        raise ValueError(f"a per-class table needs a multiclass or multilabel metrics dict, got mode {mode!r}")
    names = list(metrics["class_names"])
    n = int(metrics["n_samples"])
    thr = metrics.get("threshold")
    thresholds = thr if isinstance(thr, list) else [thr] * len(names)
    pc = (auc_ci or {}).get("per_class") or {}
    lower, upper = pc.get("lower") or [None] * len(names), pc.get("upper") or [None] * len(names)
    rows = []
    for k, c in enumerate(names):
        pos = int(metrics[f"support/{c}"])
        row: dict[str, Any] = {"class": c, "n_positive": pos, "n_negative": n - pos}
        for m in _METRICS:
            row[m] = _num(metrics[f"{m}/{c}"])
        row["auc_ci_lower"], row["auc_ci_upper"] = _num(lower[k]), _num(upper[k])
        row["threshold"] = _num(thresholds[k]) if task.is_multilabel else None
        rows.append({key: row[key] for key in PER_CLASS_COLUMNS})
    averages = {}
    for avg, suffix in (("macro", ""), ("micro", "_micro")):
        row = {key: None for key in PER_CLASS_COLUMNS}
        row["class"] = avg
        for m in _METRICS:
            row[m] = _num(metrics.get(f"{m}{suffix}"))
        if avg == "macro" and auc_ci:  # the bootstrap interval of the macro AUC (the headline value)
            row["auc_ci_lower"], row["auc_ci_upper"] = _num(auc_ci.get("lower")), _num(auc_ci.get("upper"))
        averages[avg] = row
    return {"per_class": rows, "averages": averages}


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def write_per_class_table(
    output_dir: str | os.PathLike, metrics: Mapping[str, Any], auc_ci: Mapping[str, Any] | None = None
) -> dict[str, Path]:
    """Write ``per_class.csv`` (full precision, empty cells for undefined values) and ``per_class.md``.

    Both hold one row per class (label) followed by the ``macro`` and ``micro`` rows; see :func:`per_class_rows`.

    Returns:
        ``{"per_class_csv": path, "per_class_md": path}``.
    """
    table = per_class_rows(metrics, auc_ci)
    rows = [*table["per_class"], table["averages"]["macro"], table["averages"]["micro"]]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(PER_CLASS_COLUMNS)
    for r in rows:
        w.writerow(["" if r[c] is None else repr(r[c]) if isinstance(r[c], float) else r[c] for c in PER_CLASS_COLUMNS])
    out = Path(output_dir)
    written = {"per_class_csv": atomic_write_text(out / "per_class.csv", buf.getvalue())}
    what = "label" if as_task(metrics["mode"]).is_multilabel else "class (one-vs-rest)"
    lines = [
        f"# Per-{what.split()[0]} metrics ({metrics['mode']}, n={metrics['n_samples']})",
        "",
        f"One row per {what}; `macro` = unweighted mean over classes with a defined value, `micro` = counts (and "
        "scores, for AUC / AP) pooled over classes. `n/a`: undefined (e.g. no positive case).",
        "",
        "| " + " | ".join(PER_CLASS_COLUMNS) + " |",
        "|" + "---|" * len(PER_CLASS_COLUMNS),
    ]
    lines += ["| " + " | ".join(_fmt(r[c]) for c in PER_CLASS_COLUMNS) + " |" for r in rows]
    written["per_class_md"] = atomic_write_text(out / "per_class.md", "\n".join(lines) + "\n")
    return written
