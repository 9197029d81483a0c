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
import pytest
import torch
from monai.data import DistributedSampler
from sklearn import metrics as skm

from monai_transfer.handlers.metric_handlers import AUCHandler
from monai_transfer.handlers.report_writer import ClassificationReportWriter, data_sharded_across_ranks
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

    def test_no_gather_without_process_group_and_empty_epoch(self):
        ev = make_evaluator(make_data(4), {"val_auc": AUCHandler()})
        self.assertFalse(data_sharded_across_ranks(ev))
        writer = ClassificationReportWriter("/tmp/x", n_bootstrap=10)
        with self.assertRaisesRegex(RuntimeError, "no predictions were collected"):
            writer(ev)

    @pytest.mark.slow
    def test_two_ranks_sharded_report_gathers_and_rank0_only_report_does_not(self):
        """2 gloo ranks. Sharded evaluator (DistributedSampler): both ranks get the whole-split metrics, only rank 0
        writes. Then the rank-0-only report of ``multi_gpu_train.json`` (plain loader, whole split) must not gather
        (a gather there would block on rank 1, which is at the barrier; the process group times out after 60 s)."""
        items = make_data(30, seed=4)
        p, y = expected_probs(items)
        with tempfile.TemporaryDirectory() as d:
            torch.multiprocessing.spawn(_report_rank, args=(2, items, d), nprocs=2, join=True)
            results = [json.loads((Path(d) / f"rank{r}.json").read_text()) for r in range(2)]
            self.assertEqual([r["sharded"] for r in results], [True, True])
            self.assertEqual([r["n_local"] for r in results], [15, 15])
            for r, res in enumerate(results):
                self.assertEqual(res["n_samples"], 30, f"rank {r} reports the whole split")
                self.assertAlmostEqual(res["auc"], skm.roc_auc_score(y, p), places=5)
            self.assertFalse((Path(d) / "sharded1").exists(), "only rank 0 writes files")
            rep = json.loads((Path(d) / "sharded0" / "metrics.json").read_text())
            self.assertEqual(rep["n_samples"], 30)
            self.assertAlmostEqual(load_threshold(Path(d) / "thr.json"), select_threshold(p, y, "youden"), places=6)
            with open(Path(d) / "sharded0" / "predictions.csv", newline="") as f:
                ids = [row["id"] for row in csv.DictReader(f)]
            order = list(range(0, 30, 2)) + list(range(1, 30, 2))  # rank order of DistributedSampler(shuffle=False)
            self.assertEqual(ids, [f"/data/img_{i:03d}.png" for i in order])
            whole = json.loads((Path(d) / "rank0_only" / "metrics.json").read_text())
            self.assertEqual(whole["n_samples"], 30)
            self.assertAlmostEqual(whole["metrics"]["auc"], rep["metrics"]["auc"], places=6)
            self.assertEqual(results[0]["rank0_only_sharded"], False)


def _report_rank(rank, world_size, items, out_dir):
    """One gloo rank of the two-rank report test (see the test)."""
    from datetime import timedelta

    import torch.distributed as dist

    torch.set_num_threads(1)
    init = f"file://{Path(out_dir) / 'pg'}"
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world_size, timeout=timedelta(seconds=60))
    try:
        writer = ClassificationReportWriter(
            Path(out_dir) / f"sharded{rank}", select_threshold_on="youden", threshold_path=Path(out_dir) / "thr.json",
            n_bootstrap=20, plots=False,
        )  # fmt: skip
        sampler = DistributedSampler(items, even_divisible=False, shuffle=False)
        ev = make_evaluator(items, {"val_auc": AUCHandler()}, handlers=[writer], batch_size=4, sampler=sampler)
        ev.run()
        res = {
            "sharded": data_sharded_across_ranks(ev),
            "n_local": len(ev.data_loader.sampler),
            "n_samples": writer.last_metrics["n_samples"],
            "auc": writer.last_metrics["auc"],
        }
        dist.barrier()
        if rank == 0:  # as "$@report#evaluator.run() if @is_main_rank else None"
            report = ClassificationReportWriter(Path(out_dir) / "rank0_only", n_bootstrap=20, plots=False)
            ev0 = make_evaluator(items, None, handlers=[report], batch_size=8)  # no MONAI metric: they would gather
            ev0.run()
            res["rank0_only_sharded"] = data_sharded_across_ranks(ev0)
        dist.barrier()
        (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(res))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    unittest.main()
