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
"""Per-class / per-label table (metrics.json ``per_class``/``averages``, per_class.csv/.md) vs scikit-learn."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm

from monai_transfer.metrics import compute_classification_metrics
from monai_transfer.reports import PER_CLASS_COLUMNS, per_class_rows, write_classification_report
from tests.metrics.test_functional import make_multiclass, make_multilabel

__all__ = ["sklearn_per_class", "assert_table_matches_sklearn"]

NIH14 = [
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
    "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
]  # fmt: skip


def sklearn_per_class(
    y_true: np.ndarray, p: np.ndarray, mode: str, threshold=0.5, pred: np.ndarray | None = None
) -> dict[str, dict[str, np.ndarray]]:
    """Reference values from scikit-learn: ``{"per_class": {metric: (K,)}, "macro": {...}, "micro": {...}}``.

    ``y_true`` is ``(N,)`` integer classes (multi-class) or ``(N, K)`` 0/1 (multi-label); ``p`` ``(N, K)``;
    ``pred`` the ``(N, K)`` 0/1 decisions, default arg-max (multi-class) or ``p >= threshold``.
    Classes without positives get NaN (scikit-learn raises or warns for them).
    """
    k = p.shape[1]
    if mode == "multiclass":
        onehot = np.eye(k, dtype=int)[np.asarray(y_true, dtype=int)]
        pred = np.eye(k, dtype=int)[p.argmax(1)] if pred is None else pred
    else:
        onehot = np.asarray(y_true, dtype=int)
        t = np.broadcast_to(np.asarray(threshold, dtype=float).reshape(-1), (k,))
        pred = (p >= t[None, :]).astype(int) if pred is None else np.asarray(pred, dtype=int)
    defined = np.array([0 < onehot[:, c].sum() < len(onehot) for c in range(k)])
    auc = np.array([skm.roc_auc_score(onehot[:, c], p[:, c]) if defined[c] else np.nan for c in range(k)])
    ap = np.array([skm.average_precision_score(onehot[:, c], p[:, c]) if defined[c] else np.nan for c in range(k)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mcm = skm.multilabel_confusion_matrix(onehot, pred)  # (K, 2, 2): [[tn, fp], [fn, tp]]
        tn, fp, fn = mcm[:, 0, 0], mcm[:, 0, 1], mcm[:, 1, 0]
        per = {
            "auc": auc,
            "average_precision": ap,
            "sensitivity": skm.recall_score(onehot, pred, average=None, zero_division=np.nan),
            "specificity": np.where(tn + fp > 0, tn / np.maximum(tn + fp, 1), np.nan),
            "ppv": skm.precision_score(onehot, pred, average=None, zero_division=np.nan),
            "npv": np.where(tn + fn > 0, tn / np.maximum(tn + fn, 1), np.nan),
            "f1": skm.f1_score(onehot, pred, average=None, zero_division=np.nan),
        }
        micro = {
            "auc": skm.roc_auc_score(onehot, p, average="micro"),
            "average_precision": skm.average_precision_score(onehot, p, average="micro"),
            "sensitivity": skm.recall_score(onehot, pred, average="micro"),
            "specificity": tn.sum() / (tn.sum() + fp.sum()),
            "ppv": skm.precision_score(onehot, pred, average="micro"),
            "npv": tn.sum() / (tn.sum() + fn.sum()),
            "f1": skm.f1_score(onehot, pred, average="micro"),
        }
    macro = {m: float(np.nanmean(v)) for m, v in per.items()}
    return {"per_class": per, "macro": macro, "micro": micro, "support": onehot.sum(0)}


def assert_table_matches_sklearn(
    report: dict, y_true: np.ndarray, p: np.ndarray, mode: str, threshold=0.5, pred: np.ndarray | None = None
) -> None:
    """``report["per_class"]`` and ``report["averages"]`` (a metrics.json dict) equal the scikit-learn values."""
    ref = sklearn_per_class(y_true, p, mode, threshold, pred)
    rows = report["per_class"]
    assert [r["class"] for r in rows] == report["class_names"]
    for c, row in enumerate(rows):
        assert row["n_positive"] == int(ref["support"][c]) and row["n_negative"] == len(p) - int(ref["support"][c])
        for m, v in ref["per_class"].items():
            if np.isnan(v[c]):
                assert row[m] is None, (row["class"], m)
            else:
                assert row[m] == pytest.approx(float(v[c]), abs=1e-9), (row["class"], m)
    for avg in ("macro", "micro"):
        for m, v in ref[avg].items():
            assert report["averages"][avg][m] == pytest.approx(float(v), abs=1e-9), (avg, m)


@pytest.mark.parametrize("mode", ["multiclass", "multilabel"])
def test_per_class_rows_equal_sklearn(mode):
    p, y = make_multiclass(0) if mode == "multiclass" else make_multilabel(0, k=4)
    thr = [0.3, 0.5, 0.6, 0.45] if mode == "multilabel" else 0.5
    names = ["a", "b", "c", "d"]
    metrics = compute_classification_metrics(p, y, mode, thr, names)
    table = per_class_rows(metrics)
    assert_table_matches_sklearn({"class_names": names, **table}, y, p, mode, thr)
    assert [r["threshold"] for r in table["per_class"]] == (thr if mode == "multilabel" else [None] * 4)
    assert table["averages"]["macro"]["auc"] == pytest.approx(metrics["auc"])  # the headline value
    with pytest.raises(ValueError, match="multiclass or multilabel"):
        per_class_rows(compute_classification_metrics(p[:, 0], (y if y.ndim == 1 else y[:, 0]) > 0, "binary"))


def test_nih14_report_table_files_and_undefined_label(tmp_path):
    """14 labels, one of them never positive: the table gives n/a for it, the rest equal scikit-learn."""
    p, y = make_multilabel(3, n=120, k=14)
    y[:, 13] = 0  # 'Hernia' has no positive case
    with pytest.warns(RuntimeWarning):
        write_classification_report(tmp_path, y, p, class_names=NIH14, mode="multilabel", n_bootstrap=30, plots=True)
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert_table_matches_sklearn(report, y, p, "multilabel", 0.5)
    hernia = report["per_class"][13]
    assert hernia["class"] == "Hernia" and hernia["auc"] is None and hernia["n_positive"] == 0
    ci = report["confidence_intervals"]["auc"]
    macro = report["averages"]["macro"]
    assert (macro["auc_ci_lower"], macro["auc_ci_upper"]) == (ci["lower"], ci["upper"])
    assert report["per_class"][5]["auc_ci_lower"] == ci["per_class"]["lower"][5]
    lo, hi = report["per_class"][0]["auc_ci_lower"], report["per_class"][0]["auc_ci_upper"]
    assert lo <= report["per_class"][0]["auc"] <= hi
    with open(tmp_path / "per_class.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(PER_CLASS_COLUMNS) and [r["class"] for r in rows] == [*NIH14, "macro", "micro"]
    assert float(rows[2]["auc"]) == pytest.approx(skm.roc_auc_score(y[:, 2], p[:, 2]), abs=1e-12)
    assert rows[13]["auc"] == "" and float(rows[-1]["auc"]) == pytest.approx(skm.roc_auc_score(y, p, average="micro"))
    md = (tmp_path / "per_class.md").read_text().splitlines()
    table = [line for line in md if line.startswith("| ")]
    assert len(table) == 1 + 14 + 2  # header, 14 labels, macro, micro
    assert table[14].startswith("| Hernia | 0 | 120 | n/a |")
    assert f"| {skm.roc_auc_score(y[:, 0], p[:, 0]):.3f} |" in table[1]
    assert Path(tmp_path / "roc.png").is_file()
