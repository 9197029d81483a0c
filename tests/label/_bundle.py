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
"""A tiny classification bundle (same ids as ``bundles/xray``) and the in-process reference inference."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from monai_transfer.utils.io import atomic_torch_save, atomic_write_json, load_state_dict_file

__all__ = ["CLASS_NAMES", "make_tiny_bundle", "reference_probabilities"]

CLASS_NAMES = ["normal", "pneumonia"]

_INFERENCE = {
    "imports": ["$import torch"],
    "bundle_root": ".",
    "device": "$torch.device('cpu')",
    "dataset_dir": "$@bundle_root + '/data'",
    "network_def": {
        "_target_": "monai.networks.nets.DenseNet",
        "spatial_dims": 2,
        "in_channels": 1,
        "out_channels": 2,
        "init_features": 4,
        "growth_rate": 4,
        "block_config": [2, 2],
        "bn_size": 2,
    },
    "network": "$@network_def.to(@device)",
    "preprocessing": {
        "_target_": "Compose",
        "transforms": [
            {"_target_": "LoadImaged", "keys": "image", "image_only": True, "ensure_channel_first": True},
            {"_target_": "Resized", "keys": "image", "spatial_size": [32, 32]},
            {"_target_": "ScaleIntensityd", "keys": "image"},
        ],
    },
    "postprocessing": {
        "_target_": "Compose",
        "transforms": [{"_target_": "Activationsd", "keys": "pred", "softmax": True}],
    },
    "inferer": {"_target_": "SimpleInferer"},
    "datalist": [],
    "dataset": {"_target_": "Dataset", "data": "@datalist", "transform": "@preprocessing"},
    "evaluator": {
        "_target_": "SupervisedEvaluator",
        "device": "@device",
        "val_data_loader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1},
        "network": "@network",
        "inferer": "@inferer",
        "postprocessing": "@postprocessing",
    },
}


def make_tiny_bundle(root: Path, name: str = "xray", seed: int = 0) -> Path:
    """Write ``root/<name>`` with inference.json, metadata.json and random ``models/model.pt``; return its path."""
    bundle = Path(root) / name
    (bundle / "configs").mkdir(parents=True, exist_ok=True)
    atomic_write_json(bundle / "configs" / "inference.json", _INFERENCE)
    metadata = {
        "version": "0.0.1",
        "monai_version": "1.6.1",
        "task": "binary chest X-ray classification (test bundle)",
        "description": "tiny random DenseNet for the MONAI Label tests",
        "network_data_format": {
            "inputs": {"image": {"type": "image", "num_channels": 1, "spatial_shape": [32, 32]}},
            "outputs": {
                "pred": {"type": "probabilities", "channel_def": {str(i): n for i, n in enumerate(CLASS_NAMES)}}
            },
        },
    }
    atomic_write_json(bundle / "configs" / "metadata.json", metadata)
    torch.manual_seed(seed)
    from monai.bundle import ConfigParser

    parser = ConfigParser(dict(_INFERENCE))
    net = parser.get_parsed_content("network_def")
    with torch.no_grad():  # non-trivial outputs: random weights give near-uniform scores otherwise
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    atomic_torch_save(net.state_dict(), bundle / "models" / "model.pt")
    return bundle


def reference_probabilities(bundle: Path, image_path: str) -> list[float]:
    """Run the bundle's ``inference.json`` (preprocessing, network + model.pt, inferer, postprocessing) on one image."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(Path(bundle) / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    parser["device"] = "$torch.device('cpu')"
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(load_state_dict_file(Path(bundle) / "models" / "model.pt"))
    net.eval()
    data: dict[str, Any] = parser.get_parsed_content("preprocessing")({"image": image_path})
    inferer = parser.get_parsed_content("inferer")
    with torch.no_grad():
        data["pred"] = inferer(data["image"][None].float(), net)[0]
    out = parser.get_parsed_content("postprocessing")(data)
    return [float(v) for v in torch.as_tensor(out["pred"]).reshape(-1).tolist()]


if __name__ == "__main__":  # pragma: no cover - debugging aid
    print(json.dumps(_INFERENCE, indent=2))
