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
"""``GradNormClipper``: gradient-norm clipping between backward and the optimiser step."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from torch import nn

from monai_transfer.handlers.grad_clip import GradNormClipper


def tiny_trainer(max_norm=None, lr=0.0):
    torch.manual_seed(0)
    net = nn.Linear(4, 2)
    data = [{"image": torch.randn(8, 4) * 100, "label": torch.randint(0, 2, (8,))} for _ in range(3)]
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=data,
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=lr),
        loss_function=nn.CrossEntropyLoss(),
    )
    norms = []

    # runs after the clipper (attached later on the same event) and before optimizer.step()
    def record(engine):
        norms.append(torch.nn.utils.get_total_norm([p.grad for p in net.parameters()]).item())

    if max_norm is not None:
        GradNormClipper(max_norm).attach(trainer)
    trainer.add_event_handler(IterationEvents.BACKWARD_COMPLETED, record)
    return trainer, norms


def test_grad_norm_clipper_bounds_norm_before_step():
    trainer, raw = tiny_trainer()
    trainer.run()
    assert min(raw) > 1.0  # large inputs -> large gradients
    trainer, clipped = tiny_trainer(max_norm=0.5)
    trainer.run()
    assert len(clipped) == 3 and max(clipped) == pytest.approx(0.5, rel=1e-4)
    assert trainer.state.grad_norm == pytest.approx(raw[-1], rel=1e-5)  # norm before clipping is recorded


def test_grad_norm_clipper_changes_the_update():
    t1, _ = tiny_trainer(lr=0.1)
    t1.run()
    t2, _ = tiny_trainer(max_norm=0.5, lr=0.1)
    t2.run()
    assert not torch.equal(t1.network.weight, t2.network.weight)
    with pytest.raises(ValueError, match="BACKWARD_COMPLETED"):
        GradNormClipper(1.0).attach(Engine(lambda e, b: None))
    with pytest.raises(ValueError, match="max_norm"):
        GradNormClipper(0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (AMP)")
def test_grad_norm_clipper_unscales_under_amp():
    torch.manual_seed(0)
    net = nn.Linear(4, 2).cuda()
    data = [{"image": torch.randn(8, 4) * 100, "label": torch.randint(0, 2, (8,))} for _ in range(3)]
    trainer = SupervisedTrainer(
        device=torch.device("cuda"),
        max_epochs=1,
        train_data_loader=data,
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
        loss_function=nn.CrossEntropyLoss(),
        amp=True,
        amp_kwargs={"dtype": torch.bfloat16},  # no fp16 overflow, but the GradScaler still scales the loss
    )
    GradNormClipper(0.5).attach(trainer)
    norms = []
    trainer.add_event_handler(
        IterationEvents.BACKWARD_COMPLETED,
        lambda e: norms.append(torch.nn.utils.get_total_norm([p.grad for p in net.parameters()]).item()),
    )
    trainer.run()
    assert len(norms) == 3 and max(norms) <= 0.5 * (1 + 1e-3)  # unscaled, clipped gradients
