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
from torch import nn

from monai_transfer.networks.finetune import (
    count_trainable,
    freeze_module,
    layer_decay_param_groups,
    set_bn_eval,
    unfreeze_module,
)


def _block():
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU())


def test_freeze_and_unfreeze_module():
    m = _block()
    m.train()
    freeze_module(m)
    assert count_trainable(m) == 0 and not m[1].training and m[0].training
    unfreeze_module(m)
    assert count_trainable(m) == 2 * 9 + 2 + 2 + 2
    m.train()
    freeze_module(m, freeze_bn_stats=False)
    assert m[1].training
    assert set_bn_eval(nn.Sequential(_block(), _block())) == 2


def test_layer_decay_param_groups():
    stages = [_block(), _block(), _block()]
    head = nn.Linear(2, 3)
    freeze_module(stages[0])
    groups = layer_decay_param_groups(
        [s.parameters() for s in stages], head.parameters(), lr=0.1, layer_decay=0.5, head_lr_mult=2.0, momentum=0.8
    )
    assert [(g["name"], g["lr"]) for g in groups] == [("stage1", 0.1 * 0.25), ("stage2", 0.05), ("head", 0.2)]
    assert all(g["momentum"] == 0.8 for g in groups)
    shared = list(stages[1].parameters())  # a parameter listed in two groups stays in the first only
    groups = layer_decay_param_groups([shared, shared], [], lr=1.0, layer_decay=0.1)
    assert len(groups) == 1 and groups[0]["lr"] == pytest.approx(0.01)
    with pytest.raises(ValueError, match="layer_decay"):
        layer_decay_param_groups([], [torch.nn.Parameter(torch.zeros(1))], lr=1.0, layer_decay=0.0)


def test_timm_layer_decay_groups_fall_short_with_torch_optimizers_and_frozen_stages():
    """Why :func:`layer_decay_param_groups` is kept (issue #27 reuse): timm's ``param_groups_layer_decay`` gives each
    group an ``lr_scale`` that only timm's schedulers apply, so a torch optimizer with a MONAI/torch scheduler (the
    bundles') trains every layer at the same rate; it drops frozen parameters, which a later unfreezing handler could
    then not train; and a model without timm's ``group_matcher`` (a torchvision backbone) is one single layer. Ours
    sets each group's ``lr`` from the backbone's stages and can keep frozen parameters."""
    import timm
    from timm.optim import param_groups_layer_decay

    net = timm.create_model("resnet10t", pretrained=False, num_classes=2)
    freeze_module(net.conv1)
    timm_groups = param_groups_layer_decay(net, layer_decay=0.5)
    assert len({g["lr_scale"] for g in timm_groups}) > 1  # timm computes the decay ...
    opt = torch.optim.SGD(timm_groups, lr=0.1)
    assert len({g["lr"] for g in opt.param_groups}) == 1  # ... which a torch optimizer never sees
    assert not any(p is q for g in timm_groups for p in g["params"] for q in net.conv1.parameters())  # frozen: gone
    plain = nn.Sequential(_block(), _block(), nn.Linear(2, 2))
    assert len({g["lr_scale"] for g in param_groups_layer_decay(plain, layer_decay=0.5)}) == 1

    stem, stage, head = plain
    freeze_module(stem)
    ours = layer_decay_param_groups(
        [stem.parameters(), stage.parameters()], head.parameters(), lr=0.1, layer_decay=0.5, include_frozen=True
    )
    opt = torch.optim.SGD(ours, lr=0.1)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.025, 0.05, 0.1])
    assert any(p is q for g in ours for p in g["params"] for q in stem.parameters())
