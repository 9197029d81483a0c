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

from monai_transfer.metrics import ClassificationMetrics, compute_classification_metrics, save_threshold
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


if __name__ == "__main__":
    unittest.main()
