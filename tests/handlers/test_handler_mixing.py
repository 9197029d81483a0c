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
"""``MixBatchHandler``: MixUp/CutMix of the trainer's batches."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from monai.data import MetaTensor

from monai_transfer.handlers.mixing import MixBatchHandler

IMAGES = torch.arange(4 * 1 * 4 * 4, dtype=torch.float32).reshape(4, 1, 4, 4)
LABELS = torch.tensor([0, 1, 1, 0])


@pytest.mark.parametrize("kwargs", [{"mixup_alpha": 0.4}, {"cutmix_alpha": 1.0}, {"mixup_alpha": 1, "cutmix_alpha": 1}])
def test_handler_is_deterministic_and_targets_stay_distributions(kwargs):
    batch = {"image": MetaTensor(IMAGES), "label": LABELS[:, None], "other": "kept"}
    first = MixBatchHandler(seed=3, **kwargs).mix(batch, iteration=5)
    again = MixBatchHandler(seed=3, **kwargs).mix(batch, iteration=5)
    torch.testing.assert_close(first["image"], again["image"])
    torch.testing.assert_close(first["label"], again["label"])
    assert first["other"] == "kept" and batch["label"].shape == (4, 1)  # the loaded batch is not changed
    torch.testing.assert_close(first["label"].sum(1), torch.ones(4))
    others = [MixBatchHandler(seed=3, **kwargs).mix(batch, iteration=i)["label"] for i in range(6, 12)]
    assert any(not torch.equal(o, first["label"]) for o in others)


def test_handler_replaces_the_engine_batch_for_tuples_and_multilabel():
    handler = MixBatchHandler(seed=0, mixup_alpha=0.5, num_classes=2, one_hot=False)
    multi_hot = torch.tensor([[1, 0], [0, 1], [1, 1], [0, 0]])
    engine = SimpleNamespace(state=SimpleNamespace(batch=(IMAGES, multi_hot), iteration=1))
    handler(engine)
    images, targets = engine.state.batch
    lam, perm = handler.mixer._params["lam"], handler.mixer._params["perm"]  # this iteration's draw
    torch.testing.assert_close(images, lam * IMAGES + (1 - lam) * IMAGES[perm])
    torch.testing.assert_close(targets, lam * multi_hot.float() + (1 - lam) * multi_hot[perm].float())


def test_off_is_not_attached_and_a_batch_without_labels_is_refused():
    engine = SimpleNamespace(add_event_handler=lambda *a: pytest.fail("attached while off"))
    MixBatchHandler(seed=0).attach(engine)
    with pytest.raises(KeyError, match="'label'"):
        MixBatchHandler(mixup_alpha=0.2).mix({"image": IMAGES}, 1)
    with pytest.raises(ValueError, match="seed must be non-negative"):
        MixBatchHandler(seed=-1)
