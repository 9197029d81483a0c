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
"""Cumulative metric over several batches equals the one-shot functions."""

from __future__ import annotations

import tempfile
import unittest
from pathlib import Path

import numpy as np
import torch
from parameterized import parameterized
from sklearn import metrics as skm

from monai_transfer.metrics import (
    ClassificationMetrics,
    PredictionBuffer,
    compute_classification_metrics,
    save_threshold,
)
from tests.metrics.test_functional import make_binary, make_multiclass, make_multilabel

MAKERS = {"binary": make_binary, "multiclass": make_multiclass, "multilabel": make_multilabel}


def _as_model_output(p: np.ndarray, y: np.ndarray, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    if mode == "binary":  # (N, 2) softmax probabilities and (N,) labels, like a 2-class network
        return torch.as_tensor(np.stack([1 - p, p], 1), dtype=torch.float32), torch.as_tensor(y)
    return torch.as_tensor(p, dtype=torch.float32), torch.as_tensor(y)


class TestClassificationMetrics(unittest.TestCase):
    @parameterized.expand([(m, s) for m in MAKERS for s in (0, 1)])
    def test_batches_equal_one_shot(self, mode, seed):
        p, y = MAKERS[mode](seed)
        yp, yt = _as_model_output(p, y, mode)
        metric = ClassificationMetrics(mode=mode)
        for start in range(0, len(yp), 37):  # uneven batches
            metric(y_pred=yp[start : start + 37], y=yt[start : start + 37])
        got = metric.aggregate()
        want = compute_classification_metrics(yp, yt, mode)
        self.assertEqual(set(got), set(want))
        for k, v in want.items():
            if isinstance(v, float):
                self.assertAlmostEqual(got[k], v, places=12, msg=k)
            else:
                self.assertEqual(got[k], v, msg=k)
        metric.reset()
        with self.assertRaisesRegex(ValueError, "no buffered data"):
            metric.aggregate()

    def test_list_of_channel_first(self):
        """Decollated engine output: lists of (K,) predictions and scalar labels."""
        p, y = make_binary(0, n=50)
        yp, yt = _as_model_output(p, y, "binary")
        metric = ClassificationMetrics(mode="binary", metric_name="auc")
        metric(y_pred=list(yp[:20]), y=list(yt[:20]))
        metric(y_pred=list(yp[20:]), y=[t.reshape(1) for t in yt[20:]])
        self.assertAlmostEqual(metric.aggregate(), skm.roc_auc_score(y, yp[:, 1].numpy()), places=6)

    def test_threshold_file_read_at_aggregate(self):
        p, y = make_binary(1, n=80)
        yp, yt = _as_model_output(p, y, "binary")
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "threshold.json"
            metric = ClassificationMetrics(mode="binary", metric_name="sensitivity", threshold=path)
            metric(y_pred=yp, y=yt)
            save_threshold(path, 0.3)  # written after construction
            pred = (yp[:, 1].numpy() >= np.float32(0.3)).astype(int)
            self.assertAlmostEqual(metric.aggregate(), skm.recall_score(y, pred), places=12)

    def test_bad_metric_name(self):
        p, y = make_binary(0, n=20)
        metric = ClassificationMetrics(metric_name="dice")
        metric(y_pred=torch.as_tensor(p), y=torch.as_tensor(y))
        with self.assertRaisesRegex(KeyError, "dice"):
            metric.aggregate()


def _buffer_rank(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    """One gloo rank. Round 1: rank r buffers the cases ``index % world_size == r``; round 2: only the last rank
    buffers (its cases without ids). Each round gathers; the results are saved for the test."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        p, y = make_multiclass(3, n=30, k=3)
        idx = np.arange(len(p))[rank::world_size]
        buf, out = PredictionBuffer(), {}
        for start in range(0, len(idx), 4):
            b = idx[start : start + 4]
            buf.add(torch.as_tensor(p[b]), torch.as_tensor(y[b]), [f"img{i}" if i % 5 else None for i in b])
        out["round1"] = buf.get_data()
        buf.reset()
        if rank == world_size - 1:
            buf.add(torch.as_tensor(p[idx]), torch.as_tensor(y[idx]))
        out["round2"] = buf.get_data()
        torch.save(out, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


class TestPredictionBuffer(unittest.TestCase):
    def test_batches_lists_ids_and_reset(self):
        p, y = make_multilabel(2, n=20, k=3)
        buf = PredictionBuffer()
        buf.add(torch.as_tensor(p[:8]), torch.as_tensor(y[:8]), [f"a{i}" for i in range(8)])
        buf.add(list(torch.as_tensor(p[8:])), list(torch.as_tensor(y[8:])))  # decollated, no ids
        self.assertEqual(len(buf), 20)
        probs, labels, ids = buf.get_data()
        np.testing.assert_allclose(probs.numpy(), p.astype(np.float32))
        np.testing.assert_array_equal(labels.numpy(), y)
        self.assertEqual(ids, [f"a{i}" for i in range(8)] + [f"case_{i:05d}" for i in range(8, 20)])
        self.assertEqual(buf.get_data(name_missing=False)[2], [f"a{i}" for i in range(8)] + [None] * 12)
        with self.assertRaisesRegex(ValueError, "same number of cases"):
            buf.add(torch.as_tensor(p[:3]), torch.as_tensor(y[:2]))
        with self.assertRaisesRegex(ValueError, "needs labels"):
            buf.add(torch.as_tensor(p[:3]))
        buf.reset()
        with self.assertRaisesRegex(ValueError, "no buffered data"):
            buf.get_data()
        writer_buf = PredictionBuffer(with_labels=False)
        writer_buf.add(torch.as_tensor(p[:2]), ids=["x", "y"])
        probs, labels, ids = writer_buf.get_data()
        self.assertIsNone(labels)
        self.assertEqual((tuple(probs.shape), ids), ((2, 3), ["x", "y"]))

    def test_gathered_across_ranks_including_an_empty_rank(self):
        """2 gloo ranks: both get all cases in rank order with unique ids, also when one rank saw no case."""
        world_size = 2
        p, y = make_multiclass(3, n=30, k=3)
        with tempfile.TemporaryDirectory() as d:
            torch.multiprocessing.spawn(_buffer_rank, args=(world_size, str(Path(d) / "pg"), d), nprocs=world_size)
            results = [torch.load(Path(d) / f"rank{r}.pt") for r in range(world_size)]
        order = np.concatenate([np.arange(30)[r::world_size] for r in range(world_size)])
        last = np.arange(30)[world_size - 1 :: world_size]
        for res in results:
            probs, labels, ids = res["round1"]
            np.testing.assert_allclose(probs.numpy(), p[order].astype(np.float32))
            np.testing.assert_array_equal(labels.numpy()[:, 0], y[order])
            self.assertEqual(ids, [f"img{i}" if i % 5 else f"case_{n:05d}" for n, i in enumerate(order)])
            self.assertEqual(len(set(ids)), 30)
            probs, labels, ids = res["round2"]  # rank 0 buffered nothing and contributes nothing
            np.testing.assert_allclose(probs.numpy(), p[last].astype(np.float32))
            np.testing.assert_array_equal(labels.numpy()[:, 0], y[last])
            self.assertEqual(ids, [f"case_{n:05d}" for n in range(len(last))])


if __name__ == "__main__":
    unittest.main()
