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
"""ClassificationPredictionWriter in a MONAI evaluator: 2-class threshold, arg-max, multi-label per-label thresholds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import DataLoader, MetaTensor
from monai.engines import SupervisedEvaluator
from monai.transforms import Activationsd

from monai_transfer.handlers.prediction_writer import ClassificationPredictionWriter
from monai_transfer.metrics import save_threshold
from tests.utils import read_csv


def _run(tmp_path, mode, threshold, k=3, n=10):
    rng = np.random.default_rng(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, k))
    torch.manual_seed(0)
    x = torch.as_tensor(rng.random((n, 1, 4, 4)), dtype=torch.float32)
    items = [{"image": MetaTensor(x[i], meta={"filename_or_obj": f"/d/img_{i}.png"})} for i in range(n)]
    writer = ClassificationPredictionWriter(tmp_path, class_names=["Edema", "Mass", "Nodule"][:k], threshold=threshold,
                                            mode=mode)  # fmt: skip
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(items, batch_size=4, num_workers=0),
        network=net,
        postprocessing=Activationsd(keys="pred", sigmoid=mode == "multilabel", softmax=mode != "multilabel"),
    )
    writer.attach(evaluator)
    evaluator.run()
    with torch.no_grad():
        logits = net(x)
    probs = torch.sigmoid(logits) if mode == "multilabel" else torch.softmax(logits, 1)
    return writer, read_csv(tmp_path / "predictions.csv"), probs.numpy()


def test_multilabel_per_label_thresholds_from_file(tmp_path):
    thr = save_threshold(tmp_path / "models" / "threshold.json", [0.3, 0.5, 0.7], method="youden", mode="multilabel")
    writer, rows, probs = _run(tmp_path / "out", "multilabel", thr)
    assert writer.threshold_used == [0.3, 0.5, 0.7] and len(rows) == 10
    names = ["Edema", "Mass", "Nodule"]
    for i, r in enumerate(rows):
        assert r["file_name"] == f"img_{i}.png"
        np.testing.assert_allclose([float(r[f"prob_{c}"]) for c in names], probs[i], atol=1e-6)
        expected = (probs[i] >= [0.3, 0.5, 0.7]).astype(int)
        assert [int(r[f"pred_{c}"]) for c in names] == expected.tolist()
        assert r["prediction_names"] == ";".join(c for c, v in zip(names, expected) if v)
        assert r["threshold"] == "0.300000;0.500000;0.700000"
    # a missing file falls back to 0.5 for every label; a wrong count is an error
    writer, rows, probs = _run(tmp_path / "out2", "multilabel", tmp_path / "nowhere.json")
    assert writer.threshold_used == [0.5, 0.5, 0.5]
    with pytest.raises(ValueError, match="one per label"):
        _run(tmp_path / "out3", "multilabel", [0.2, 0.4])


def test_multiclass_arg_max_and_mode_check(tmp_path):
    writer, rows, probs = _run(tmp_path, "multiclass", None)
    assert writer.threshold_used is None
    assert [int(r["prediction"]) for r in rows] == probs.argmax(1).tolist()
    with pytest.raises(ValueError, match="mode must be"):
        ClassificationPredictionWriter(tmp_path, mode="multi")
