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
"""Fine-tuning helpers: freezing modules (BatchNorm statistics included) and discriminative-LR parameter groups."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["freeze_module", "unfreeze_module", "set_bn_eval", "layer_decay_param_groups", "count_trainable"]


def set_bn_eval(module: nn.Module) -> int:
    """Put every BatchNorm layer inside ``module`` in eval mode (running statistics frozen); returns how many."""
    n = 0
    for m in module.modules():
        if isinstance(m, _BatchNorm):
            m.eval()
            n += 1
    return n


def freeze_module(module: nn.Module, freeze_bn_stats: bool = True) -> nn.Module:
    """Stop gradients for every parameter of ``module``; optionally freeze BatchNorm running statistics too.

    ``module.train()`` switches BatchNorm back to training mode; models that must keep statistics frozen re-apply
    :func:`set_bn_eval` in their ``train()`` (as :class:`~monai_transfer.networks.nets.Pretrained2DNet` does).
    """
    for p in module.parameters():
        p.requires_grad_(False)
    if freeze_bn_stats:
        set_bn_eval(module)
    return module


def unfreeze_module(module: nn.Module) -> nn.Module:
    """Make every parameter of ``module`` trainable again (BatchNorm mode follows the next ``train()`` call)."""
    for p in module.parameters():
        p.requires_grad_(True)
    return module


def count_trainable(module: nn.Module) -> int:
    """Number of trainable scalar parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def layer_decay_param_groups(
    stages: Sequence[Iterable[nn.Parameter]],
    head: Iterable[nn.Parameter],
    lr: float,
    layer_decay: float = 1.0,
    head_lr_mult: float = 1.0,
    include_frozen: bool = False,
    **group_kwargs: Any,
) -> list[dict[str, Any]]:
    """Optimizer parameter groups with discriminative learning rates.

    Stage ``i`` (0 = stem) of ``n`` gets ``lr * layer_decay ** (n - i)``, the head ``lr * head_lr_mult``. Frozen
    parameters (``requires_grad=False``) are left out unless ``include_frozen`` (useful when a handler unfreezes them
    later: they get no gradient, so the optimizer leaves them unchanged); empty groups are left out; a parameter
    listed twice is kept in its first group only.

    timm's ``timm.optim.param_groups_layer_decay`` is not used: its groups carry an ``lr_scale`` that only timm's
    schedulers apply (a torch optimizer with the bundles' MONAI/torch scheduler trains every layer at one rate), it
    drops frozen parameters (a later unfreeze could not train them) and it makes one single layer of a model without
    timm's ``group_matcher`` such as a torchvision backbone (``tests/networks/test_finetune.py::
    test_timm_layer_decay_groups_fall_short_with_torch_optimizers_and_frozen_stages``).

    Args:
        stages: parameters of each stage, stem first.
        head: parameters of the classification head.
        lr: base learning rate.
        layer_decay: per-stage multiplicative decay (``1.0``: same LR everywhere).
        head_lr_mult: multiplier of the head's LR.
        include_frozen: keep frozen parameters in their groups.
        group_kwargs: extra keys copied into every group (e.g. ``weight_decay``).

    Raises:
        ValueError: non-positive ``lr``, ``layer_decay`` or ``head_lr_mult``.
    """
    for arg, v in (("lr", lr), ("layer_decay", layer_decay), ("head_lr_mult", head_lr_mult)):
        if not v > 0:
            raise ValueError(f"{arg} must be > 0, got {v}.")
    n = len(stages)
    seen: set[int] = set()
    groups: list[dict[str, Any]] = []

    def _add(name: str, params: Iterable[nn.Parameter], group_lr: float) -> None:
        ps = [p for p in params if (include_frozen or p.requires_grad) and id(p) not in seen]
        seen.update(id(p) for p in ps)
        if ps:
            groups.append({"params": ps, "lr": group_lr, "name": name, **group_kwargs})

    for i, params in enumerate(stages):
        _add(f"stage{i}", params, lr * layer_decay ** (n - i))
    _add("head", head, lr * head_lr_mult)
    return groups
