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
"""``python -m monai_transfer.evaluate`` on a multi-label bundle: the xray bundle's configs with ``mode="multilabel"``
and 4 NIH findings, random weights, per-label ``threshold.json``; labels as one 0/1 column per finding or as a
``;``/``|``-separated list; the per-label report against scikit-learn on the written probabilities."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from monai_transfer.evaluate import EXIT_FAILURES, EXIT_OK, EXIT_USAGE, main
from tests.reports.test_tables import NIH14
from tests.utils import REPO_ROOT, read_csv

__all__: list[str] = []

NAMES = NIH14[:4]
FAST = ["--n_bootstrap", "20", "--device", "cpu", "--no_progress", "--batch_size", "8"]
N = 16


def _labels(i: int) -> list[int]:
    """Finding k is present on case i when ``(i + k) % 3 == 0``: every finding positive and negative."""
    return [int((i + k) % 3 == 0) for k in range(len(NAMES))]


@pytest.fixture(scope="module")
def ml_bundle(tmp_path_factory) -> Path:
    """A multi-label copy of ``bundles/xray`` (32 px, 4 findings) with random weights and a per-label threshold."""
    from monai.bundle import ConfigParser

    from monai_transfer.metrics.threshold import save_threshold
    from monai_transfer.utils.io import atomic_torch_save

    bundle = tmp_path_factory.mktemp("xray_ml")
    shutil.copytree(REPO_ROOT / "bundles" / "xray" / "configs", bundle / "configs")
    cfg = json.loads((bundle / "configs" / "inference.json").read_text())
    cfg.update(bundle_root=str(bundle), mode="multilabel", class_names=NAMES, image_size=32)
    (bundle / "configs" / "inference.json").write_text(json.dumps(cfg))
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    torch.manual_seed(0)
    atomic_torch_save(parser.get_parsed_content("network_def").state_dict(), bundle / "models" / "model.pt")
    save_threshold(bundle / "models" / "threshold.json", [0.3, 0.45, 0.5, 0.6], "youden", mode="multilabel",
                   class_names=NAMES)  # fmt: skip
    return bundle


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """``N`` 32x32 PNGs; finding k brightens quadrant k."""
    from monai_transfer.data import write_png

    root = tmp_path_factory.mktemp("ml_images")
    rng = np.random.default_rng(0)
    for i in range(N):
        img = rng.integers(0, 60, (32, 32))
        for k, v in enumerate(_labels(i)):
            r, c = divmod(k, 2)
            img[r * 16 : (r + 1) * 16, c * 16 : (c + 1) * 16] += 150 * v
        write_png(root / f"cxr_{i:02d}.png", img.astype(np.uint8))
    return root


def _write(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_multilabel_bundle_columns_csv_report_equals_sklearn(ml_bundle, images, tmp_path):
    labels = _write(tmp_path / "labels.csv", ["image", "split", *NAMES],
                    [[f"cxr_{i:02d}.png", "test", *_labels(i)] for i in range(N)])  # fmt: skip
    out = tmp_path / "out"
    args = ["--bundle", str(ml_bundle), "--images", str(images), "--labels", str(labels), "--output", str(out)]
    assert main(args + FAST) == EXIT_OK
    rows = read_csv(out / "predictions.csv")
    assert [r["id"] for r in rows] == [f"cxr_{i:02d}.png" for i in range(N)]
    y = np.array([[int(r[f"label_{c}"]) for c in NAMES] for r in rows])
    np.testing.assert_array_equal(y, [_labels(i) for i in range(N)])
    p = np.array([[float(r[f"prob_{c}"]) for c in NAMES] for r in rows])
    assert ((p > 0) & (p < 1)).all() and not np.allclose(p.sum(1), 1.0)  # sigmoid, not softmax
    t = np.array([0.3, 0.45, 0.5, 0.6])
    pred = np.array([[int(r[f"pred_{c}"]) for c in NAMES] for r in rows])
    clear = np.abs(p - t) > 1e-5  # a probability on its threshold may round either way at 6 decimals
    np.testing.assert_array_equal(pred[clear], (p >= t)[clear].astype(int))
    for r, d in zip(rows, pred):
        assert r["prediction_names"] == ";".join(c for c, v in zip(NAMES, d) if v)
        assert r["threshold"] == "0.300000;0.450000;0.500000;0.600000"
    report = json.loads((out / "metrics.json").read_text())
    assert report["mode"] == "multilabel" and report["class_names"] == NAMES and report["n_samples"] == N
    assert report["threshold"]["value"] == pytest.approx(t.tolist())
    from sklearn.metrics import roc_auc_score

    for c, row in enumerate(report["per_class"]):  # the report's per-label AUC on the written probabilities
        assert row["auc"] == pytest.approx(roc_auc_score(y[:, c], p[:, c]), abs=1e-5)
    assert report["averages"]["macro"]["auc"] == pytest.approx(roc_auc_score(y, p, average="macro"), abs=1e-5)
    assert report["averages"]["micro"]["auc"] == pytest.approx(roc_auc_score(y, p, average="micro"), abs=1e-5)
    md = (out / "per_class.md").read_text()
    assert f"| {NAMES[0]} |" in md and "| macro |" in md and "| micro |" in md
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "multilabel" and summary["threshold"]["value"] == pytest.approx(t.tolist())
    assert summary["threshold"]["source"].startswith("file ") and summary["n_labelled"] == N


def test_multilabel_list_labels_thresholds_failures_and_usage_errors(ml_bundle, images, tmp_path, caplog):
    """Labels as ``;``/``|``-separated findings (``none``: no finding); a ``--threshold`` file at each label's median
    probability splits every label; a bad label is a named failure (exit 2); a threshold file of another label set
    or length is a usage error (exit 1)."""
    base = tmp_path / "base"
    args = ["--bundle", str(ml_bundle), "--images", str(images)]
    assert main(args + ["--output", str(base)] + FAST) == EXIT_OK  # no labels: predictions only, no report
    assert not (base / "metrics.json").exists()
    p = np.array([[float(r[f"prob_{c}"]) for c in NAMES] for r in read_csv(base / "predictions.csv")])
    assert all(r["label_" + NAMES[0]] == "" for r in read_csv(base / "predictions.csv"))

    def cell(i: int) -> str:
        found = [c for c, v in zip(NAMES, _labels(i)) if v]
        return "none" if not found else ("|" if i % 2 else ";").join(found if i % 4 else [f.upper() for f in found])

    rows = [[f"cxr_{i:02d}.png", cell(i)] for i in range(N)]
    rows[5][1] = "Atelectasis;Pneumothorax"  # not one of the bundle's 4 findings
    labels = _write(tmp_path / "labels.csv", ["image", "label"], rows)
    from monai_transfer.metrics.threshold import save_threshold

    t = np.median(p, 0)
    thr = save_threshold(tmp_path / "median.json", t, mode="multilabel", class_names=NAMES)
    out = tmp_path / "out"
    run = args + ["--labels", str(labels), "--threshold", str(thr), "--output", str(out)] + FAST
    assert main(run) == EXIT_FAILURES
    (fail,) = read_csv(out / "failures.csv")
    assert fail["case"] == "cxr_05.png" and fail["stage"] == "labels"
    assert "row 7: unknown finding 'Pneumothorax'" in fail["reason"]
    assert main(run + ["--tolerate_failures"]) == EXIT_OK
    preds = read_csv(out / "predictions.csv")
    keep = [i for i in range(N) if i != 5]  # a case whose label is refused is not evaluated (as for 2 classes)
    assert [r["id"] for r in preds] == [f"cxr_{i:02d}.png" for i in keep]
    np.testing.assert_allclose([[float(r[f"prob_{c}"]) for c in NAMES] for r in preds], p[keep], atol=1e-6)
    y = np.array([[int(r[f"label_{c}"]) for c in NAMES] for r in preds])
    np.testing.assert_array_equal(y, [_labels(i) for i in keep])
    pred = np.array([[int(r[f"pred_{c}"]) for c in NAMES] for r in preds])
    assert (pred.min(0) == 0).all() and (pred.max(0) == 1).all()  # the median splits every label
    report = json.loads((out / "metrics.json").read_text())
    assert report["n_samples"] == N - 1 and report["threshold"]["value"] == pytest.approx(t.tolist())
    from sklearn.metrics import f1_score, roc_auc_score

    for c, row in enumerate(report["per_class"]):
        assert row["auc"] == pytest.approx(roc_auc_score(y[:, c], p[keep, c]), abs=1e-5)
        assert row["f1"] == pytest.approx(f1_score(y[:, c], pred[:, c]), abs=1e-9)
    # usage errors: exit 1, the message names the file and the problem
    caplog.set_level("ERROR", logger="monai_transfer.evaluate")
    three = save_threshold(tmp_path / "three.json", [0.5, 0.5, 0.5])
    assert main(args + ["--threshold", str(three), "--output", str(tmp_path / "o1")] + FAST) == EXIT_USAGE
    assert f"threshold file {three} holds 3 values; one or one per label (4" in caplog.text
    other = save_threshold(tmp_path / "other.json", [0.5] * 4, class_names=NIH14[4:8])
    assert main(args + ["--threshold", str(other), "--output", str(tmp_path / "o2")] + FAST) == EXIT_USAGE
    assert f"threshold file {other} is for the labels {NIH14[4:8]}" in caplog.text
    assert main(args + ["--threshold", "1.5", "--output", str(tmp_path / "o3")] + FAST) == EXIT_USAGE
    bad = _write(tmp_path / "bad.csv", ["image", "findings"], [["cxr_00.png", "none"]])
    assert main(args + ["--labels", str(bad), "--output", str(tmp_path / "o4")] + FAST) == EXIT_USAGE
    assert "needs the columns 'image' and 'label' (or one 0/1 column per label" in caplog.text
