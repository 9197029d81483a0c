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
"""One configuration per set of weights (``WeightsCfg``): preprocessing and meta read from torchvision's weights enum,
timm's ``pretrained_cfg`` or the packaged EfficientNet-Lite table, and carried by the built backbone."""

from __future__ import annotations

import json
import math

import pytest
import torch

from monai_transfer.networks.backbones import (
    OFFLINE_ENV,
    WeightsCfg,
    build_backbone,
    build_imagenet_model,
    get_backbone_cfg,
    get_weights_cfg,
)
from monai_transfer.networks.backbones.lite import PACKAGED_WEIGHTS


@pytest.mark.parametrize("tag", ["IMAGENET1K_V1", "IMAGENET1K_V2"])
def test_resnet50_weights_cfg_follows_torchvision_enum(tag):
    from torchvision.models import ResNet50_Weights

    w = ResNet50_Weights[tag]
    t = w.transforms()
    c = get_weights_cfg("resnet50", f"ResNet50_Weights.{tag}")
    assert c.tag == f"ResNet50_Weights.{tag}" and get_weights_cfg("resnet50", tag) == c
    assert (c.input_size, c.resize_size) == (t.crop_size[0], t.resize_size[0])
    assert c.mean == tuple(t.mean) and c.std == tuple(t.std) and c.interpolation == t.interpolation.value
    assert c.crop_pct == pytest.approx(t.crop_size[0] / t.resize_size[0], abs=1e-4)
    assert c.num_classes == len(w.meta["categories"]) and c.source == w.url
    assert c.file_name in w.url and w.url.endswith(f"-{c.sha256}.pth")
    assert json.loads(json.dumps(c.to_dict()))["tag"] == c.tag


def test_resnet50_v1_and_v2_differ_in_resize_only():
    v1, v2 = get_weights_cfg("resnet50", "IMAGENET1K_V1"), get_weights_cfg("resnet50", "IMAGENET1K_V2")
    assert v1.resize_size != v2.resize_size and v1.input_size == v2.input_size
    assert get_weights_cfg("resnet50", "imagenet") == v2 == get_weights_cfg("resnet50", "DEFAULT")
    # the data-only default (no torchvision import) agrees with the enum's default
    default = get_weights_cfg("resnet50")
    assert default.tag == "none"
    assert (default.mean, default.std, default.input_size, default.resize_size, default.interpolation) == (
        v2.mean,
        v2.std,
        v2.input_size,
        v2.resize_size,
        v2.interpolation,
    )


@pytest.mark.parametrize("k", [0, 1, 2])
def test_packaged_lite_weights_cfg_matches_timm(k):
    from timm.models import get_pretrained_cfg

    c = get_weights_cfg(f"tf_efficientnet_lite{k}", "packaged")
    pc = get_pretrained_cfg(f"tf_efficientnet_lite{k}")
    assert c.tag == "packaged" and c == get_weights_cfg(f"tf_efficientnet_lite{k}", "imagenet")
    assert c.mean == tuple(pc.mean) and c.std == tuple(pc.std) and c.interpolation == pc.interpolation
    assert c.input_size == pc.input_size[-1] and c.crop_pct == pc.crop_pct
    assert c.resize_size == math.floor(c.input_size / pc.crop_pct)
    package, file_name, sha = PACKAGED_WEIGHTS[k]
    assert c.file_name == file_name and file_name.endswith(f"-{sha}.pth") and c.sha256 == sha
    assert package in c.source and c.license.startswith("Apache-2.0") and c.num_classes == 1000


def test_timm_weights_cfg_follows_pretrained_cfg():
    from timm.models import get_pretrained_cfg

    c = get_weights_cfg("timm:resnet18", "timm:a1_in1k")
    pc = get_pretrained_cfg("resnet18.a1_in1k")
    assert c.tag == "resnet18.a1_in1k" and c.crop_pct == pc.crop_pct and c.interpolation == pc.interpolation
    assert c.resize_size == math.floor(224 / pc.crop_pct) and "timm/resnet18.a1_in1k" in c.source
    tv = get_weights_cfg("timm:resnet18", "tv_in1k")  # another tag, other preprocessing
    assert tv.tag == "resnet18.tv_in1k" and tv.crop_pct == get_pretrained_cfg("resnet18.tv_in1k").crop_pct
    lite_hub = get_weights_cfg("tf_efficientnet_lite0", "timm")  # the lite family hands timm tags to timm
    assert lite_hub.tag.startswith("tf_efficientnet_lite0.") and lite_hub.mean == (0.5, 0.5, 0.5)


def test_weights_cfg_errors_and_files(tmp_path):
    with pytest.raises(ValueError, match=r"IMAGENET1K_V9.*ResNet50_Weights\.IMAGENET1K_V1"):
        get_weights_cfg("resnet50", "IMAGENET1K_V9")
    with pytest.raises(ValueError, match="packaged"):
        get_weights_cfg("resnet18", "packaged")
    with pytest.raises(ValueError, match="timm"):
        get_weights_cfg("resnet18", "timm:a1_in1k")
    f = get_weights_cfg("densenet121", tmp_path / "not_there_yet.pth")  # preprocessing needs no file
    assert f.tag == "file" and f.source == str(tmp_path / "not_there_yet.pth")
    assert f.mean == get_backbone_cfg("densenet121").mean
    with pytest.raises(ValueError, match="std"):
        WeightsCfg(backbone="x", tag="t", mean=(0.5,), std=(0.0,))


def test_built_backbone_carries_the_loaded_weights_preprocessing(tmp_path, monkeypatch):
    """resnet50 with IMAGENET1K_V1 from the hub cache: the cfg says resize 256 (V1), not the default V2's 232."""
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        monkeypatch.setenv(OFFLINE_ENV, "1")
        twin, default_cfg, info = build_imagenet_model("resnet50", weights=None)
        assert info["preprocessing"]["tag"] == "none" and default_cfg.crop_pct == pytest.approx(224 / 232, abs=1e-4)
        (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
        torch.save(twin.state_dict(), tmp_path / "hub" / "checkpoints" / "resnet50-0676ba61.pth")
        feats, cfg = build_backbone("resnet50", weights="ResNet50_Weights.IMAGENET1K_V1")
    finally:
        torch.hub.set_dir(old)
    pre = feats.weights_info["preprocessing"]
    assert pre["tag"] == "ResNet50_Weights.IMAGENET1K_V1" and pre["resize_size"] == 256
    assert cfg.crop_pct == 0.875 and cfg.input_size == 224 and cfg.feature_dim == 2048
    assert torch.equal(feats.body.conv1.weight, twin.conv1.weight)
    assert json.loads(json.dumps(feats.weights_info))["preprocessing"]["sha256"] == "0676ba61"
