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
"""Grey -> RGB in the bundles (issue #17): one grey image gives the same network input, bit for bit, as the
replicate-then-normalise formula the bundles were trained with; the checkpoints' preprocessing hash is unchanged.

The reference below is written with plain torch ops (``repeat`` then ``(x - mean) / std`` per channel), not with the
package's grey -> RGB code, so a change of owner (``BackboneNormalize(repeat_channels=True)`` delegating to
``grey_to_rgb``) cannot move the expected values with it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.utils import REPO_ROOT

XRAY = REPO_ROOT / "bundles" / "xray"
CT = REPO_ROOT / "bundles" / "ct_slices"
#: ``model_spec#preprocessing_sha256`` of the bundles as the shipped checkpoints were trained (in_channels 3, grey
#: repeated to RGB before the per-channel normalisation); a change here makes every existing ``models/model.json``
#: disagree with its config.
XRAY_PREPROCESSING_SHA256 = "0bcf271a92c563c30eddc183383a82644a89559928b020a325e80a4d5d88dd5c"
#: ct_slices 0.2.2 changed it on purpose (slice_offsets [-2, 0, 2]): a 0.2.1 checkpoint's model.json records the
#: [-1, 0, 1] slicing and is refused by the 0.2.2 configs (its own run folder carries its own configs)
CT_PREPROCESSING_SHA256 = "28eafd612bed7807a210475d38fd7f500ce25492691b742252a355f23b8dff11"
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
#: the transforms that own grey -> RGB and normalisation; the reference takes over from the first of them
_CHANNEL_STEPS = ("BackboneNormalized", "GreyToRGBd")


def _parser(bundle: Path, config: str = "inference.json", **ids):
    from monai.bundle import ConfigParser

    p = ConfigParser()
    p.read_config(str(bundle / "configs" / config))
    p["bundle_root"] = str(bundle)
    for k, v in ids.items():
        p[k] = v
    p.get_parsed_content("imports")
    return p


def _split(compose) -> tuple[list, list]:
    """The flattened transforms of ``compose`` before the first grey -> RGB / normalisation step, and from it on."""
    from monai.transforms import Compose

    flat = compose.flatten().transforms if isinstance(compose, Compose) else list(compose)
    i = next(i for i, t in enumerate(flat) if type(t).__name__ in _CHANNEL_STEPS)
    return list(flat[:i]), list(flat[i:])


def _apply(transforms: list, data):
    from monai.transforms import apply_transform

    for t in transforms:
        data = apply_transform(t, data, map_items=True)
    return data


def _replicate_then_normalise(x: torch.Tensor, mean, std) -> torch.Tensor:
    """The bundles' order: grey copied to every channel, then ``(x[c] - mean[c]) / std[c]`` (float32)."""
    t = x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)
    t = t.float()
    if t.shape[0] == 1:
        t = t.repeat(len(mean), *([1] * (t.ndim - 1)))
    shape = (-1,) + (1,) * (t.ndim - 1)
    return (t - torch.tensor(mean, dtype=t.dtype).reshape(shape)) / torch.tensor(std, dtype=t.dtype).reshape(shape)


def _normalise_then_replicate(x: torch.Tensor, mean, std) -> torch.Tensor:
    """The other order (what ``in_channels=1, channel_strategy="repeat"`` would see): one grey channel normalised
    with the mean of the per-channel statistics, then copied to every channel."""
    t = (x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)).float()
    return ((t - float(np.mean(mean))) / float(np.mean(std))).repeat(len(mean), *([1] * (t.ndim - 1)))


@pytest.fixture(scope="module")
def grey_png(tmp_path_factory) -> str:
    from PIL import Image

    yy, xx = np.mgrid[0:72, 0:60]
    img = (xx * 3 + yy * 2 + np.random.default_rng(0).integers(0, 60, (72, 60))) % 256
    f = tmp_path_factory.mktemp("grey") / "grey.png"
    Image.fromarray(img.astype(np.uint8)).save(f)  # mode "L": one channel
    return str(f)


@pytest.fixture(scope="module")
def grey_volume(tmp_path_factory) -> str:
    import nibabel as nib

    vol = np.random.default_rng(1).integers(0, 255, (40, 36, 30)).astype(np.uint8)
    f = tmp_path_factory.mktemp("grey") / "vol.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(f))
    return str(f)


def _stats(backbone: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    from monai_transfer.networks.backbones import get_weights_cfg

    cfg = get_weights_cfg(backbone, None)
    return tuple(cfg.mean), tuple(cfg.std)


@pytest.mark.parametrize("config", ["inference.json", "train.json"])
@pytest.mark.parametrize("backbone", ["tf_efficientnet_lite0", "resnet50"])
def test_xray_grey_image_is_replicated_then_normalised(grey_png, config, backbone):
    """xray: the preprocessing of one grey PNG equals replicate-then-normalise exactly (torch.equal), with the
    shipped backbone (shared 0.5/0.5 stats) and with ImageNet per-channel stats, where the order matters."""
    p = _parser(XRAY, config, backbone=backbone)
    pre = p.get_parsed_content("preprocessing" if config == "inference.json" else "validate#preprocessing")
    before, _ = _split(pre)
    grey = _apply(before, {"image": grey_png})["image"]
    assert grey.shape == (1, 64, 64)  # the loaded image really is grey
    out = pre({"image": grey_png})["image"]
    mean, std = _stats(backbone)
    assert out.shape == (3, 64, 64) and out.dtype == torch.float32
    assert torch.equal(out.as_tensor(), _replicate_then_normalise(grey, mean, std))
    other = _normalise_then_replicate(grey, mean, std)
    if len(set(mean)) == 1 and len(set(std)) == 1:
        assert torch.equal(out.as_tensor(), other)  # shared stats: both orders agree (the shipped backbone)
    else:
        assert not torch.allclose(out.as_tensor(), other, atol=1e-3)  # per-channel stats: the order matters
        assert not torch.equal(out[0], out[1])  # each copy normalised with its own channel's statistics


@pytest.mark.parametrize("offsets", [None, [0]])
@pytest.mark.parametrize("backbone", ["tf_efficientnet_lite0", "resnet50"])
def test_ct_slices_grey_volume_is_replicated_then_normalised(grey_volume, offsets, backbone):
    """ct_slices: every slice equals replicate-then-normalise exactly; 2.5D (3 offsets) is normalised as it is,
    single-slice (``slice_offsets=[0]``) grey slices are copied to RGB first."""
    ids = {"backbone": backbone} if offsets is None else {"backbone": backbone, "slice_offsets": offsets}
    pre = _parser(CT, **ids).get_parsed_content("preprocessing")
    before, _ = _split(pre)
    slices = _apply(before, {"image": grey_volume})
    out = pre({"image": grey_volume})
    assert len(out) == len(slices) > 1
    mean, std = _stats(backbone)
    for s, o in zip(slices, out):
        assert s["image"].shape[0] == (3 if offsets is None else 1)
        assert o["image"].shape == (3, 64, 64)
        assert torch.equal(o["image"].as_tensor(), _replicate_then_normalise(s["image"], mean, std))


@pytest.mark.parametrize(
    "bundle,expected", [(XRAY, XRAY_PREPROCESSING_SHA256), (CT, CT_PREPROCESSING_SHA256)], ids=["xray", "ct_slices"]
)
def test_checkpoint_spec_unchanged(bundle, expected):
    """What existing ``models/model.json`` records hold: 3 input channels, grey repeated, the same hash."""
    for config in ("inference.json", "train.json"):
        spec = _parser(bundle, config).get_parsed_content("model_spec")
        assert spec["in_channels"] == 3 and spec["normalization"]["repeat_channels"] is True
        assert spec["preprocessing_sha256"] == expected, f"{bundle.name}/configs/{config}"


def test_network_repeat_equals_three_channels_on_replicated_input(grey_png):
    """A checkpoint of the bundles' ``in_channels=3`` member loads into ``in_channels=1, channel_strategy="repeat"``
    and gives the same logits (torch.equal) for the grey image replicated by hand."""
    from monai_transfer.networks.nets import Pretrained2DNet

    torch.manual_seed(0)
    rgb_net = _parser(XRAY).get_parsed_content("member_def").eval()
    backbone = _parser(XRAY).get_parsed_content("backbone")
    kw = {"backbone": backbone, "weights": "none", "num_classes": 2, "dropout": 0.2}
    grey_net = Pretrained2DNet(in_channels=1, channel_strategy="repeat", **kw).eval()
    grey_net.load_state_dict(rgb_net.state_dict())  # strict: same parameters
    before, _ = _split(_parser(XRAY).get_parsed_content("preprocessing"))
    grey = _apply(before, {"image": grey_png})["image"].as_tensor()
    x = ((grey - 0.5) / 0.5)[None]  # shared stats: normalising grey once == normalising each copy
    with torch.no_grad():
        a = grey_net(x)
        b = rgb_net(x.repeat(1, 3, 1, 1))
        c = rgb_net(_parser(XRAY).get_parsed_content("preprocessing")({"image": grey_png})["image"].as_tensor()[None])
    assert torch.equal(a, b) and torch.equal(b, c)
