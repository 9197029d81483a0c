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
"""Metric handlers inside a tiny MONAI SupervisedEvaluator, checked against scikit-learn."""

from __future__ import annotations

import unittest

import numpy as np
import torch
from monai.data import DataLoader, MetaTensor
from monai.engines import SupervisedEvaluator
from monai.transforms import Activationsd
from sklearn import metrics as skm

from monai_transfer.handlers.metric_handlers import AUCHandler, ClassificationMetricsHandler, OperatingPointHandler


class MeanNet(torch.nn.Module):
    """Deterministic 'classifier': logit of class 1 grows with the image mean."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = (x.mean(dim=(1, 2, 3)) - 0.5) * 8.0
        return torch.stack([-m, m], 1)


def make_data(n: int = 40, seed: int = 0, multiclass: bool = False) -> list[dict]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    items = []
    for i, lab in enumerate(labels):
        img = rng.random((1, 8, 8)).astype(np.float32) * 0.6 + 0.2 * lab
        items.append(
            {"image": MetaTensor(torch.as_tensor(img), meta={"filename_or_obj": f"/data/img_{i:03d}.png"}),
             "label": torch.tensor(int(lab))}
        )  # fmt: skip
    return items


def expected_probs(items: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    x = torch.stack([d["image"].as_tensor() for d in items])
    p = torch.softmax(MeanNet()(x), 1)[:, 1].numpy()
    return p, np.array([int(d["label"]) for d in items])


def make_evaluator(items, key_metric, additional=None, handlers=None, batch_size=7, sampler=None):
    return SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(items, batch_size=batch_size, shuffle=False, sampler=sampler, num_workers=0),
        network=MeanNet(),
        postprocessing=Activationsd(keys="pred", softmax=True),
        key_val_metric=key_metric,
        additional_metrics=additional,
        val_handlers=handlers,
    )


class TestMetricHandlers(unittest.TestCase):
    def test_in_evaluator(self):
        items = make_data()
        p, y = expected_probs(items)
        evaluator = make_evaluator(
            items,
            {"val_auc": AUCHandler(mode="binary")},
            {
                "val_bal": OperatingPointHandler("balanced_accuracy", threshold=0.4),
                "val_spec": OperatingPointHandler("specificity"),
                "val_all": ClassificationMetricsHandler(prefix="val_", class_names=["normal", "pneumonia"]),
            },
        )
        evaluator.run()
        m = evaluator.state.metrics
        self.assertAlmostEqual(m["val_auc"], skm.roc_auc_score(y, p), places=6)
        self.assertAlmostEqual(m["val_bal"], skm.balanced_accuracy_score(y, (p >= 0.4).astype(int)), places=6)
        self.assertAlmostEqual(m["val_spec"], skm.recall_score(y, (p >= 0.5).astype(int), pos_label=0), places=6)
        self.assertAlmostEqual(m["val_f1"], skm.f1_score(y, (p >= 0.5).astype(int)), places=6)
        self.assertAlmostEqual(m["val_brier"], skm.brier_score_loss(y, p), places=6)
        self.assertIn("val_support/pneumonia", m)
        self.assertNotIn("val_all", m)  # flattened, no nested dict
        self.assertTrue(all(isinstance(v, (int, float)) for v in m.values()))
        # key metric drives best-model selection
        self.assertEqual(evaluator.state.best_metric, m["val_auc"])

    def test_multiclass_micro(self):
        rng = np.random.default_rng(1)
        p = rng.dirichlet(np.ones(3), 30).astype(np.float32)
        y = rng.integers(0, 3, 30)
        handler = AUCHandler(mode="multiclass", average="micro", output_transform=lambda out: out)
        handler.reset()
        handler.update((torch.as_tensor(p[:13]), torch.as_tensor(y[:13])))
        handler.update((torch.as_tensor(p[13:]), torch.as_tensor(y[13:])))
        self.assertAlmostEqual(handler.compute(), skm.roc_auc_score(np.eye(3)[y], p, average="micro"), places=6)

    def test_multiclass_and_multilabel_in_evaluator(self):
        """3 outputs: the bundle's mode-dependent handlers (softmax + multiclass, sigmoid + multilabel) vs sklearn."""
        rng = np.random.default_rng(2)
        weight = torch.as_tensor(rng.normal(size=(3, 64)), dtype=torch.float32)
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3, bias=False))
        net[1].weight.data = weight
        x = torch.as_tensor(rng.random((30, 1, 8, 8)), dtype=torch.float32)
        logits = net(x).detach()
        names = ["a", "b", "c"]
        for mode in ("multiclass", "multilabel"):
            if mode == "multiclass":
                y = rng.integers(0, 3, 30)
                label, p = torch.as_tensor(y), torch.softmax(logits, 1).numpy()
            else:
                y = rng.integers(0, 2, (30, 3))
                label, p = torch.as_tensor(y), torch.sigmoid(logits).numpy()
            items = [{"image": x[i], "label": label[i]} for i in range(30)]
            evaluator = SupervisedEvaluator(
                device=torch.device("cpu"),
                val_data_loader=DataLoader(items, batch_size=9, shuffle=False, num_workers=0),
                network=net,
                postprocessing=Activationsd(keys="pred", softmax=mode == "multiclass", sigmoid=mode == "multilabel"),
                key_val_metric={"val_auc": AUCHandler(mode=mode)},
                additional_metrics={
                    "val_all": ClassificationMetricsHandler(mode=mode, class_names=names, prefix="val_"),
                    "val_sens": OperatingPointHandler("sensitivity", mode=mode, threshold=[0.4, 0.5, 0.6]),
                },
            )
            evaluator.run()
            m = evaluator.state.metrics
            onehot = np.eye(3, dtype=int)[y] if mode == "multiclass" else y
            ref = skm.roc_auc_score(y, p, multi_class="ovr") if mode == "multiclass" else skm.roc_auc_score(y, p)
            self.assertAlmostEqual(m["val_auc"], ref, places=5)
            self.assertAlmostEqual(m["val_auc_micro"], skm.roc_auc_score(onehot, p, average="micro"), places=5)
            for k, c in enumerate(names):
                self.assertAlmostEqual(m[f"val_auc/{c}"], skm.roc_auc_score(onehot[:, k], p[:, k]), places=5)
            pred = np.eye(3, dtype=int)[p.argmax(1)] if mode == "multiclass" else (p >= [0.4, 0.5, 0.6]).astype(int)
            self.assertAlmostEqual(m["val_sens"], skm.recall_score(onehot, pred, average="macro"), places=5)
        with self.assertRaisesRegex(ValueError, "use mode='multiclass'"):
            handler = AUCHandler(output_transform=lambda out: out)  # the default binary mode on 3 columns
            handler.reset()
            handler.update((torch.as_tensor(p), torch.as_tensor(y)))
            handler.compute()

    def test_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, "average"):
            AUCHandler(average="weighted")
        with self.assertRaisesRegex(ValueError, "metric_name"):
            OperatingPointHandler("dice")


if __name__ == "__main__":
    unittest.main()
