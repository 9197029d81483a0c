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
"""Report files exist, parse and hold the right numbers; PNGs are real, non-trivial images; Grad-CAM overlays."""

from __future__ import annotations

import csv
import json
import tempfile
import unittest
from pathlib import Path

import numpy as np
import torch
from parameterized import parameterized
from PIL import Image
from sklearn import metrics as skm

from monai_transfer.metrics import save_threshold
from monai_transfer.reports import save_gradcam_overlays, write_classification_report
from tests.metrics.test_functional import make_binary, make_multiclass, make_multilabel

MAKERS = {"binary": make_binary, "multiclass": make_multiclass, "multilabel": make_multilabel}
NAMES = {"binary": ["normal", "pneumonia"], "multiclass": ["a", "b", "c", "d"], "multilabel": ["x", "y", "z"]}


def check_png(test: unittest.TestCase, path: Path, min_width: int = 300, min_bytes: int = 10_000) -> np.ndarray:
    test.assertTrue(path.is_file(), path)
    test.assertGreater(path.stat().st_size, min_bytes, path)
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        test.assertEqual(im.format, "PNG")
        test.assertGreater(im.width, min_width, path)
        arr = np.asarray(im.convert("RGB"))
    test.assertGreater(len(np.unique(arr.reshape(-1, 3), axis=0)), 10, f"{path} is (almost) a single colour")
    return arr


class TestWriteReport(unittest.TestCase):
    @parameterized.expand([(m,) for m in MAKERS])
    def test_report_files(self, mode):
        p, y = MAKERS[mode](0)
        names = NAMES[mode]
        ids = [f"/data/case_{i}.png" for i in range(len(p))]
        with tempfile.TemporaryDirectory() as d:
            thr = {"binary": 0.4, "multiclass": None, "multilabel": [0.4, 0.5, 0.6]}[mode]
            written = write_classification_report(
                d, y, p, ids=ids, class_names=names, threshold=thr, mode=mode,
                meta={"weights": "packaged", "data": "synthetic", "split": "test"}, n_bootstrap=200,
            )  # fmt: skip
            files = {"metrics", "predictions", "roc", "confusion_matrix", "reliability"}
            self.assertEqual(set(written), files | (set() if mode == "binary" else {"per_class_csv", "per_class_md"}))
            report = json.loads((Path(d) / "metrics.json").read_text())
            self.assertEqual(report["meta"]["weights"], "packaged")
            self.assertEqual(report["class_names"], names)
            self.assertEqual(report["n_samples"], len(p))
            self.assertEqual(
                sum(report["counts"].values()), int(np.asarray(y).sum()) if mode == "multilabel" else len(p)
            )
            auc = skm.roc_auc_score(y, p, multi_class="ovr") if mode == "multiclass" else skm.roc_auc_score(y, p)
            self.assertAlmostEqual(report["metrics"]["auc"], auc, places=10)
            for m in ("auc", "sensitivity", "specificity"):
                ci = report["confidence_intervals"][m]
                self.assertLessEqual(ci["lower"], ci["upper"])
            if mode == "binary":
                self.assertEqual(report["threshold"]["value"], 0.4)
                pred = (p >= 0.4).astype(int)
                self.assertAlmostEqual(report["metrics"]["sensitivity"], skm.recall_score(y, pred), places=10)
                pred5 = (p >= 0.5).astype(int)
                self.assertAlmostEqual(report["metrics_at_0.5"]["sensitivity"], skm.recall_score(y, pred5), places=10)
            elif mode == "multiclass":
                self.assertNotIn("metrics_at_0.5", report)
                self.assertIsNone(report["threshold"]["value"])
            with open(Path(d) / "predictions.csv", newline="") as f:
                rows = list(csv.DictReader(f))
            self.assertEqual(len(rows), len(p))
            self.assertEqual(rows[3]["id"], ids[3])
            if mode == "multilabel":
                self.assertEqual(int(rows[0]["label_y"]), int(y[0, 1]))
                self.assertAlmostEqual(float(rows[0]["prob_z"]), p[0, 2], places=5)
            else:
                self.assertEqual(int(rows[0]["label"]), int(y[0]))
                col = f"prob_{names[-1]}"
                self.assertAlmostEqual(float(rows[0][col]), (p[0] if mode == "binary" else p[0, -1]), places=5)
                acc = np.mean([int(r["label"]) == int(r["prediction"]) for r in rows])
                self.assertAlmostEqual(acc, report["metrics"]["accuracy"], places=10)
            for name in ("roc.png", "confusion_matrix.png", "reliability.png"):
                check_png(self, Path(d) / name)

    def test_threshold_from_file_and_nan_as_null(self):
        p, y = make_binary(1, n=60)
        y[:] = 1  # a class absent: AUC undefined -> null in JSON, no crash
        with tempfile.TemporaryDirectory() as d:
            path = save_threshold(Path(d) / "models" / "threshold.json", 0.6, method="youden")
            with self.assertWarns(RuntimeWarning):
                write_classification_report(Path(d) / "r", y, p, threshold=path, n_bootstrap=50)
            report = json.loads((Path(d) / "r" / "metrics.json").read_text())
            self.assertIsNone(report["metrics"]["auc"])
            self.assertEqual(report["threshold"]["value"], 0.6)
            self.assertIn("threshold.json", report["threshold"]["source"])
            self.assertAlmostEqual(report["metrics"]["sensitivity"], float(np.mean(p >= 0.6)), places=12)


class TestGradCAM(unittest.TestCase):
    def test_overlays_original_geometry(self):
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(4, 8, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
            torch.nn.Linear(8, 2),
        )
        x = torch.rand(3, 1, 32, 32)
        originals = [np.random.default_rng(i).random((400 + i, 360)) for i in range(3)]  # (H0, W0) != input size
        with tempfile.TemporaryDirectory() as d:
            paths = save_gradcam_overlays(
                model, x, "3", d, n=2, class_index=1, original_images=originals, ids=["/a/p1.nii.gz", "p2.png"]
            )
            self.assertEqual([p.name for p in paths], ["gradcam_p1.png", "gradcam_p2.png"])
            for i, path in enumerate(paths):
                arr = check_png(self, path, min_width=300, min_bytes=1000)
                self.assertEqual(arr.shape[:2], originals[i].shape)
            self.assertTrue(model.training)  # mode restored
            with self.assertRaisesRegex(ValueError, "original_images"):
                save_gradcam_overlays(model, x, "3", d, n=3, original_images=originals[:1])


if __name__ == "__main__":
    unittest.main()
