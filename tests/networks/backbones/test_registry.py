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
import subprocess
import sys

import pytest
import torch

from monai_transfer.networks.backbones import (
    BackboneCfg,
    build_backbone,
    get_backbone_cfg,
    list_backbones,
    register_backbone,
)
from monai_transfer.networks.backbones.torchvision import TORCHVISION_BACKBONES
from tests.utils import REPO_ROOT

ALL_FAMILY_CASES = list(TORCHVISION_BACKBONES) + ["tf_efficientnet_lite0", "tf_efficientnet_lite2", "timm:resnet18"]


def test_get_backbone_cfg_imports_neither_torchvision_nor_timm():
    code = (
        "import sys, json\n"
        "from monai_transfer.networks.backbones import get_backbone_cfg\n"
        "c = get_backbone_cfg('resnet50'); l = get_backbone_cfg('tf_efficientnet_lite0')\n"
        "print(json.dumps([list(c.mean), list(l.std), 'torchvision' in sys.modules, 'timm' in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    mean, std, tv_loaded, timm_loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert mean == [0.485, 0.456, 0.406] and std == [0.5, 0.5, 0.5]
    assert not tv_loaded and not timm_loaded


def test_register_duplicate_raises():
    cfg = get_backbone_cfg("resnet18")
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("resnet18", cfg)(lambda c: None)
    with pytest.raises(ValueError, match="differs"):
        register_backbone("other_name", cfg)
    with pytest.raises(ValueError, match="family"):
        BackboneCfg(name="x", family="keras", arch="x")


def test_list_and_unknown():
    names = list_backbones()
    for n in ("resnet18", "resnet34", "resnet50", "densenet121", "convnext_tiny", "tf_efficientnet_lite0"):
        assert n in names
    assert [f"efficientnet_b{i}" for i in range(4)] == [n for n in names if n.startswith("efficientnet_b")]
    with pytest.raises(ValueError, match="unknown backbone 'no_such_net'"):
        get_backbone_cfg("no_such_net")


@pytest.mark.parametrize("name", TORCHVISION_BACKBONES)
def test_torchvision_cfg_matches_torchvision_default_weights(name):
    from torchvision.models import get_weight

    cfg = get_backbone_cfg(name)
    w = get_weight(cfg.weights_source)
    t = w.transforms()
    assert cfg.family == "torchvision" and w.url.endswith(".pth")
    assert cfg.input_size == t.crop_size[0]
    assert cfg.interpolation == t.interpolation.value
    assert cfg.mean == tuple(t.mean) and cfg.std == tuple(t.std)
    assert cfg.crop_pct == pytest.approx(t.crop_size[0] / t.resize_size[0], abs=1e-4)
    assert json.loads(json.dumps(cfg.to_dict()))["name"] == name


@pytest.mark.parametrize("k,size", [(0, 224), (1, 240), (2, 260)])
def test_lite_cfg_matches_timm(k, size):
    from timm.models import get_pretrained_cfg

    cfg = get_backbone_cfg(f"tf_efficientnet_lite{k}")
    pc = get_pretrained_cfg(f"tf_efficientnet_lite{k}")
    assert cfg.family == "lite" and cfg.weights_source == "packaged"
    assert cfg.mean == cfg.std == (0.5, 0.5, 0.5) == tuple(pc.mean) == tuple(pc.std)
    assert cfg.input_size == size == pc.input_size[-1]
    assert cfg.interpolation == "bicubic" == pc.interpolation
    assert cfg.crop_pct == pc.crop_pct  # 0.875, 0.882, 0.890: TF's resize to size + 32


def test_timm_fallback_cfg():
    cfg = get_backbone_cfg("timm:resnet18")
    assert cfg.family == "timm" and cfg.arch == "resnet18" and cfg.first_conv == "conv1" and cfg.classifier == "fc"
    assert get_backbone_cfg("convnext_atto").family == "timm"  # unregistered plain name known to timm
    assert get_backbone_cfg("timm:vit_tiny_patch16_224").mean == (0.5, 0.5, 0.5)


@pytest.mark.parametrize("name", ALL_FAMILY_CASES)
def test_each_family_builds_forward_backward(name):
    torch.manual_seed(0)
    feats, cfg = build_backbone(name, weights=None)
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    z = feats(x)
    assert z.shape == (2, cfg.feature_dim)
    z.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert feats.forward_features(x).ndim == 4
    # every parameter belongs to exactly one stage, stem first
    stage_params = [id(p) for g in feats.stage_modules() for m in g for p in m.parameters()]
    assert len(stage_params) == len(set(stage_params)) == len(list(feats.parameters()))
    assert feats.first_conv_module().in_channels == 3
    assert feats.weights_info["source"] == "none"
