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
"""Bottom layer of the backbone package: :class:`BackboneFeatures`, the base class of every feature extractor.

Imports torch only (no other module of this package, no torchvision or timm).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["BackboneFeatures"]


class BackboneFeatures(nn.Module):
    """Base class of the feature extractors :func:`build_backbone` returns.

    ``forward(x)`` gives the pooled feature vector ``(B, feature_dim)`` computed the way the pretrained network pools
    (global average pooling for every CNN here; ConvNeXt's LayerNorm and MobileNetV3's pre-logits layer included, so
    no pretrained layer is lost). ``forward_features(x)`` gives the last feature map ``(B, C, h, w)`` (Grad-CAM,
    dense heads). ``self.body`` is the family's network; stage names are relative to it.
    """

    # plain-Python bookkeeping that TorchScript should not try to type
    __jit_ignored_attributes__ = ["weights_info", "stage_names"]

    def __init__(self, body: nn.Module, feature_dim: int, stage_names: list[list[str]], first_conv: str):
        super().__init__()
        self.body = body
        self.feature_dim = int(feature_dim)
        self.stage_names = [list(s) for s in stage_names]
        self.first_conv = first_conv
        self.weights_info: dict[str, Any] = {}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def first_conv_module(self) -> nn.Conv2d:
        """The stem convolution (``cfg.first_conv`` inside ``self.body``)."""
        m = self.body.get_submodule(self.first_conv)
        if not isinstance(m, nn.Conv2d):
            raise TypeError(f"first_conv '{self.first_conv}' is a {type(m).__name__}, expected a Conv2d.")
        return m

    def stage_modules(self) -> list[list[nn.Module]]:
        """Modules of each stage (stem first). Parameters outside every stage (e.g. a pooling-time norm) are added to
        the last stage, except direct parameters of ``self.body`` itself (position embeddings, class tokens), which go
        to the stem."""
        groups: list[list[nn.Module]] = [[self.body.get_submodule(n) for n in names] for names in self.stage_names]
        if not groups:
            raise RuntimeError("this backbone has no stage layout (stage_names is empty).")
        covered = {id(p) for g in groups for m in g for p in m.parameters()}
        owners = [m for m in self.children() if m is not self.body] + list(self.body.children())
        for owner in owners:  # e.g. ConvNeXt's pooling LayerNorm, a final norm before the classifier
            params = list(owner.parameters())
            loose = [p for p in params if id(p) not in covered]
            if loose:
                groups[-1].append(owner if len(loose) == len(params) else _ParamHolder(loose))
                covered.update(id(p) for p in loose)
        direct = [p for p in self.body.parameters(recurse=False) if id(p) not in covered]
        if direct:
            groups[0].append(_ParamHolder(direct))
        return groups

    def stages(self) -> list[nn.Module]:
        """Ordered stage modules, stem first; a stage made of several modules is returned as an ``nn.ModuleList``."""
        return [g[0] if len(g) == 1 else nn.ModuleList(g) for g in self.stage_modules()]


class _ParamHolder(nn.Module):
    """Groups loose parameters (e.g. ViT ``pos_embed``) so a stage can still be handled as a module."""

    def __init__(self, params: list[nn.Parameter]):
        super().__init__()
        for i, p in enumerate(params):
            self.register_parameter(f"p{i}", p)
