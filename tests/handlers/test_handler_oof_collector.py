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
"""``OOFCollector``: the out-of-fold predictions of every epoch of a cross-validation fold."""

from __future__ import annotations

import numpy as np
import torch

from tests.utils import REPO_ROOT

TRAIN = REPO_ROOT / "bundles" / "xray" / "configs" / "train.json"


def test_oof_collector_records_evaluations_during_training_only():
    """Per trainer epoch: the evaluator's probabilities (float64), one-hot labels as indices and the ids (``None``
    without one); the evaluation after training (the report run) is not recorded."""
    from ignite.engine import Engine, Events

    from monai_transfer.handlers.oof_collector import OOFCollector

    def _step(engine, batch):  # decollated evaluator output, as MONAI's evaluator leaves it
        return [{"pred": torch.tensor(p), "label": torch.tensor(y)} for p, y in batch]

    evaluator = Engine(_step)
    data = [[([0.2, 0.8], [0.0, 1.0]), ([0.6, 0.4], [1.0, 0.0])], [([0.9, 0.1], [1.0, 0.0])]]
    trainer = Engine(lambda e, b: None)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: evaluator.run(data))
    collector = OOFCollector()
    collector.attach(trainer, evaluator)
    trainer.run([0], max_epochs=2)
    evaluator.run(data)  # after training: not recorded
    assert sorted(collector.epochs) == [1, 2]
    probs, labels, ids = collector.epochs[2]
    np.testing.assert_allclose(probs, [[0.2, 0.8], [0.6, 0.4], [0.9, 0.1]], atol=1e-7)
    assert probs.dtype == np.float64 and labels.tolist() == [1, 0, 0] and ids == [None, None, None]
