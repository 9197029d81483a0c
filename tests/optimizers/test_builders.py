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

import math

import pytest
import torch
from ignite.engine import Events
from monai.handlers import LrScheduleHandler
from parameterized import parameterized
from torch import nn

from monai_transfer.optimizers.builders import build_optimizer, build_scheduler
from monai_transfer.utils.io import atomic_torch_save, safe_torch_load
from tests.handlers.test_handler_grad_clip import tiny_trainer


class GroupedNet(nn.Module):
    """Mimics Pretrained2DNet.param_groups: backbone at lr * layer_decay, head at lr * head_lr_mult."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
        self.head = nn.Linear(4, 2)

    def param_groups(self, lr, layer_decay=1.0, head_lr_mult=1.0):
        return [
            {"params": list(self.backbone.parameters()), "lr": lr * layer_decay, "name": "backbone"},
            {"params": list(self.head.parameters()), "lr": lr * head_lr_mult, "name": "head"},
        ]


@parameterized.expand(
    [
        ["adam", torch.optim.Adam],
        ["adamw", torch.optim.AdamW],
        ["sgd", torch.optim.SGD],
        ["rmsprop", torch.optim.RMSprop],
    ]
)
def test_build_optimizer_names(name, cls):
    opt = build_optimizer(nn.Linear(3, 2), name, lr=0.1, momentum=0.8)
    assert isinstance(opt, cls) and opt.param_groups[0]["lr"] == 0.1
    if name in ("sgd", "rmsprop"):
        assert opt.param_groups[0]["momentum"] == 0.8


def test_build_optimizer_uses_model_param_groups():
    net = GroupedNet()
    opt = build_optimizer(net, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.5, head_lr_mult=10.0)
    groups = {(g["name"], g["weight_decay"]): g for g in opt.param_groups}
    # conv weight decays; conv bias + BN weight/bias do not; head weight decays, head bias does not
    assert {k: len(g["params"]) for k, g in groups.items()} == {
        ("backbone", 0.05): 1,
        ("backbone", 0.0): 3,
        ("head", 0.05): 1,
        ("head", 0.0): 1,
    }
    assert groups[("backbone", 0.05)]["lr"] == pytest.approx(5e-4)
    assert groups[("head", 0.0)]["lr"] == pytest.approx(1e-2)
    n_params = sum(len(g["params"]) for g in opt.param_groups)
    assert n_params == len(list(net.parameters()))
    net.backbone.requires_grad_(False)
    assert sum(len(g["params"]) for g in build_optimizer(net, "sgd", lr=0.1).param_groups) == 2


def test_build_optimizer_plain_model_skips_frozen_and_warns():
    net = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
    net[0].requires_grad_(False)
    with pytest.warns(UserWarning, match="no param_groups"):
        opt = build_optimizer(net, "sgd", lr=0.1, layer_decay=0.7)
    assert [p.shape for p in opt.param_groups[0]["params"]] == [torch.Size([2, 3]), torch.Size([2])]
    opt = build_optimizer(net, "sgd", lr=0.1, include_frozen=True)  # for gradual unfreezing
    assert len(opt.param_groups[0]["params"]) == 4
    net.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameter"):
        build_optimizer(net, "sgd", lr=0.1)
    with pytest.raises(ValueError, match="optimizer name"):
        build_optimizer(nn.Linear(2, 2), "lamb")


def _lrs(sched, steps):
    out = []
    for _ in range(steps):
        out.append([g["lr"] for g in sched.optimizer.param_groups])
        sched.optimizer.step()
        sched.step()
    return out


def test_warmup_cosine_values_keep_group_ratios():
    opt = build_optimizer(GroupedNet(), "sgd", lr=0.1, head_lr_mult=10.0)
    sched = build_scheduler(opt, "cosine", epochs=5, steps_per_epoch=4, warmup_epochs=1)  # 4 warm-up of 20 steps
    lrs = _lrs(sched, 20)
    for step in range(20):
        if step < 4:
            factor = step / 4
        else:
            factor = 0.5 * (1 + math.cos(math.pi * (step - 4) / 16))
        assert lrs[step][0] == pytest.approx(0.1 * factor, abs=1e-12)
        assert lrs[step][1] == pytest.approx(1.0 * factor, abs=1e-12)
    assert max(lr[0] for lr in lrs) == pytest.approx(0.1)


def test_onecycle_and_none():
    opt = build_optimizer(nn.Linear(2, 2), "sgd", lr=0.2)
    lrs = [lr[0] for lr in _lrs(build_scheduler(opt, "onecycle", epochs=4, steps_per_epoch=5, warmup_epochs=1), 20)]
    assert lrs.index(max(lrs)) == 4 and max(lrs) == pytest.approx(0.2)
    assert lrs[0] < 0.02 and lrs[-1] < 1e-4
    opt = build_optimizer(nn.Linear(2, 2), "sgd", lr=0.2)
    assert {lr[0] for lr in _lrs(build_scheduler(opt, "none", epochs=2, steps_per_epoch=3), 6)} == {0.2}
    with pytest.raises(ValueError, match="scheduler name"):
        build_scheduler(opt, "step")


@pytest.mark.parametrize("name", ["cosine", "onecycle", "none"])
def test_scheduler_state_is_weights_only_loadable(name, tmp_path):
    opt = build_optimizer(nn.Linear(2, 2), "adamw", lr=0.01)
    sched = build_scheduler(opt, name, epochs=3, steps_per_epoch=2, warmup_epochs=1 if name != "none" else 0)
    _lrs(sched, 3)
    path = atomic_torch_save({"lr_scheduler": sched.state_dict(), "optimizer": opt.state_dict()}, tmp_path / "c.pt")
    loaded = safe_torch_load(path)
    opt2 = build_optimizer(nn.Linear(2, 2), "adamw", lr=0.01)
    sched2 = build_scheduler(opt2, name, epochs=3, steps_per_epoch=2, warmup_epochs=1 if name != "none" else 0)
    sched2.load_state_dict(loaded["lr_scheduler"])
    assert sched2.last_epoch == sched.last_epoch == 3
    assert sched2.get_last_lr() == sched.get_last_lr()


def test_lr_schedule_handler_steps_per_iteration():
    trainer, _ = tiny_trainer(lr=0.1)
    sched = build_scheduler(trainer.optimizer, "cosine", epochs=1, steps_per_epoch=3, warmup_epochs=0)
    LrScheduleHandler(sched, epoch_level=False, print_lr=False).attach(trainer)
    seen = []
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: seen.append(e.optimizer.param_groups[0]["lr"]))
    trainer.run()
    assert seen == pytest.approx([0.1, 0.1 * 0.75, 0.1 * 0.25])
