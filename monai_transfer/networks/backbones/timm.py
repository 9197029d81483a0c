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

timm is imported (through :mod:`monai_transfer.utils.deps`) only when a timm name is looked up or built. Stages come
from the model's own ``group_matcher(coarse=True)`` (the grouping timm uses for layer-wise LR decay). The family's
weights loader reads ``"timm"``, ``"timm:<tag>"`` or a bare tag (``"a1_in1k"``); :func:`timm_weights_cfg` gives
the preprocessing of those weights from their ``pretrained_cfg``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import nn

from monai_transfer.utils import deps

from ._config import OFFLINE_ENV, TIMM_PREFIX, BackboneCfg, WeightsCfg, WeightsUnavailableError, is_offline
from ._features import BackboneFeatures
from ._registry import register_family

__all__ = [
    "TimmFeatures",
    "timm_cfg",
    "timm_weights_cfg",
    "build_timm_model",
    "create_pretrained_timm",
    "resolve_timm_weights",
    "load_timm_weights",
    "timm_to_features",
]


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
    if not deps.timm.is_model(model_name):
        return None
    pc = deps.timm_models.get_pretrained_cfg(model_name, allow_unregistered=True)
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
    arch, _ = _split_tag(cfg.arch)
    return deps.timm.create_model(arch, pretrained=False)


def _pretrained_name(cfg: BackboneCfg, tag: str | None) -> tuple[str, Any]:
    """``("<arch>.<tag>", pretrained_cfg)`` of ``cfg`` with ``tag`` (default: the tag in ``cfg.arch``, else timm's).

    Raises:
        ValueError: timm has no such pretrained weights.
    """
    arch, own_tag = _split_tag(cfg.arch)
    name = f"{arch}.{tag or own_tag}" if (tag or own_tag) else arch
    pc = deps.timm_models.get_pretrained_cfg(name, allow_unregistered=False) if deps.timm.is_model(name) else None
    if pc is None:
        raise ValueError(f"timm has no pretrained weights {name!r} (backbone {cfg.name!r}, tag {tag!r}).")
    return (f"{arch}.{pc.tag}" if pc.tag else name), pc


def timm_weights_cfg(cfg: BackboneCfg, tag: str | None = None) -> WeightsCfg:
    """:class:`WeightsCfg` of timm's pretrained weights ``tag`` of ``cfg`` (from their ``pretrained_cfg``).

    Raises:
        ValueError: timm has no such pretrained weights.
    """
    name, pc = _pretrained_name(cfg, tag)
    size, crop_pct = int(pc.input_size[-1]), float(pc.crop_pct or 0.875)
    return WeightsCfg(
        backbone=cfg.name,
        tag=name,
        mean=tuple(pc.mean),
        std=tuple(pc.std),
        input_size=size,
        resize_size=int(math.floor(size / crop_pct)),  # as timm's eval transform (transforms_factory)
        crop_pct=crop_pct,
        interpolation=str(pc.interpolation or "bicubic"),
        license=str(pc.license or cfg.license),
        source=(f"https://huggingface.co/{pc.hf_hub_id}" if pc.hf_hub_id else pc.url) or None,
        num_classes=int(pc.num_classes) if pc.num_classes else None,
        file_name=pc.hf_hub_filename or None,
    )


def resolve_timm_weights(weights: str, cfg: BackboneCfg) -> tuple[str, str | None]:
    """``("timm", tag)`` for ``"timm"`` (timm's default tag), ``"timm:<tag>"`` or a bare tag (``"in1k"``).

    Raises:
        ValueError: ``"packaged"`` for a backbone that is not an EfficientNet-Lite one.
    """
    low = weights.lower()
    if low == "packaged":
        raise ValueError(
            f"weights='packaged' exists only for EfficientNet-Lite backbones, not {cfg.name!r} "
            f"(family {cfg.family!r}); use weights='timm' or a local file."
        )
    if low == "timm" or low.startswith(TIMM_PREFIX):
        tag = weights.split(":", 1)[1] if ":" in weights else None
        return "timm", tag or None
    return "timm", weights  # a timm pretrained tag such as "in1k" or "ra_in1k"


def load_timm_weights(cfg: BackboneCfg, builder, kind: str, tag: str | None, sha256: str | None):
    """The family's ``load_weights`` hook: timm's pretrained weights ``tag`` (see :func:`create_pretrained_timm`).

    Raises:
        ValueError: ``sha256`` given (timm loads from its hub, not from a local file).
        WeightsUnavailableError: see :func:`create_pretrained_timm`.
    """
    if sha256:
        raise ValueError(
            f"sha256 checks need a local file; download the timm weights and pass weights='/path/model.safetensors'"
            f" (got timm weights {tag!r} for {cfg.name!r}, sha256={sha256!r})."
        )
    model, url, lic, name = create_pretrained_timm(cfg, tag)
    return model, {"url": url, "license": lic, "resolved": name, "classifier_loaded": True}


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
    name, pc = _pretrained_name(cfg, tag)
    where = f"https://huggingface.co/{pc.hf_hub_id}" if pc.hf_hub_id else (pc.url or "the timm model page")
    hint = (
        f"download the weights of {name} (model.safetensors from {where}) on a machine with internet access and "
        f"pass weights='/path/to/model.safetensors', or use weights='packaged' for EfficientNet-Lite."
    )
    if is_offline():
        raise WeightsUnavailableError(f"{OFFLINE_ENV} is set, not downloading timm weights: {hint}")
    try:
        model = deps.timm.create_model(name, pretrained=True)
    except Exception as e:
        raise WeightsUnavailableError(f"could not fetch timm weights {name} ({type(e).__name__}: {e}): {hint}") from e
    return model, (pc.hf_hub_id or pc.url), str(pc.license or cfg.license), name


def _timm_stage_names(model: nn.Module, classifier: str) -> list[list[str]]:
    cls_names = [c for c in classifier.split(",") if c]
    groups = deps.timm_models.group_modules(model, model.group_matcher(coarse=True))
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


def _lookup_timm_cfg(name: str) -> BackboneCfg | None:
    return timm_cfg(name[len(TIMM_PREFIX) :] if name.startswith(TIMM_PREFIX) else name)


register_family(
    "timm",
    to_features=timm_to_features,
    resolve_weights=resolve_timm_weights,
    weights_cfg=lambda cfg, kind, tag: timm_weights_cfg(cfg, tag),
    load_weights=load_timm_weights,
    lookup_cfg=_lookup_timm_cfg,
    default_builder=build_timm_model,
)
