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
"""Volume-level key metric, report and predictions of a slice evaluator (known slice probabilities)."""

from __future__ import annotations

import csv
import json
import tempfile
import unittest
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import DataLoader
from monai.engines import SupervisedEvaluator
from monai.transforms import Activationsd
from parameterized import parameterized
from sklearn import metrics as skm

from monai_transfer.data.volumes import aggregate_by_volume
from monai_transfer.handlers.metric_handlers import AUCHandler
from monai_transfer.handlers.volume_aggregation import (
    VolumeAggregator,
    VolumePredictionWriter,
    VolumeReportWriter,
    volume_ids_from_engine,
)
from monai_transfer.metrics import load_threshold, select_threshold


class LogitNet(torch.nn.Module):
    """logits ``(0, mean(x))``: the positive softmax probability of a slice is ``sigmoid(mean(x))``."""

    def forward(self, x):
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([torch.zeros_like(m), m], 1)


def make_slices(n_vol=12, seed=0):
    """Slices of ``n_vol`` volumes (2 to 5 slices each, shuffled order); positives have higher values."""
    rng = np.random.default_rng(seed)
    items = []
    for v in range(n_vol):
        label = v % 2
        for s in range(int(rng.integers(2, 6))):
            value = float(rng.normal(0.6 * label, 1.0))
            items.append(
                {"image": torch.full((1, 4, 4), value), "label": label, "source_id": f"vol_{v:02d}", "slice_index": s}
            )
    order = rng.permutation(len(items))
    return [items[i] for i in order]


def expected(items, method="mean", k=3):
    p1 = torch.sigmoid(torch.tensor([float(x["image"].mean()) for x in items])).numpy()
    probs = np.stack([1 - p1, p1], 1)
    return aggregate_by_volume([x["source_id"] for x in items], probs, [x["label"] for x in items], method, k)


def make_evaluator(items, key_metric, handlers=None, batch_size=5):
    return SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(items, batch_size=batch_size, shuffle=False, num_workers=0),
        network=LogitNet(),
        postprocessing=Activationsd(keys="pred", softmax=True),
        key_val_metric=key_metric,
        additional_metrics={"val_slice_auc": AUCHandler()},
        val_handlers=handlers,
    )


class TestVolumeAggregator(unittest.TestCase):
    @parameterized.expand([("mean", 3), ("max", 3), ("topk_mean", 2)])
    def test_key_metric_is_volume_auc(self, method, k):
        items = make_slices()
        exp = expected(items, method, k)
        ev = make_evaluator(items, {"val_volume_auc": VolumeAggregator(method=method, k=k)})
        ev.run()
        auc = skm.roc_auc_score(exp["labels"], exp["probs"][:, 1])
        self.assertAlmostEqual(ev.state.metrics["val_volume_auc"], auc, places=5)
        self.assertEqual(ev.state.key_metric_name, "val_volume_auc")
        self.assertAlmostEqual(ev.state.best_metric, auc, places=5)
        # slice-level AUC differs (slices are not the unit of the label)
        slice_p = torch.sigmoid(torch.tensor([float(x["image"].mean()) for x in items])).numpy()
        slice_auc = skm.roc_auc_score([x["label"] for x in items], slice_p)
        self.assertAlmostEqual(ev.state.metrics["val_slice_auc"], slice_auc, places=5)

    def test_other_metric_and_second_epoch_resets(self):
        items = make_slices(8, seed=3)
        agg = VolumeAggregator(metric_name="balanced_accuracy", threshold=0.5)
        ev = make_evaluator(items, {"val_volume_bacc": agg})
        ev.run()
        exp = expected(items)
        pred = (exp["probs"][:, 1] >= 0.5).astype(int)
        self.assertAlmostEqual(ev.state.metrics["val_volume_bacc"], skm.balanced_accuracy_score(exp["labels"], pred))
        self.assertEqual(len(agg.last_result["ids"]), 8)
        self.assertEqual(sum(agg.last_result["n_slices"]), len(items))  # one epoch only, not accumulated

    def test_argument_errors_and_missing_ids(self):
        with self.assertRaisesRegex(ValueError, "method must be one of"):
            VolumeAggregator(method="median")
        with self.assertRaisesRegex(ValueError, "mode must be one of"):
            VolumeAggregator(mode="ordinal")
        items = [{k: v for k, v in x.items() if k != "source_id"} for x in make_slices(2)]
        ev = make_evaluator(items, {"val_volume_auc": VolumeAggregator()})
        with self.assertRaisesRegex(ValueError, "needs a volume id"):
            ev.run()

    def test_direct_update_and_compute_without_process_group(self):
        """Without an engine or a process group the metric pools what ``update`` received (no collective)."""
        agg = VolumeAggregator(method="max")
        agg.update((torch.tensor([[0.8, 0.2], [0.3, 0.7]]), torch.tensor([0, 0]), ["a", "a"]))
        agg.update(
            ([torch.tensor([0.6, 0.4]), torch.tensor([0.1, 0.9])], [torch.tensor(1), torch.tensor(1)], ["b", "c"])
        )
        self.assertEqual(agg.compute(), 0.5)  # volume max p1: a 0.7 (neg), b 0.4, c 0.9 (pos)
        self.assertEqual(agg.last_result["ids"], ["a", "b", "c"])
        agg.reset()
        with self.assertRaisesRegex(ValueError, "at least one slice"):
            agg.compute()

    @pytest.mark.slow
    def test_two_ranks_gather_volumes_and_agree(self):
        """2 gloo processes, each evaluating its own half of the volumes: both get the single-process volume AUC."""
        import socket

        import torch.multiprocessing as mp

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]

        items = make_slices(12, seed=5)
        exp = expected(items, "topk_mean", 2)
        auc = skm.roc_auc_score(exp["labels"], exp["probs"][:, 1])
        with tempfile.TemporaryDirectory() as d:
            mp.spawn(_rank_worker, args=(2, items, d, port), nprocs=2, join=True)
            results = [json.loads((Path(d) / f"rank{r}.json").read_text()) for r in range(2)]
        for r, res in enumerate(results):
            self.assertEqual(res["n_local_volumes"], 6, f"rank {r} must see only its shard")
            self.assertAlmostEqual(res["auc"], auc, places=6, msg=f"rank {r}")
            self.assertEqual(sorted(res["ids"]), sorted(exp["ids"]))  # every volume of both ranks, once
            self.assertEqual(res["n_slices"], len(items))
        # a shard alone gives another AUC: without the gather the ranks would disagree with the whole split
        self.assertNotAlmostEqual(results[0]["local_auc"], auc, places=3)

    def test_ids_from_batch(self):
        batch = [{"source_id": "a"}, {"source_id": "b"}]
        self.assertEqual(volume_ids_from_engine([{}, {}], batch), ["a", "b"])
        self.assertEqual(volume_ids_from_engine(None, {"source_id": ["x", "y"]}), ["x", "y"])


def _rank_worker(rank, world_size, items, out_dir, port):
    """One gloo rank: evaluate the volumes ``index % world_size == rank`` and record the (gathered) volume AUC."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        shard = [x for x in items if int(x["source_id"].split("_")[1]) % world_size == rank]
        agg = VolumeAggregator(method="topk_mean", k=2)
        ev = make_evaluator(shard, {"val_volume_auc": agg})
        ev.run()
        local = expected(shard, "topk_mean", 2)
        result = {
            "auc": ev.state.metrics["val_volume_auc"],
            "ids": agg.last_result["ids"],
            "n_slices": sum(agg.last_result["n_slices"]),
            "n_local_volumes": len(local["ids"]),
            "local_auc": float(skm.roc_auc_score(local["labels"], local["probs"][:, 1])),
        }
        (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


class TestVolumeWriters(unittest.TestCase):
    def test_report_select_then_reuse_and_predictions(self):
        val, test = make_slices(12, seed=0), make_slices(10, seed=1)
        with tempfile.TemporaryDirectory() as d:
            thr_path = Path(d) / "models" / "threshold.json"
            writer = VolumeReportWriter(
                Path(d) / "val", method="max", class_names=["normal", "adrenal_mass"], select_threshold_on="youden",
                threshold_path=thr_path, meta={"split": "val"}, n_bootstrap=50, plots=False,
            )  # fmt: skip
            make_evaluator(val, {"val_volume_auc": VolumeAggregator(method="max")}, handlers=[writer]).run()
            exp = expected(val, "max")
            t = select_threshold(exp["probs"][:, 1], exp["labels"], "youden")
            self.assertAlmostEqual(load_threshold(thr_path), t, places=6)
            rep = json.loads((Path(d) / "val" / "metrics.json").read_text())
            self.assertEqual(rep["n_samples"], 12)
            self.assertAlmostEqual(rep["metrics"]["auc"], skm.roc_auc_score(exp["labels"], exp["probs"][:, 1]), 5)
            self.assertEqual(rep["meta"]["split"], "val")
            self.assertEqual(
                rep["meta"]["aggregation"],
                {
                    "level": "volume",
                    "method": "max",
                    "k": None,
                    "n_volumes": 12,
                    "n_slices": len(val),
                    "volume_platt": None,
                },
            )
            self.assertEqual(writer.meta, {"split": "val"})  # the user's meta is not modified
            with open(Path(d) / "val" / "predictions.csv") as f:
                rows = list(csv.DictReader(f))
            self.assertEqual([r["id"] for r in rows], exp["ids"])
            np.testing.assert_allclose([float(r["prob_adrenal_mass"]) for r in rows], exp["probs"][:, 1], atol=1e-6)

            # second split, stored threshold; predictions writer without labels
            writer2 = VolumeReportWriter(Path(d) / "test", class_names=["normal", "adrenal_mass"], threshold=thr_path,
                                         n_bootstrap=50, plots=False)  # fmt: skip
            preds = VolumePredictionWriter(
                Path(d) / "infer", method="topk_mean", k=2, class_names=["normal", "adrenal_mass"], threshold=thr_path
            )
            make_evaluator(test, {"val_volume_auc": VolumeAggregator()}, handlers=[writer2, preds], batch_size=3).run()
            rep2 = json.loads((Path(d) / "test" / "metrics.json").read_text())
            self.assertAlmostEqual(rep2["threshold"]["value"], t, places=6)
            self.assertEqual(rep2["n_samples"], 10)
            with open(Path(d) / "infer" / "predictions.csv") as f:
                prow = list(csv.DictReader(f))
            exp2 = expected(test, "topk_mean", 2)
            self.assertEqual([r["image"] for r in prow], exp2["ids"])
            p1 = np.array([float(r["prob_adrenal_mass"]) for r in prow])
            np.testing.assert_allclose(p1, exp2["probs"][:, 1], atol=1e-6)
            p32 = exp2["probs"][:, 1].astype(np.float32)
            self.assertEqual([int(r["prediction"]) for r in prow], [int(v >= np.float32(t)) for v in p32])

    def test_volume_calibration_is_applied_after_pooling_for_its_pooling_only(self):
        """A ``calibration.json`` with a Platt step fitted for max pooling: the max-pooled report and predictions
        are Platt-scaled (ranking unchanged), a top-k writer given the same file is not (another pooling), and a
        temperature-only file changes nothing."""
        from monai_transfer.metrics.volume_calibration import VolumePlatt

        items = make_slices(12, seed=2)
        platt = VolumePlatt(0.5, -1.0, "max")
        with tempfile.TemporaryDirectory() as d:
            cal, cal_t = Path(d) / "calibration.json", Path(d) / "temperature_only.json"
            cal.write_text(json.dumps({"method": "temperature", "temperature": 1.0, "volume_platt": platt.to_dict()}))
            cal_t.write_text(json.dumps({"method": "temperature", "temperature": 1.0}))
            names = ["normal", "adrenal_mass"]
            rep = VolumeReportWriter(Path(d) / "val", method="max", volume_calibration=cal, class_names=names,
                                     threshold=0.5, n_bootstrap=0, plots=False)  # fmt: skip
            pred = VolumePredictionWriter(Path(d) / "infer", method="max", volume_calibration=cal, class_names=names)
            other = VolumePredictionWriter(Path(d) / "topk", method="topk_mean", k=2, volume_calibration=cal,
                                           class_names=names)  # fmt: skip
            plain = VolumePredictionWriter(Path(d) / "plain", method="max", volume_calibration=cal_t, class_names=names)
            self.assertEqual((rep.platt, pred.platt, other.platt, plain.platt), (platt, platt, None, None))
            make_evaluator(items, {"val_volume_auc": VolumeAggregator(method="max")}, [rep, pred, other, plain]).run()
            exp = expected(items, "max")
            want = platt(exp["probs"])[:, 1]
            report = json.loads((Path(d) / "val" / "metrics.json").read_text())
            self.assertEqual(report["meta"]["aggregation"]["volume_platt"], platt.to_dict())
            self.assertAlmostEqual(report["metrics"]["auc"], skm.roc_auc_score(exp["labels"], want), 5)
            for sub, values in (("val", want), ("infer", want), ("plain", exp["probs"][:, 1]),
                                ("topk", expected(items, "topk_mean", 2)["probs"][:, 1])):  # fmt: skip
                with open(Path(d) / sub / "predictions.csv") as f:
                    got = [float(r["prob_adrenal_mass"]) for r in csv.DictReader(f)]
                np.testing.assert_allclose(got, values, atol=1e-6, err_msg=sub)
            self.assertFalse(np.allclose(want, exp["probs"][:, 1], atol=1e-3))  # the step did change them


if __name__ == "__main__":
    unittest.main()
