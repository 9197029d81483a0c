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
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from monai_transfer.handlers.unfreeze import GradualUnfreeze
from monai_transfer.networks.nets import Pretrained2DNet

ignite_engine = pytest.importorskip("ignite.engine")
Engine, Events = ignite_engine.Engine, ignite_engine.Events

DATA = [(torch.rand(2, 1, 32, 32), torch.tensor([0, 1])) for _ in range(2)]


def _net():
    torch.manual_seed(0)
    return Pretrained2DNet(backbone="resnet18", weights=None, fine_tune="linear_probe", dropout=0.0)


def _trainer(net, opt):
    def step(engine, batch):
        net.train()
        opt.zero_grad()
        loss = F.cross_entropy(net(batch[0]), batch[1])
        loss.backward()
        opt.step()
        return loss.item()

    return Engine(step)


def test_unfreezes_on_schedule_in_ignite_run():
    net = _net()
    opt = torch.optim.SGD(net.param_groups(0.1, layer_decay=0.5, include_frozen=True), lr=0.1)
    trainer = _trainer(net, opt)
    handler = GradualUnfreeze(net, schedule={"2": 1, "3": -1})  # JSON-style keys
    handler.attach(trainer)
    handler.attach(trainer)  # attaching twice is harmless
    seen, stem = {}, {}

    @trainer.on(Events.EPOCH_STARTED)
    def record(engine):
        seen[engine.state.epoch] = net.num_frozen_stages

    @trainer.on(Events.EPOCH_COMPLETED)
    def snap(engine):
        stem[engine.state.epoch] = net.features.body.conv1.weight.detach().clone()

    stem0 = net.features.body.conv1.weight.detach().clone()
    last0 = net.stages()[4][1].conv2.weight.detach().clone()
    trainer.run(DATA, max_epochs=3)
    assert seen == {1: 5, 2: 4, 3: 0}
    assert torch.equal(stem[2], stem0)  # frozen through epochs 1-2 although in the optimizer
    assert not torch.equal(stem[3], stem0)  # trained once unfrozen
    assert not torch.equal(net.stages()[4][1].conv2.weight, last0)
    assert all(p.requires_grad for p in net.parameters())


def test_adds_new_params_to_optimizer():
    net = _net()
    opt = torch.optim.SGD(net.param_groups(0.1), lr=0.1)  # head only
    assert [g["name"] for g in opt.param_groups] == ["head"]
    handler = GradualUnfreeze(net, every_n_epochs=1, stages_per_step=2, optimizer=opt, layer_decay=0.5)
    trainer = _trainer(net, opt)
    handler.attach(trainer)
    trainer.run(DATA, max_epochs=2)
    assert net.num_frozen_stages == 3
    assert [g["name"] for g in opt.param_groups] == ["head", "stage3", "stage4"]
    assert opt.param_groups[1]["lr"] == pytest.approx(0.1 * 0.5**2) and opt.param_groups[2]["lr"] == pytest.approx(0.05)
    ids = [id(p) for g in opt.param_groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len([p for p in net.parameters() if p.requires_grad])


def test_schedule_is_a_function_of_epoch_only():
    net = _net()
    h = GradualUnfreeze(net, schedule={3: 1, 5: 3, 8: -1})
    assert [h.unfrozen_at(e) for e in range(1, 10)] == [0, 0, 1, 1, 3, 3, 3, 5, 5]
    assert h.apply(6) == 2  # a resumed run jumps straight to the right state
    every = GradualUnfreeze(_net(), every_n_epochs=2)
    assert [every.unfrozen_at(e) for e in range(1, 8)] == [0, 0, 1, 1, 2, 2, 3]


@pytest.mark.parametrize(
    "kwargs,err",
    [
        ({}, ValueError),
        ({"schedule": {1: 1}, "every_n_epochs": 2}, ValueError),
        ({"schedule": {0: 1}}, ValueError),
        ({"every_n_epochs": 0}, ValueError),
    ],
)
def test_invalid_arguments(kwargs, err):
    with pytest.raises(err):
        GradualUnfreeze(_net(), **kwargs)
    with pytest.raises(TypeError, match="freeze_stages"):
        GradualUnfreeze(torch.nn.Linear(2, 2), every_n_epochs=1)
