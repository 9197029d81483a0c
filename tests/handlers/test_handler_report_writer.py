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
"""ClassificationReportWriter in a tiny evaluator: Youden threshold chosen on validation, saved, reused on test."""

from __future__ import annotations

import csv
import json
import tempfile
import unittest
from pathlib import Path

import numpy as np
import torch
from sklearn import metrics as skm

from monai_transfer.handlers.metric_handlers import AUCHandler
from monai_transfer.handlers.report_writer import ClassificationReportWriter
from monai_transfer.metrics import load_threshold, select_threshold
from tests.handlers.test_handler_metrics import expected_probs, make_data, make_evaluator


class TestClassificationReportWriter(unittest.TestCase):
    def test_select_save_then_reuse(self):
        val, test = make_data(40, seed=0), make_data(30, seed=1)
        p_val, y_val = expected_probs(val)
        p_test, y_test = expected_probs(test)
        with tempfile.TemporaryDirectory() as d:
            thr_path = Path(d) / "models" / "threshold.json"
            writer = ClassificationReportWriter(
                Path(d) / "val_report", class_names=["normal", "pneumonia"], select_threshold_on="youden",
                threshold_path=thr_path, meta={"data": "synthetic", "split": "val"}, n_bootstrap=100, plots=False,
            )  # fmt: skip
            ev = make_evaluator(val, {"val_auc": AUCHandler()}, handlers=[writer])
            ev.run()
            expected_t = select_threshold(p_val, y_val, "youden")
            self.assertAlmostEqual(load_threshold(thr_path), expected_t, places=6)
            saved = json.loads(thr_path.read_text())
            self.assertEqual(saved["method"], "youden")
            val_report = json.loads((Path(d) / "val_report" / "metrics.json").read_text())
            self.assertAlmostEqual(val_report["threshold"]["value"], expected_t, places=6)
            self.assertEqual(val_report["meta"]["split"], "val")

            # test run reads the stored threshold
            writer2 = ClassificationReportWriter(
                Path(d) / "test_report", class_names=["normal", "pneumonia"], threshold=thr_path, n_bootstrap=100
            )
            ev2 = make_evaluator(test, {"val_auc": AUCHandler()}, handlers=[writer2], batch_size=4)
            ev2.run()
            rep = json.loads((Path(d) / "test_report" / "metrics.json").read_text())
            t = load_threshold(thr_path)
            pred = (p_test >= np.float32(t)).astype(int)
            self.assertAlmostEqual(rep["metrics"]["auc"], skm.roc_auc_score(y_test, p_test), places=5)
            self.assertAlmostEqual(rep["metrics"]["sensitivity"], skm.recall_score(y_test, pred), places=6)
            pred5 = (p_test >= 0.5).astype(int)
            self.assertAlmostEqual(rep["metrics_at_0.5"]["sensitivity"], skm.recall_score(y_test, pred5), places=6)
            self.assertEqual(writer2.last_metrics["n_samples"], 30)
            with open(Path(d) / "test_report" / "predictions.csv", newline="") as f:
                rows = list(csv.DictReader(f))
            self.assertEqual(len(rows), 30)
            self.assertEqual([r["id"] for r in rows], [f"/data/img_{i:03d}.png" for i in range(30)])
            for name in ("roc.png", "confusion_matrix.png", "reliability.png"):
                self.assertGreater((Path(d) / "test_report" / name).stat().st_size, 10_000)

            # a second epoch over the same evaluator resets the collected cases
            ev2.run()
            self.assertEqual(writer2.last_metrics["n_samples"], 30)

    def test_fit_calibration_before_threshold_and_prevalence(self):
        from monai_transfer.metrics.calibration import apply_temperature, fit_temperature, load_calibration

        val = make_data(60, seed=2)
        p_val, y_val = expected_probs(val)
        with tempfile.TemporaryDirectory() as d:
            cal_path, thr_path = Path(d) / "models" / "calibration.json", Path(d) / "models" / "threshold.json"
            writer = ClassificationReportWriter(
                Path(d) / "val_report", class_names=["normal", "pneumonia"], select_threshold_on="youden",
                threshold_path=thr_path, fit_calibration_to=cal_path, n_bootstrap=0, prevalence=0.1,
                training_counts={"normal": 90, "pneumonia": 10},
            )  # fmt: skip
            make_evaluator(val, {"val_auc": AUCHandler()}, handlers=[writer]).run()
            expected_t = fit_temperature(p_val, y_val, inputs="probs")
            t = load_calibration(cal_path)
            self.assertAlmostEqual(t, expected_t, places=4)
            self.assertAlmostEqual(writer.last_temperature, t, places=12)
            calibrated = apply_temperature(p_val, t, inputs="probs")
            # the threshold is chosen on the calibrated probabilities
            self.assertAlmostEqual(load_threshold(thr_path), select_threshold(calibrated, y_val, "youden"), places=5)
            self.assertIn("temperature scaling", json.loads(thr_path.read_text())["applies_to"])
            rep = json.loads((Path(d) / "val_report" / "metrics.json").read_text())
            self.assertAlmostEqual(rep["calibration"]["temperature"], t, places=12)
            self.assertLessEqual(rep["calibration"]["nll_after"], rep["calibration"]["nll_before"] + 1e-12)
            self.assertTrue((Path(d) / "val_report" / "reliability_uncalibrated.png").is_file())
            self.assertAlmostEqual(rep["metrics"]["auc"], skm.roc_auc_score(y_val, p_val), places=5)  # rank-invariant
            self.assertEqual(rep["prevalence"]["stated"], 0.1)
            self.assertEqual(rep["prevalence"]["training"], {"normal": 0.9, "pneumonia": 0.1})
            self.assertTrue(rep["warnings"])  # about half normal evaluated against 90 % in training

    def test_applied_calibration_reports_before_and_after(self):
        from monai.engines import SupervisedEvaluator
        from monai.transforms import Activationsd, Compose
        from torch.utils.data import DataLoader

        from monai_transfer.metrics import compute_ece
        from monai_transfer.transforms import ApplyTemperatured
        from tests.handlers.test_handler_metrics import MeanNet

        val = make_data(50, seed=4)
        p_raw, y = expected_probs(val)  # softmax of the raw logits
        with tempfile.TemporaryDirectory() as d:
            writer = ClassificationReportWriter(
                Path(d) / "r", class_names=["normal", "pneumonia"], applied_calibration=2.5, n_bootstrap=0
            )
            ev = SupervisedEvaluator(
                device=torch.device("cpu"), val_data_loader=DataLoader(val, batch_size=8), network=MeanNet(),
                postprocessing=Compose([ApplyTemperatured("pred", 2.5), Activationsd("pred", softmax=True)]),
                val_handlers=[writer],
            )  # fmt: skip
            ev.run()
            rep = json.loads((Path(d) / "r" / "metrics.json").read_text())
            self.assertAlmostEqual(rep["calibration"]["ece_before"], compute_ece(p_raw, y), places=5)
            self.assertNotAlmostEqual(rep["calibration"]["ece_before"], rep["calibration"]["ece_after"], places=4)
            self.assertEqual(rep["calibration"]["temperature"], 2.5)
            self.assertTrue((Path(d) / "r" / "reliability_uncalibrated.png").is_file())
        with self.assertRaisesRegex(ValueError, "not both"):
            ClassificationReportWriter(
                "/tmp/x", select_threshold_on="youden", threshold_path="t.json", fit_calibration_to="c.json",
                applied_calibration=2.0,
            )  # fmt: skip

    def test_arguments(self):
        with self.assertRaisesRegex(ValueError, "needs select_threshold_on"):
            ClassificationReportWriter("/tmp/x", fit_calibration_to="c.json")
        with self.assertRaisesRegex(ValueError, "threshold_path"):
            ClassificationReportWriter("/tmp/x", select_threshold_on="youden")
        with self.assertRaisesRegex(ValueError, "select_threshold_on"):
            ClassificationReportWriter("/tmp/x", select_threshold_on="best", threshold_path="t.json")
        with self.assertRaisesRegex(ValueError, "multiclass"):
            ClassificationReportWriter("/tmp/x", mode="multiclass", select_threshold_on="youden", threshold_path="t")


if __name__ == "__main__":
    unittest.main()
